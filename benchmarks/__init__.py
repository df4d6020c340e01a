"""Benchmarks of the control plane, run as modules: `python -m benchmarks.snapshot_build` (in-process cost of
building and serving a snapshot), `python -m benchmarks.convergence` (catalog edit -> real Envoy applied),
`python -m benchmarks.soak` (RSS under registry churn, with its slope) and `python -m
benchmarks.hostile_clients` (what misbehaving clients can make the server hold).

They are measurement tools, not tests: see benchmarks/README.md for what each number means and for results.
"""
