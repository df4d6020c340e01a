"""Node groups share the resources they have in common (issue 7: a group must not cost a copy of the mesh)."""

from __future__ import annotations

import tracemalloc

from xds.cache.store import SnapshotStore
from xds.pipeline import World, builder_for
from xds.policy.load import parse_document
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE

CATALOG = """
services:
  - name: web
    endpoints: [{address: 10.0.0.1:80}, {address: 10.0.0.2:80}]
  - name: api
    endpoints: [{address: 10.0.1.1:80}]
listeners:
  - name: public
    address: 0.0.0.0
    port: 8080
    routes: [{backends: [{service: web}]}]
  - name: internal
    address: 0.0.0.0
    port: 9090
    groups: [backend]
    routes: [{backends: [{service: api}]}]
"""


def world(text: str = CATALOG) -> World:
    catalog, policy = parse_document(text, where="catalog.yaml")
    return World(catalog=catalog, policy=policy)


def test_groups_share_every_resource_they_have_in_common() -> None:
    store = SnapshotStore()
    store.publish(builder_for(world()))
    edge, backend = store.get("edge"), store.get("backend")
    assert edge is not None and backend is not None
    for type_url in (CLUSTER, ENDPOINT, ROUTE):
        for name, resource in edge.of_type(type_url).items():
            assert backend.get(type_url, name) is resource, (type_url, name)
    assert edge.get(LISTENER, "public") is backend.get(LISTENER, "public")
    # What differs between groups is not shared: only "backend" has the internal listener.
    assert edge.get(LISTENER, "internal") is None and backend.get(LISTENER, "internal") is not None


def test_after_a_change_groups_share_the_new_resources_too() -> None:
    store = SnapshotStore()
    for group in ("edge", "backend"):
        store.watch(group, lambda s: None)
    store.publish(builder_for(world()))
    store.publish(builder_for(world(CATALOG.replace("10.0.0.2:80", "10.0.0.3:80"))))
    edge, backend = store.current("edge"), store.current("backend")
    assert edge is not None and backend is not None
    changed = edge.get(ENDPOINT, "web")
    assert changed is not None and changed is backend.get(ENDPOINT, "web")


def test_another_group_costs_its_tables_not_a_copy_of_the_resources() -> None:
    # 20 endpoints per service, so that one copy of the resources clearly outweighs a group's own tables.
    services = "\n".join(
        f"  - name: s{i}\n    endpoints: ["
        + ", ".join(f"{{address: 10.{i // 250}.{i % 250}.{j}:80}}" for j in range(1, 21)) + "]"
        for i in range(200))
    routes = "\n".join(f"      - {{match: {{prefix: /s{i}}}, backends: [{{service: s{i}}}]}}"
                       for i in range(200))
    listener = f"listeners:\n  - name: l\n    address: 0.0.0.0\n    port: 80\n    routes:\n{routes}\n"
    store = SnapshotStore(max_groups=100)
    store.publish(builder_for(world(f"services:\n{services}\n{listener}")))
    first = store.get("g0")
    assert first is not None
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 21):
            store.get(f"g{i}")
        per_group = (tracemalloc.get_traced_memory()[0] - before) / 20
    finally:
        tracemalloc.stop()
    one_copy = sum(len(r.encoded) for t in (CLUSTER, ENDPOINT, ROUTE) for r in first.of_type(t).values())
    # Each group holds its own dictionaries (a few dozen bytes per name) but no resource bytes of its own.
    assert per_group < one_copy / 4, (per_group, one_copy)
