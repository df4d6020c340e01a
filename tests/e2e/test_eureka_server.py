"""The Eureka test infrastructure against the real Spring Cloud Netflix Eureka server (issue 13 section 2).

What the Eureka source will rely on, checked on the real server: registration as a Spring app does it,
heartbeats, status overrides in the full and delta responses and the `apps__hashcode`, lease expiry with
short leases, a restart that comes back empty (and the registrar registering again), basic auth, and a pair
of servers replicating to each other. The saved samples in tests/unit/data/eureka/ are checked against the
live server's shape so they cannot drift silently.

Servers are module-scoped (tests/eureka_fixtures.py); each test uses its own app names.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.eureka import EurekaApi, EurekaInstance, EurekaPair, EurekaServer, Registration
from harness.processes import wait_until
from tests.eureka_fixtures import EUREKA_AUTH

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "eureka"
# Generous for a 2-core machine shared with a CI run; on an idle one each wait ends in well under a second
# (the read-only response cache is off: harness/eureka.py).
_VISIBLE_S = 10.0
# Eureka evicts when now > last renewal + duration + duration (it adds the duration at renewal and again at
# the expiry check: a known quirk kept for compatibility), plus up to one eviction interval.
_LEASE_S = 2


def _expected_hashcode(statuses: list[str]) -> str:
    """Eureka's `apps__hashcode`: "<STATUS>_<count>_" per status, sorted by status name."""
    return "".join(f"{status}_{count}_" for status, count in sorted(Counter(statuses).items()))


def _statuses(apps: dict[str, Any]) -> list[str]:
    return [i["status"] for a in apps.get("application", []) for i in a.get("instance", [])]


def _status_of(api: EurekaApi, app: str, instance_id: str) -> str | None:
    found = api.instance(app, instance_id)
    return None if found is None else str(found["status"])


def _wait_status(api: EurekaApi, app: str, instance_id: str, status: str, message: str) -> None:
    wait_until(lambda: _status_of(api, app, instance_id) == status, timeout_s=_VISIBLE_S, message=message)


def _delta_action(api: EurekaApi, instance_id: str) -> str | None:
    changed = [i for a in api.delta()["application"] for i in a["instance"] if i["instanceId"] == instance_id]
    return str(changed[-1]["actionType"]) if changed else None


def test_registration_shows_in_full_fetch_with_metadata_and_hashcode(eureka_server: EurekaServer) -> None:
    instance = EurekaInstance(
        app="reg-orders", instance_id="reg-orders-1", port=9001, secure_port=9443,
        metadata={"zone": "zone-a", "version": "v1"},
    )  # fmt: skip
    with Registration(eureka_server, instance):
        found = wait_until(lambda: eureka_server.instances().get("reg-orders-1"), timeout_s=_VISIBLE_S,
                           message="the registered instance never appeared in /eureka/apps")
        apps = eureka_server.apps()
    assert found["app"] == "REG-ORDERS"  # Eureka upper-cases app names
    assert found["status"] == "UP"
    assert found["port"] == {"$": 9001, "@enabled": "true"}
    assert found["securePort"] == {"$": 9443, "@enabled": "true"}
    assert found["metadata"] == {"zone": "zone-a", "version": "v1"}
    assert found["leaseInfo"]["durationInSecs"] == 3
    assert apps["apps__hashcode"] == _expected_hashcode(_statuses(apps))
    assert _expected_hashcode(["UP", "UP", "OUT_OF_SERVICE"]) == "OUT_OF_SERVICE_1_UP_2_"


def test_heartbeats_renew_the_lease(eureka_server: EurekaServer) -> None:
    instance = EurekaInstance(app="hb-orders", instance_id="hb-orders-1", port=9002,
                              lease_duration_s=_LEASE_S)
    with Registration(eureka_server, instance) as registration:
        first = wait_until(lambda: eureka_server.instance("hb-orders", "hb-orders-1"), timeout_s=_VISIBLE_S,
                           message="the registered instance never appeared")
        # Past two lease durations (when an unrenewed lease is evicted), the renewals kept it.
        wait_until(lambda: registration.renewals >= 2 * _LEASE_S + 2, timeout_s=_VISIBLE_S + 4 * _LEASE_S,
                   message=lambda: f"only {registration.renewals} heartbeats succeeded")
        later = eureka_server.instance("hb-orders", "hb-orders-1")
    assert later is not None
    assert later["leaseInfo"]["lastRenewalTimestamp"] > first["leaseInfo"]["lastRenewalTimestamp"]
    assert registration.registrations == 1  # never forgotten, so never registered again


def test_status_override_shows_in_full_and_delta_fetches(eureka_server: EurekaServer) -> None:
    instance = EurekaInstance(app="st-orders", instance_id="st-orders-1", port=9003)
    with Registration(eureka_server, instance) as registration:
        _wait_status(eureka_server, "st-orders", "st-orders-1", "UP", "the instance never appeared UP")
        eureka_server.set_status("st-orders", "st-orders-1", "OUT_OF_SERVICE")
        full = wait_until(
            lambda: eureka_server.instances()["st-orders-1"]["status"] == "OUT_OF_SERVICE"
            and eureka_server.apps(),
            timeout_s=_VISIBLE_S, message="OUT_OF_SERVICE never showed in /eureka/apps",
        )  # fmt: skip
        # Heartbeats do not undo an override.
        wait_until(lambda: eureka_server.heartbeat("st-orders", "st-orders-1"), timeout_s=_VISIBLE_S,
                   message="heartbeat refused")
        assert _status_of(eureka_server, "st-orders", "st-orders-1") == "OUT_OF_SERVICE"
        delta = eureka_server.delta()
        changed = [i for a in delta["application"] for i in a["instance"] if i["instanceId"] == "st-orders-1"]
        # The delta lists the latest change of the instance, with the whole instance and an actionType.
        assert changed, delta
        assert changed[-1]["status"] == "OUT_OF_SERVICE"
        assert changed[-1]["overriddenStatus"] == "OUT_OF_SERVICE"
        assert changed[-1]["actionType"] == "MODIFIED"
        # Both responses carry the hashcode of the WHOLE registry after the change, which is what a client
        # compares with its own reconciled copy (issue 13: full re-fetch on mismatch).
        assert "OUT_OF_SERVICE_1_" in full["apps__hashcode"]
        assert delta["apps__hashcode"] == _expected_hashcode(_statuses(eureka_server.apps()))
        # Removing the override with value=UP (what Spring's service-registry endpoint sends) puts it back.
        eureka_server.clear_status("st-orders", "st-orders-1", new_status="UP")
        _wait_status(eureka_server, "st-orders", "st-orders-1", "UP",
                     "the instance did not come back UP after the override was removed")
        # Without a value the server sets the instance UNKNOWN and answers its next heartbeat with 404, so
        # the client registers again with its own status (UP).
        eureka_server.set_status("st-orders", "st-orders-1", "OUT_OF_SERVICE")
        eureka_server.clear_status("st-orders", "st-orders-1")
        assert _status_of(eureka_server, "st-orders", "st-orders-1") == "UNKNOWN"
        wait_until(lambda: registration.registrations >= 2, timeout_s=_VISIBLE_S,
                   message="the registrar never registered again after the override was deleted")
        _wait_status(eureka_server, "st-orders", "st-orders-1", "UP",
                     "the instance did not come back UP after registering again")


def test_instance_whose_heartbeats_stop_is_evicted_after_its_lease(eureka_server: EurekaServer) -> None:
    instance = EurekaInstance(app="exp-orders", instance_id="exp-orders-1", port=9004,
                              lease_duration_s=_LEASE_S)
    stays = EurekaInstance(app="exp-orders", instance_id="exp-orders-2", port=9005, lease_duration_s=_LEASE_S)
    with Registration(eureka_server, stays):
        registration = Registration(eureka_server, instance)
        registration.start()
        wait_until(lambda: eureka_server.instance("exp-orders", "exp-orders-1"), timeout_s=_VISIBLE_S,
                   message="the registered instance never appeared")
        registration.stop()  # the process "died": no cancel, no more heartbeats
        # A lookup by id hides an expired lease at once; the eviction task removes it (and records the
        # DELETED change the delta reports) within one eviction interval after that.
        wait_until(lambda: eureka_server.instance("exp-orders", "exp-orders-1") is None,
                   timeout_s=_VISIBLE_S + 3 * _LEASE_S, interval_s=0.2,
                   message="the instance without heartbeats never expired")
        wait_until(lambda: _delta_action(eureka_server, "exp-orders-1") == "DELETED", timeout_s=_VISIBLE_S,
                   message=lambda: f"the delta never reported the eviction: {eureka_server.delta()}")
        assert "exp-orders-1" not in eureka_server.instances()
        assert eureka_server.instance("exp-orders", "exp-orders-2") is not None


def test_basic_auth_is_required_and_accepted(eureka_auth_server: EurekaServer) -> None:
    status, _ = eureka_auth_server.request("GET", "apps", auth=None)
    assert status == 401
    anonymous = EurekaApi(eureka_auth_server.host, eureka_auth_server.port)
    instance = EurekaInstance(app="auth-orders", instance_id="auth-orders-1", port=9006)
    status, _ = anonymous.request("POST", "apps/AUTH-ORDERS", body=instance.document())
    assert status == 401
    eureka_auth_server.register(instance)
    assert eureka_auth_server.instance("auth-orders", "auth-orders-1") is not None
    assert EUREKA_AUTH.password not in repr(EUREKA_AUTH)


def test_saved_samples_have_the_live_shape(eureka_server: EurekaServer) -> None:
    """tests/unit/data/eureka/ holds real responses for the source's unit tests; the live server still
    answers with the same keys, so the samples describe what the source will really get."""
    instance = EurekaInstance(app="shape-orders", instance_id="shape-orders-1", port=9007,
                              metadata={"zone": "z"})
    with Registration(eureka_server, instance):
        wait_until(lambda: eureka_server.instance("shape-orders", "shape-orders-1"), timeout_s=_VISIBLE_S,
                   message="the registered instance never appeared")
        live_full, live_delta = eureka_server.apps(), eureka_server.delta()
    for name, live in (("apps_full.json", live_full), ("apps_delta.json", live_delta)):
        saved = json.loads((DATA / name).read_text())["applications"]
        assert set(saved) == set(live), name
        saved_instance = saved["application"][0]["instance"][0]
        live_instance = live["application"][0]["instance"][0]
        assert set(saved_instance) == set(live_instance), name
        assert set(saved_instance["leaseInfo"]) == set(live_instance["leaseInfo"]), name
    full = json.loads((DATA / "apps_full.json").read_text())["applications"]
    # A full response's hashcode describes its own instances (a delta's describes the whole registry).
    assert full["apps__hashcode"] == _expected_hashcode(_statuses(full))


def test_pair_replicates_registration_status_and_cancel(eureka_pair: EurekaPair) -> None:
    first, second = eureka_pair.first, eureka_pair.second
    instance = EurekaInstance(app="pair-orders", instance_id="pair-orders-1", port=9008)
    # Registered and heartbeating on the first server only; the first replicates both to the second.
    registration = Registration(first, instance)
    registration.start()
    try:
        wait_until(lambda: second.instance("pair-orders", "pair-orders-1"), timeout_s=_VISIBLE_S,
                   message="a registration on the first server never reached the second")
        second.set_status("pair-orders", "pair-orders-1", "OUT_OF_SERVICE")
        _wait_status(first, "pair-orders", "pair-orders-1", "OUT_OF_SERVICE",
                     "a status override on the second server never reached the first")
    finally:
        registration.stop()
    first.cancel("pair-orders", "pair-orders-1")
    wait_until(lambda: second.instance("pair-orders", "pair-orders-1") is None, timeout_s=_VISIBLE_S,
               message="a cancel on the first server never reached the second")


def test_pair_member_that_dies_comes_back_with_its_peers_registry(eureka_pair: EurekaPair) -> None:
    first, second = eureka_pair.first, eureka_pair.second
    instance = EurekaInstance(app="ha-orders", instance_id="ha-orders-1", port=9010, metadata={"zone": "z1"})
    with Registration(first, instance) as registration:
        wait_until(lambda: second.instance("ha-orders", "ha-orders-1"), timeout_s=_VISIBLE_S,
                   message="the registration never reached the second server")
        second.kill()  # dies at once, no graceful shutdown
        assert not second.alive
        # The survivor keeps the instance and its heartbeats (its attempts to replicate to the dead peer fail
        # in the background and change nothing for clients).
        renewals = registration.renewals
        wait_until(lambda: registration.renewals >= renewals + 2, timeout_s=_VISIBLE_S,
                   message="heartbeats to the surviving server stopped")
        assert first.instance("ha-orders", "ha-orders-1") is not None
        # A pair member starts by copying its peer's registry (fetch-registry on), so it does not come back
        # empty as a lone server does.
        second.restart()
        found = wait_until(lambda: second.instance("ha-orders", "ha-orders-1"), timeout_s=_VISIBLE_S,
                           message="the restarted pair member never got the instance back")
    assert found["metadata"] == {"zone": "z1"}
    assert found["status"] == "UP"


def test_restart_comes_back_empty_and_heartbeats_register_again(eureka_server: EurekaServer) -> None:
    # Last in the module: the restart empties the shared server (tests above use their own apps anyway).
    instance = EurekaInstance(app="rs-orders", instance_id="rs-orders-1", port=9009)
    eureka_server.register(instance)
    assert eureka_server.instance("rs-orders", "rs-orders-1") is not None
    port = eureka_server.port
    eureka_server.restart()
    assert eureka_server.port == port
    assert eureka_server.apps()["application"] == []
    # A client that keeps heartbeating gets 404 from the restarted server and registers again.
    with Registration(eureka_server, instance) as registration:
        eureka_server.cancel("rs-orders", "rs-orders-1")
        wait_until(lambda: registration.registrations >= 2, timeout_s=_VISIBLE_S,
                   message="the registrar never registered again after a 404 heartbeat")
        assert eureka_server.instance("rs-orders", "rs-orders-1") is not None
