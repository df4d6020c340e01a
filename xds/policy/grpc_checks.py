"""What proxyless gRPC clients cannot do, refused when a policy is loaded (issue 11 item 3).

gRPC clients NACK a Cluster whose `lb_policy` they do not implement, which would leave every gRPC client of
the node group without that cluster. They implement ROUND_ROBIN and RING_HASH (gRFC A42) everywhere and
LEAST_REQUEST (gRFC A48) in Go and Java only, not in grpcio and the other C-core languages; none
implements RANDOM or MAGLEV. Envoy's client-side weighted round robin is a typed policy gRPC implements
(gRFC A58), so it is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from xds.policy.desired import LbPolicy, ListenerKind
from xds.policy.schema import ListenerPolicy, ServicePolicy

GRPC_UNSUPPORTED_LB: Final = {
    LbPolicy.RANDOM: "no gRPC client implements it",
    LbPolicy.MAGLEV: "no gRPC client implements it",
    LbPolicy.LEAST_REQUEST: "grpcio (Python, C-core) does not implement it",
}


@dataclass(frozen=True, slots=True)
class GrpcLbProblem:
    service: str
    listener: str
    message: str


def grpc_lb_problems(services: Sequence[ServicePolicy], listeners: Sequence[ListenerPolicy]
                     ) -> Iterator[GrpcLbProblem]:
    """One problem per service with an `lb_policy` gRPC clients reject that a gRPC listener routes to."""
    policies = {service.name: service.lb_policy for service in services}
    reported: set[str] = set()
    for listener in listeners:
        if listener.kind is not ListenerKind.GRPC:
            continue
        for route in listener.routes:
            for backend in route.backends:
                policy = policies.get(backend.service)
                if policy is None or policy not in GRPC_UNSUPPORTED_LB or backend.service in reported:
                    continue
                reported.add(backend.service)
                yield GrpcLbProblem(backend.service, listener.name, (
                    f"lb_policy {policy.value!r} cannot be used by a service that grpc listener "
                    f"{listener.name!r} routes to: {GRPC_UNSUPPORTED_LB[policy]} and gRPC clients would "
                    "reject the cluster; use round_robin or ring_hash"))
