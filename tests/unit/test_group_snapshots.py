"""Node groups with equal content share one snapshot build, and a rebuild costs the types that changed
(issue 12; docs/architecture.md)."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.unit.test_versions import build, cluster_specs
from xds import pipeline
from xds.cache.snapshot import Snapshot, make_snapshot, version_of
from xds.cache.store import SnapshotStore
from xds.pipeline import World, build_snapshot, builder_for
from xds.policy.load import parse_document
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE

from .test_pipeline_sharing import CATALOG

MOVED = CATALOG.replace("10.0.0.2:80", "10.0.0.3:80")


def world(text: str = CATALOG) -> World:
    catalog, policy = parse_document(text, where="catalog.yaml")
    return World(catalog=catalog, policy=policy)


def test_groups_served_the_same_listeners_cost_one_make_snapshot_per_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = pipeline.make_snapshot

    def counting(group: str, *args: object, **kwargs: object) -> Snapshot:
        calls.append(group)
        return real(group, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "make_snapshot", counting)
    store = SnapshotStore()
    for group in ("edge", "web", "mobile", "backend"):
        store.watch(group, lambda s: None)
    store.publish(builder_for(world()))
    calls.clear()
    store.publish(builder_for(world(MOVED)))

    # "edge", "web" and "mobile" get the same listeners, "backend" one more: two builds, not four.
    assert len(calls) == 2, calls
    edge, web, mobile, backend = (store.current(g) for g in ("edge", "web", "mobile", "backend"))
    assert edge is not None and web is not None and mobile is not None and backend is not None
    assert (edge.group, web.group, mobile.group) == ("edge", "web", "mobile")
    for other in (web, mobile):
        assert other.versions == edge.versions
        for type_url in PUSH_ORDER:
            assert other.of_type(type_url) is edge.of_type(type_url), type_url
    assert backend.version(LISTENER) != edge.version(LISTENER)
    assert backend.get(LISTENER, "internal") is not None and edge.get(LISTENER, "internal") is None


def test_a_rebuild_keeps_the_unchanged_types_mappings_and_versions() -> None:
    before = build_snapshot(world(), "edge")
    after = build_snapshot(world(MOVED), "edge", previous=before)

    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert after.of_type(type_url) is before.of_type(type_url), type_url
        assert after.version(type_url) == before.version(type_url)
    assert after.of_type(ENDPOINT) is not before.of_type(ENDPOINT)
    assert after.version(ENDPOINT) != before.version(ENDPOINT)
    # Content hashes whatever the path (docs/protocol.md R14): equal to a build with no previous snapshot.
    cold = build_snapshot(world(MOVED), "edge")
    assert after.versions == cold.versions
    for type_url in PUSH_ORDER:
        assert after.version(type_url) == version_of(after.of_type(type_url).values()), type_url


@given(cluster_specs, cluster_specs)
def test_a_rebuild_from_any_previous_has_the_versions_of_a_cold_build(
        first: dict[str, int], second: dict[str, int]) -> None:
    previous = make_snapshot("g", build(first))
    rebuilt = make_snapshot("g", build(second), previous)

    assert rebuilt.versions == make_snapshot("g", build(second)).versions  # R14: content decides
    assert rebuilt.version(CLUSTER) == version_of(rebuilt.of_type(CLUSTER).values())
    assert dict(rebuilt.of_type(CLUSTER)).keys() == second.keys()
    if first == second and first:
        assert rebuilt.of_type(CLUSTER) is previous.of_type(CLUSTER)
    elif first != second:
        assert rebuilt.of_type(CLUSTER) is not previous.of_type(CLUSTER)
