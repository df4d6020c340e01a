"""Policy: what the operator wants done with the services in the catalog, free of where it came from.

A Policy holds per-service settings (load balancing, connect timeout, protocol) and listeners with their
routes. It carries no endpoints: those come from the catalog. The same Policy shape is loaded from the YAML
file source, and later from Consul KV and Kubernetes CRDs; loaders validate and report located problems,
while the invariants that `apply_policy` relies on are re-checked here so no invalid Policy can exist.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

from xds.policy.desired import LbPolicy
from xds.policy.errors import PolicyError, Problem

DEFAULT_LB_POLICY = LbPolicy.ROUND_ROBIN
DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_LISTENER_ADDRESS = "0.0.0.0"
DEFAULT_DOMAINS: tuple[str, ...] = ("*",)
DEFAULT_PREFIX = "/"


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """How to talk to one service, whichever registry its endpoints come from."""

    name: str
    lb_policy: LbPolicy = DEFAULT_LB_POLICY
    _: KW_ONLY
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    http2: bool = False


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A route target: a service, optionally narrowed to the endpoints whose metadata match `subset`."""

    service: str
    subset: tuple[tuple[str, str], ...] = ()
    _: KW_ONLY
    weight: int = 1  # relative to the other backends of the same route

    def __post_init__(self) -> None:
        # Sorted so that {a: 1, b: 2} and {b: 2, a: 1} name the same cluster.
        object.__setattr__(self, "subset", tuple(sorted(self.subset)))
        if self.weight < 0:
            raise ValueError(f"backend weight must be >= 0, got {self.weight}")


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Match a request header: equal to `exact`, or merely present when `exact` is None."""

    name: str
    exact: str | None = None
    _: KW_ONLY
    invert: bool = False


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    name: str
    prefix: str = DEFAULT_PREFIX
    _: KW_ONLY
    headers: tuple[HeaderMatch, ...] = ()
    backends: tuple[BackendRef, ...] = ()
    timeout_s: float | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        # apply_policy normalises weights and would fail on these; refuse to build such a route at all.
        if not self.backends:
            raise ValueError(f"route {self.name!r} needs at least one backend")
        if sum(b.weight for b in self.backends) == 0:
            raise ValueError(f"route {self.name!r}: backend weights sum to 0")


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """An HTTP listener, served to the node groups in `groups` (every group when None)."""

    name: str
    address: str = DEFAULT_LISTENER_ADDRESS
    _: KW_ONLY
    port: int
    groups: frozenset[str] | None = None
    domains: tuple[str, ...] = DEFAULT_DOMAINS
    routes: tuple[RoutePolicy, ...] = ()

    def serves(self, group: str) -> bool:
        return self.groups is None or group in self.groups


@dataclass(frozen=True, slots=True)
class Policy:
    services: tuple[ServicePolicy, ...] = ()
    listeners: tuple[ListenerPolicy, ...] = ()
    _: KW_ONLY
    # Where this policy was loaded from ("file:/etc/xds/catalog.yaml"); only used in error messages, so two
    # policies with the same content compare equal wherever they came from.
    origin: str = field(default="", compare=False)


def _groups_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    if a is None or b is None:
        return True
    return not a.isdisjoint(b)


def find_port_conflicts(listeners: Sequence[ListenerPolicy]) -> list[tuple[int, int]]:
    """Pairs (earlier, later) of listener indexes that one node group would receive on the same
    address and port; Envoy would reject the second listener (bind conflict), so loaders refuse them.
    Only the first conflict of each later listener is reported."""
    by_socket: dict[tuple[str, int], list[int]] = defaultdict(list)
    conflicts: list[tuple[int, int]] = []
    for index, listener in enumerate(listeners):
        earlier = by_socket[(listener.address, listener.port)]
        for other in earlier:
            if _groups_overlap(listeners[other].groups, listener.groups):
                conflicts.append((other, index))
                break
        earlier.append(index)
    return conflicts


def describe_groups(a: frozenset[str] | None, b: frozenset[str] | None) -> str:
    """Human wording of the groups two listeners share, for conflict messages."""
    if a is None:
        if b is None:
            return "in every node group"
        shared = b
    else:
        shared = a if b is None else a & b
    return "in node group " + ", ".join(repr(g) for g in sorted(shared))


def merge_policies(policies: Sequence[Policy]) -> Policy:
    """Combine policies from several sources, in the operator's source order.

    A service configured twice keeps the earlier settings (mirroring `merge_catalogs`). Listeners cannot be
    merged that way, since a listener silently vanishing is worse than a refusal: a listener name used twice,
    or one socket claimed twice for a node group, raises PolicyError naming both origins.
    """
    if len(policies) == 1:
        return policies[0]
    services: dict[str, ServicePolicy] = {}
    listeners: list[ListenerPolicy] = []
    origins: list[str] = []
    owner: dict[str, str] = {}
    problems: list[Problem] = []
    for policy in policies:
        for service in policy.services:
            services.setdefault(service.name, service)
        for listener in policy.listeners:
            if listener.name in owner:
                other = owner[listener.name] or "another policy"
                problems.append(Problem(policy.origin or "policy", None, None,
                                        f"listener {listener.name!r} is also defined by {other}"))
                continue
            owner[listener.name] = policy.origin
            listeners.append(listener)
            origins.append(policy.origin)
    for first, second in find_port_conflicts(listeners):
        a, b = listeners[first], listeners[second]
        problems.append(Problem(
            origins[second] or "policy", None, None,
            f"listener {b.name!r} uses {b.address}:{b.port}, already used by listener {a.name!r} "
            f"from {origins[first] or 'another policy'} {describe_groups(a.groups, b.groups)}",
        ))
    if problems:
        raise PolicyError(problems)
    return Policy(services=tuple(services.values()), listeners=tuple(listeners))
