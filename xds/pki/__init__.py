"""The workload certificate authority (issue 9, item 4; docs/security.md "Workload certificates (SDS)").

`ca.py` loads or creates the CA and issues SPIFFE X.509 certificates; `workload.py` keeps each node group's
current certificate and decides when it rotates. Every X.509 operation uses the `cryptography` package.
"""
