"""Benchmarks of the control plane, run as modules: `python -m benchmarks.snapshot_build` (in-process cost of
building and serving a snapshot) and `python -m benchmarks.convergence` (catalog edit -> real Envoy applied).

They are measurement tools, not tests: see benchmarks/README.md for what each number means and for results.
"""
