"""Versions are content hashes: stable across order, runs and processes; different for different content."""

from __future__ import annotations

import subprocess
import sys

from envoy.config.cluster.v3 import cluster_pb2
from hypothesis import given
from hypothesis import strategies as st

from xds.cache.snapshot import make_snapshot, version_of
from xds.translate.resource import Translated
from xds.typeurls import CLUSTER, ENDPOINT

cluster_specs = st.dictionaries(
    keys=st.text(alphabet="abcdefghij-.|=", min_size=1, max_size=12),
    values=st.integers(min_value=1, max_value=60),
    min_size=0, max_size=20,
)


def build(spec: dict[str, int], order: list[str] | None = None) -> list[Translated]:
    items = []
    for name in order if order is not None else list(spec):
        c = cluster_pb2.Cluster(name=name)
        c.connect_timeout.seconds = spec[name]
        items.append(Translated(CLUSTER, name, c))
    return items


@given(cluster_specs, st.randoms())
def test_version_does_not_depend_on_order(spec: dict[str, int], rnd) -> None:
    order = list(spec)
    rnd.shuffle(order)
    assert make_snapshot("g", build(spec)).versions == make_snapshot("g", build(spec, order)).versions


@given(cluster_specs, st.data())
def test_any_content_change_changes_the_version(spec: dict[str, int], data: st.DataObject) -> None:
    if not spec:
        return
    name = data.draw(st.sampled_from(sorted(spec)))
    changed = dict(spec)
    changed[name] = spec[name] % 60 + 1
    before = make_snapshot("g", build(spec)).version(CLUSTER)
    after = make_snapshot("g", build(changed)).version(CLUSTER)
    assert before != after


@given(cluster_specs)
def test_removing_a_resource_changes_the_version(spec: dict[str, int]) -> None:
    if not spec:
        return
    smaller = dict(list(spec.items())[1:])
    snap = make_snapshot("g", build(spec))
    assert version_of(snap.of_type(CLUSTER).values()) == snap.version(CLUSTER)
    assert make_snapshot("g", build(smaller)).version(CLUSTER) != snap.version(CLUSTER)


def test_version_is_identical_in_a_fresh_process() -> None:
    # Same content => same version across restarts and replicas (docs/protocol.md R14, case F3). Python's
    # hash() is salted per process, so this catches any use of it in versioning.
    program = (
        "from tests.unit.test_versions import build; from xds.cache.snapshot import make_snapshot;"
        "print(dict(make_snapshot('g', build({'a': 1, 'b': 2})).versions))"
    )
    here = dict(make_snapshot("g", build({"a": 1, "b": 2})).versions)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=".")
    assert out.stdout.strip() == str(here)


def test_rebuild_reuses_every_unchanged_resource_and_only_those() -> None:
    from xds.model.service import Endpoint
    from xds.pipeline import World, build_snapshot
    from xds.policy.load import parse_document

    def document(extra_endpoint: bool) -> str:
        services = "\n".join(
            f"  - name: s{i}\n    endpoints:\n      - address: 10.0.{i}.1:80\n"
            + ("      - address: 10.0.9.9:80\n" if extra_endpoint and i == 3 else "")
            for i in range(6))
        routes = "\n".join(f"      - {{match: {{prefix: /s{i}}}, backends: [{{service: s{i}}}]}}"
                           for i in range(6))
        return f"services:\n{services}\nlisteners:\n  - name: l\n    port: 1\n    routes:\n{routes}\n"

    before = World(*parse_document(document(False), where="a.yaml"))
    after = World(*parse_document(document(True), where="a.yaml"))
    first = build_snapshot(before, "g")
    second = build_snapshot(after, "g", first)
    fresh = build_snapshot(after, "g")
    assert second.versions == fresh.versions  # reuse never changes content
    for type_url in first.versions:
        for name, resource in second.of_type(type_url).items():
            unchanged = first.of_type(type_url).get(name)
            if name == "s3" and type_url == ENDPOINT:
                assert unchanged is not None and resource.hash != unchanged.hash
            else:  # clusters, other assignments, the listener and the routes: the very same objects
                assert resource is unchanged, (type_url, name)
    s3 = after.catalog.get("s3")
    assert s3 is not None and Endpoint("10.0.9.9", 80, source="file:a.yaml") in s3.endpoints
