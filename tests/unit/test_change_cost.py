"""A change costs work proportional to what changed, not to the catalog times the node groups (issue 12):
node groups served the same listeners share one apply_policy and one plan per World, and a policy-only file
next to a registry does not make the merge copy the registry's catalog."""

from __future__ import annotations

import pytest

import xds.pipeline
from xds.cache.store import SnapshotStore
from xds.model.catalog import merge_catalogs
from xds.model.service import Catalog, Endpoint, Service, ServiceName
from xds.pipeline import MEMO_LIMIT, World, build_snapshot, builder_for
from xds.policy.apply import apply_policy
from xds.policy.desired import DesiredState
from xds.policy.load import parse_document
from xds.translate.build import plan
from xds.typeurls import LISTENER

from .test_pipeline_sharing import CATALOG


def _world() -> World:
    catalog, policy = parse_document(CATALOG, where="catalog.yaml")
    return World(catalog=catalog, policy=policy)


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"apply": 0, "plan": 0}

    def counted_apply(*args: object, **kwargs: object) -> DesiredState:
        calls["apply"] += 1
        return apply_policy(*args, **kwargs)  # type: ignore[arg-type]

    def counted_plan(*args: object, **kwargs: object) -> object:
        calls["plan"] += 1
        return plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(xds.pipeline, "apply_policy", counted_apply)
    monkeypatch.setattr(xds.pipeline, "plan", counted_plan)
    return calls


def test_groups_served_the_same_listeners_share_one_apply_and_one_plan(monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    calls = _counting(monkeypatch)
    store = SnapshotStore()
    groups = ("edge-1", "edge-2", "edge-3", "backend")  # "backend" also gets the `internal` listener
    for group in groups:
        store.watch(group, lambda s: None)
    store.publish(builder_for(_world()))
    assert calls == {"apply": 2, "plan": 2}
    # Each group still has its own snapshot, equal to one built without any sharing.
    for group in groups:
        snapshot = store.current(group)
        alone = build_snapshot(_world(), group)
        assert snapshot is not None and snapshot.versions == alone.versions, group
    backend, edge = store.current("backend"), store.current("edge-1")
    assert backend is not None and backend.get(LISTENER, "internal") is not None
    assert edge is not None and edge.get(LISTENER, "internal") is None


def test_the_memos_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a listener per group (sidecars), every group differs: results beyond the bound are not kept,
    and every group is still built right."""
    listeners = "\n".join(f"  - {{name: l{i}, port: {20000 + i}, groups: [g{i}], "
                          f"routes: [{{backends: [{{service: web}}]}}]}}" for i in range(MEMO_LIMIT + 4))
    web = "services:\n  - name: web\n    endpoints: [{address: 10.0.0.1:80}]\n"
    text = f"{web}listeners:\n{listeners}\n"
    catalog, policy = parse_document(text, where="c.yaml")
    build = builder_for(World(catalog=catalog, policy=policy))
    calls = _counting(monkeypatch)
    for i in range(MEMO_LIMIT + 4):
        snapshot = build(f"g{i}", None)
        assert list(snapshot.of_type(LISTENER)) == [f"l{i}"]
    assert calls["apply"] == MEMO_LIMIT + 4


def test_a_policy_only_catalog_does_not_copy_the_registry_catalog() -> None:
    registry = Catalog((Service(ServiceName("web"), (Endpoint("10.0.0.1", 80, source="consul:dc1"),)),))
    assert merge_catalogs([Catalog(), registry]) is registry
    assert merge_catalogs([registry, Catalog()]) is registry
    assert merge_catalogs([Catalog(), Catalog()]) == Catalog()
    assert merge_catalogs([]) == Catalog()
    other = Catalog((Service(ServiceName("web"), (Endpoint("10.0.0.2", 80, source="file:x"),)),))
    merged = merge_catalogs([other, registry])
    web = merged.get("web")
    assert web is not None and [e.host for e in web.endpoints] == ["10.0.0.1", "10.0.0.2"]
