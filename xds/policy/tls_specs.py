"""Edge TLS in Envoy's terms but free of protobuf (issue 9 item 7): part of the DesiredState contract.

Kept apart from desired.py, which imports these, so the TLS specs of each part of issue 9 stay in their own
modules. The PEM bytes are the control plane's checked copy of the files the policy names
(xds/sources/tls_files.py); private keys never reach a spec of this module, they travel in SDS secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UpstreamTlsSpec:
    """Envoy originates TLS to a cluster's endpoints: an UpstreamTlsContext on the cluster."""

    ca_file: str  # where the bundle came from; not sent, only for messages
    ca_pem: bytes = field(repr=False)  # sent inline as the validation context's trusted_ca
    sni: str = ""  # "": Envoy sends no SNI
    # The peer's certificate must carry one of these (DNS names, or URIs when they contain "://"); (): any
    # certificate the CA signed.
    subject_alt_names: tuple[str, ...] = ()


# The SDS name of a listener certificate: it names the file, never its content, and is the same for every
# listener and node group serving that file (docs/security.md, "Edge TLS").
EDGE_SECRET_PREFIX = "xds-edge-cert:"


def edge_secret_name(cert_file: str) -> str:
    return EDGE_SECRET_PREFIX + cert_file


@dataclass(frozen=True, slots=True)
class IngressChainSpec:
    """One filter chain of a TLS listener: the certificate (an SDS secret) served for `server_names`."""

    secret: str
    server_names: tuple[str, ...] = ()  # (): every SNI no other chain claims, and none


@dataclass(frozen=True, slots=True)
class IngressTlsSpec:
    chains: tuple[IngressChainSpec, ...]

    def secret_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.secret for c in self.chains))
