"""A registry problem that goes away without any catalog or policy change still clears the source's error
at once (issue 14 item 6): a never-valid Consul KV key that is deleted (kv.py reports the change) and the
engine forcing the publish that tells the sink (xds/sources/registry/engine.py). No network."""

from __future__ import annotations

import asyncio

from tests.component.test_consul_fake import RecordingSink, until
from tests.unit.test_registry_engine import Clock, Scripted, clock, engine_for, running  # noqa: F401
from xds.sources.consul.kv import KvEntry, KvPolicies

GOOD = (b"services:\n  - name: web\nlisteners:\n  - name: ingress\n    port: 8080\n    routes:\n"
        b"      - name: all\n        backends:\n          - service: web\n            weight: 100\n")
BAD = b"listeners:\n  - name: other\n    port: eighty\n"


def test_deleting_a_never_valid_kv_key_is_a_change_that_clears_its_problem() -> None:
    policies = KvPolicies(prefix="xds/")
    first = policies.update([KvEntry("xds/a", GOOD)])
    assert first.changed and first.problems == ()
    put = policies.update([KvEntry("xds/a", GOOD), KvEntry("xds/zz", BAD)])
    assert not put.changed  # no policy changed; the new problem is reported, not published
    assert len(put.problems) == 1 and "consul-kv:xds/zz" in put.problems[0]
    assert policies.problems() == put.problems
    deleted = policies.update([KvEntry("xds/a", GOOD)])
    assert deleted.changed and deleted.problems == () and policies.problems() == ()  # the problem went away
    # Nothing at all changed: not a change.
    assert not policies.update([KvEntry("xds/a", GOOD)]).changed


async def test_a_reported_problem_that_no_longer_stands_forces_a_publish(
        clock: Clock) -> None:  # noqa: F811 (the imported fixture)
    engine, registry, sink = engine_for(clock), Scripted(), RecordingSink()
    registry.hosts = [("10.0.0.1", 80)]
    async with running(engine, registry, sink):
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 1, what="the initial publish")
        # A bad document appears: reported at once, standing in the candidate; the catalog is unchanged.
        registry.problems = ("kv:zz: bad document",)
        engine.report("kv:zz: bad document")
        calls = registry.calls
        engine.mark_dirty()
        await until(lambda: registry.calls > calls, what="the candidate looked at")
        await asyncio.sleep(0)
        assert len(sink.updates) == 1  # the same state is not published again
        # The document is deleted: nothing in the catalog changes, yet the source publishes (recovered).
        registry.problems = ()
        engine.mark_dirty()
        await until(lambda: len(sink.updates) == 2, what="the publish that clears the error")
        assert sink.updates[1].catalog == sink.updates[0].catalog
        assert sink.errors == ["kv:zz: bad document"]  # not said again after the publish
        # And only once: with nothing reported since, the next look publishes nothing.
        calls = registry.calls
        engine.mark_dirty()
        await until(lambda: registry.calls > calls, what="the candidate looked at again")
        assert len(sink.updates) == 2
