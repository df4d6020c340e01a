"""What proxyless gRPC clients cannot do, refused when a policy is loaded (issue 11 item 3).

gRPC clients NACK a Cluster whose `lb_policy` they do not implement, which would leave every gRPC client of
the node group without that cluster. They implement ROUND_ROBIN and RING_HASH (gRFC A42) everywhere and
LEAST_REQUEST (gRFC A48) in Go and Java only, not in grpcio and the other C-core languages; none
implements RANDOM or MAGLEV. Envoy's client-side weighted round robin is a typed policy gRPC implements
(gRFC A58), so it is allowed.

A gRPC client retries only on gRPC status names (gRFC A44) and ignores the HTTP conditions, so a gRPC
listener's `retries.retry_on` must name statuses only: HTTP words there would silently retry nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from xds.policy.desired import LbPolicy, ListenerKind
from xds.policy.schema import ListenerPolicy, RetryPolicy, ServicePolicy

GRPC_UNSUPPORTED_LB: Final = {
    LbPolicy.RANDOM: "no gRPC client implements it",
    LbPolicy.MAGLEV: "no gRPC client implements it",
    LbPolicy.LEAST_REQUEST: "grpcio (Python, C-core) does not implement it",
}


# The retry conditions that are gRPC status names (rules.RETRY_ON_CONDITIONS has them among Envoy's).
GRPC_RETRY_CONDITIONS: Final = frozenset({"cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                                          "unavailable"})


@dataclass(frozen=True, slots=True)
class GrpcRetryProblem:
    listener: str
    route_index: int
    message: str


def grpc_retry_problems(listeners: Sequence[ListenerPolicy]) -> Iterator[GrpcRetryProblem]:
    """One problem per route of a gRPC listener whose retry conditions include a non-gRPC one."""
    for listener in listeners:
        if listener.kind is not ListenerKind.GRPC:
            continue
        for index, route in enumerate(listener.routes):
            if not isinstance(route.retries, RetryPolicy):
                continue
            other = [c for c in route.retries.retry_on if c not in GRPC_RETRY_CONDITIONS]
            if other:
                names = ", ".join(sorted(GRPC_RETRY_CONDITIONS))
                yield GrpcRetryProblem(listener.name, index, (
                    f"gRPC clients retry on gRPC status names only ({names}), not on "
                    f"{', '.join(other)}; give `retry_on` with status names (the default is HTTP's)"))


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
