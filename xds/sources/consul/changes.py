"""Which services to re-read, from a few catalog-wide answers: the change detector of the Consul source
(issue 13 section 4, docs/consul.md "Past 200 services"). Pure: no I/O, no clock.

One health watch per service holds one connection per service, and Consul refuses a client past
`limits.http_max_conns_per_client` (200 by default) with 429. Instead the source blocks on two catalog-wide
queries per datacenter and reads `/v1/health/service/<name>` only for the services that changed:

- `/v1/health/state/any`: every check of every node and service instance, with its Status. Its index moves
  on every check status change (and not on re-registrations). A service whose set of (node, instance,
  check, status) differs from the last answer is re-read; a node-level check (serfHealth, node maintenance:
  ServiceName "") that changed re-reads every service with an instance on that node.
- `/v1/catalog/services`: name -> tags. Its index moves on every registration change (a new or removed
  instance, a new port, address, meta or weights) and not on check changes. New services are read, removed
  ones dropped; for the rest the answer does not say which one changed (Consul has no catalog-wide
  per-service index), so the source then reads `/v1/catalog/node-services/<node>` for every known node: each
  instance's ModifyIndex, compared with the last sweep, names the services whose registration changed. That
  costs one request per node, not per service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xds.sources.consul.parse import ConsulParseError

# (node, service ID, check ID, status) of one service check.
ServiceCheck = tuple[str, str, str, str]
# (check ID, status) of one node-level check.
NodeCheck = tuple[str, str]
# (node, service ID, ModifyIndex) of one registered instance.
InstanceVersion = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class HealthState:
    """A `/v1/health/state/any` answer, reduced to what decides an instance's health."""

    services: Mapping[str, frozenset[ServiceCheck]] = field(default_factory=dict)
    nodes: Mapping[str, frozenset[NodeCheck]] = field(default_factory=dict)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_health_state(body: object) -> HealthState:
    """`/v1/health/state/any`: a JSON list of checks. ConsulParseError if it is not a list."""
    if body is None:
        body = []
    if not isinstance(body, list):
        raise ConsulParseError(f"/v1/health/state/any: expected a JSON list of checks, got "
                               f"{type(body).__name__}")
    services: dict[str, set[ServiceCheck]] = {}
    nodes: dict[str, set[NodeCheck]] = {}
    for check in body:
        if not isinstance(check, Mapping):
            continue
        node = _text(check.get("Node"))
        check_id = _text(check.get("CheckID"))
        status = _text(check.get("Status"))
        name = _text(check.get("ServiceName"))
        if name:
            services.setdefault(name, set()).add((node, _text(check.get("ServiceID")), check_id, status))
        elif node:
            nodes.setdefault(node, set()).add((check_id, status))
    return HealthState({k: frozenset(v) for k, v in services.items()},
                       {k: frozenset(v) for k, v in nodes.items()})


def health_changes(previous: HealthState, current: HealthState,
                   nodes_of: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Services whose health may differ between two answers: their own checks changed, or a node-level
    check of a node one of their instances runs on (`nodes_of`: service -> nodes, from its last read)."""
    changed = {name for name in previous.services.keys() | current.services.keys()
               if previous.services.get(name) != current.services.get(name)}
    nodes = {node for node in previous.nodes.keys() | current.nodes.keys()
             if previous.nodes.get(node) != current.nodes.get(node)}
    if nodes:
        changed.update(name for name, on in nodes_of.items() if on & nodes)
    return frozenset(changed)


@dataclass(frozen=True, slots=True)
class CatalogChanges:
    added: frozenset[str]
    removed: frozenset[str]
    retagged: frozenset[str]  # listed before and now, with other tags: certainly changed
    sweep: bool  # the index moved: some registration changed; read the node-services to find which


def parse_service_tags(body: object) -> dict[str, tuple[str, ...]]:
    """`/v1/catalog/services`: a JSON object of name -> tags. ConsulParseError if it is not an object."""
    if not isinstance(body, Mapping):
        raise ConsulParseError(f"/v1/catalog/services: expected a JSON object of service names, got "
                               f"{type(body).__name__}")
    return {name: tuple(sorted(t for t in tags if isinstance(t, str))) if isinstance(tags, list) else ()
            for name, tags in body.items() if isinstance(name, str) and name}


def catalog_changes(previous: Mapping[str, tuple[str, ...]] | None, current: Mapping[str, tuple[str, ...]],
                    *, index_moved: bool) -> CatalogChanges:
    """What a new `/v1/catalog/services` answer says. `previous` None (the first read, or after a reset)
    means everything is new. Any index move asks for a sweep: one blocking answer may cover several
    registrations, so an added service does not explain away a changed port elsewhere."""
    before = previous or {}
    added = frozenset(current.keys() - before.keys())
    removed = frozenset(before.keys() - current.keys())
    retagged = frozenset(name for name in current.keys() & before.keys() if current[name] != before[name])
    return CatalogChanges(added, removed, retagged, sweep=previous is not None and index_moved)


def parse_node_services(body: object, node: str) -> dict[str, frozenset[InstanceVersion]]:
    """`/v1/catalog/node-services/<node>`: {"Node": ..., "Services": [...]}; service name -> its instances on
    this node with their ModifyIndex. A node that is gone answers null (Consul 1.9+) or 404: no services."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise ConsulParseError(f"/v1/catalog/node-services/{node}: expected a JSON object, got "
                               f"{type(body).__name__}")
    raw = body.get("Services")
    out: dict[str, set[InstanceVersion]] = {}
    for service in raw if isinstance(raw, list) else ():
        if not isinstance(service, Mapping):
            continue
        name = _text(service.get("Service"))
        index = service.get("ModifyIndex")
        if name:
            out.setdefault(name, set()).add((node, _text(service.get("ID")),
                                             index if isinstance(index, int) else 0))
    return {k: frozenset(v) for k, v in out.items()}


def merge_versions(per_node: Iterable[Mapping[str, frozenset[InstanceVersion]]]
                   ) -> dict[str, frozenset[InstanceVersion]]:
    """The node-services answers of one sweep, as service -> every instance version on every node."""
    out: dict[str, set[InstanceVersion]] = {}
    for answer in per_node:
        for name, versions in answer.items():
            out.setdefault(name, set()).update(versions)
    return {k: frozenset(v) for k, v in out.items()}


def version_changes(previous: Mapping[str, frozenset[InstanceVersion]] | None,
                    current: Mapping[str, frozenset[InstanceVersion]]) -> frozenset[str]:
    """Services whose registered instances differ between two sweeps (added, removed or modified instances).
    The first sweep (`previous` None) only records: the services were read when they were listed."""
    if previous is None:
        return frozenset()
    return frozenset(name for name in previous.keys() | current.keys()
                     if previous.get(name) != current.get(name))


def nodes_to_sweep(state: HealthState, nodes_of: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Every node known to run something: those with a check, and those of instances read before (a node
    registered without any check never shows in the health state)."""
    nodes = set(state.nodes)
    for checks in state.services.values():
        nodes.update(check[0] for check in checks)
    for on in nodes_of.values():
        nodes.update(on)
    nodes.discard("")
    return frozenset(nodes)


def instance_nodes(body: object) -> frozenset[str]:
    """Nodes of the instances in a `/v1/health/service/<name>` answer (for `health_changes`)."""
    out: set[str] = set()
    for entry in body if isinstance(body, list) else ():
        node = entry.get("Node") if isinstance(entry, Mapping) else None
        name = node.get("Node") if isinstance(node, Mapping) else None
        if isinstance(name, str) and name:
            out.add(name)
    return frozenset(out)
