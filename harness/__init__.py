"""Process harness for end-to-end tests and the live demo: real Envoy, real upstreams, real load.

Nothing here is imported by the control plane itself; it drives the control plane from outside, through its
command line and admin endpoints, exactly as an operator would.
"""

from harness.controlplane import ControlPlaneProcess, bootstrap_for
from harness.envoy import AdminError, EnvoyProcess, HostStatus, envoy_binary, unique_base_id
from harness.grpc_health import GrpcHealthServer
from harness.load import LoadResult, Sample, SteadyLoad, run_requests
from harness.ports import LOOPBACK, PortInUseError, free_port, free_ports
from harness.processes import ManagedProcess, ProcessExitedError, wait_until
from harness.upstream import HEALTH_PATH, UPSTREAM_HEADER, UpstreamPool, UpstreamServer

__all__ = [
    "HEALTH_PATH",
    "LOOPBACK",
    "UPSTREAM_HEADER",
    "AdminError",
    "ControlPlaneProcess",
    "EnvoyProcess",
    "GrpcHealthServer",
    "HostStatus",
    "LoadResult",
    "ManagedProcess",
    "PortInUseError",
    "ProcessExitedError",
    "Sample",
    "SteadyLoad",
    "UpstreamPool",
    "UpstreamServer",
    "bootstrap_for",
    "envoy_binary",
    "free_port",
    "free_ports",
    "run_requests",
    "unique_base_id",
    "wait_until",
]
