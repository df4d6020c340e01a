"""Eureka JSON -> registry -> Catalog (xds/sources/eureka/parse.py; docs/eureka.md has the table)."""

from __future__ import annotations

from typing import Any

import pytest

from xds.model.service import Health, Locality
from xds.sources.eureka.parse import (
    Delta,
    EurekaParseError,
    Instance,
    ParseOptions,
    Port,
    Registry,
    apply_delta,
    delta_matches,
    parse_applications,
    parse_delta,
    reconcile_hashcode,
    registry_catalog,
)


def instance(app: str, ip: str, port: int = 8080, *, status: str = "UP", instance_id: str = "",
             secure_port: int = 443, secure: bool = False, plain: bool = True,
             metadata: dict[str, str] | None = None, action: str = "",
             aws_zone: str = "") -> dict[str, Any]:
    """One instance as Eureka's JSON codec writes it (Spring Cloud Netflix server)."""
    data_center: dict[str, Any] = {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                                   "name": "MyOwn"}
    if aws_zone:
        data_center = {"@class": "com.netflix.appinfo.AmazonInfo", "name": "Amazon",
                       "metadata": {"availability-zone": aws_zone, "local-ipv4": ip}}
    body: dict[str, Any] = {
        "instanceId": instance_id or f"{ip}:{app.lower()}:{port}", "hostName": ip, "app": app.upper(),
        "ipAddr": ip, "status": status, "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true" if plain else "false"},
        "securePort": {"$": secure_port, "@enabled": "true" if secure else "false"},
        "countryId": 1, "dataCenterInfo": data_center,
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": metadata if metadata is not None else {"@class": "java.util.Collections$EmptyMap"},
        "vipAddress": app.lower(), "secureVipAddress": app.lower(),
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": "1765000000000",
        "lastDirtyTimestamp": "1765000000000",
    }
    if action:
        body["actionType"] = action
    return body


def apps(*instances: dict[str, Any], hashcode: str | None = None, version: str = "1") -> dict[str, Any]:
    by_app: dict[str, list[dict[str, Any]]] = {}
    for i in instances:
        by_app.setdefault(i["app"], []).append(i)
    if hashcode is None:
        counts: dict[str, int] = {}
        for i in instances:
            counts[i["status"]] = counts.get(i["status"], 0) + 1
        hashcode = "".join(f"{s}_{counts[s]}_" for s in sorted(counts))
    return {"applications": {"versions__delta": version, "apps__hashcode": hashcode,
                             "application": [{"name": name, "instance": list(group)}
                                             for name, group in by_app.items()]}}


def test_mapping_of_statuses_names_ports_metadata_and_zone() -> None:
    body = apps(
        instance("WEB", "10.0.0.1", metadata={"version": "v1", "zone": "z1"}),
        instance("WEB", "10.0.0.2", status="DOWN"),
        instance("WEB", "10.0.0.3", status="OUT_OF_SERVICE"),
        instance("WEB", "10.0.0.4", status="STARTING"),
        instance("WEB", "10.0.0.5", status="UNKNOWN"),
        instance("API", "10.0.1.1", 9000, aws_zone="us-east-1a"))
    result = registry_catalog(parse_applications(body))
    assert result.skipped == ()
    web = result.catalog.get("web")
    assert web is not None
    health = {e.host: e.health for e in web.endpoints}
    assert health == {"10.0.0.1": Health.HEALTHY, "10.0.0.2": Health.UNHEALTHY,
                      "10.0.0.3": Health.DRAINING, "10.0.0.5": Health.UNHEALTHY}  # STARTING left out
    first = web.endpoints[0]
    assert first.port == 8080 and first.locality == Locality(zone="z1") and first.source == "eureka"
    assert dict(first.metadata) == {"version": "v1", "zone": "z1", "registry": "eureka", "eureka.app": "WEB"}
    api = result.catalog.get("api")
    assert api is not None and api.endpoints[0].locality == Locality(zone="us-east-1a")
    assert api.endpoints[0].port == 9000


def test_single_element_lists_may_come_as_objects() -> None:
    body = {"applications": {"versions__delta": "3", "apps__hashcode": "UP_1_",
                             "application": {"name": "WEB", "instance": instance("WEB", "10.0.0.1")}}}
    registry = parse_applications(body)
    assert registry.version == 3 and registry.hashcode == "UP_1_"
    assert [i.key for i in registry.instances] == [("WEB", "10.0.0.1:web:8080")]


def test_empty_registry_is_valid_and_empty() -> None:
    registry = parse_applications({"applications": {"versions__delta": "1", "apps__hashcode": "",
                                                    "application": []}})
    assert len(registry) == 0 and len(registry_catalog(registry).catalog) == 0


@pytest.mark.parametrize(("plain", "secure", "prefer_secure", "expected"), [
    (True, False, False, 8080), (True, True, False, 8080), (True, True, True, 8443),
    (False, True, False, 8443), (True, False, True, 8080)])
def test_port_and_secure_port(plain: bool, secure: bool, prefer_secure: bool, expected: int) -> None:
    body = apps(instance("WEB", "10.0.0.1", 8080, secure_port=8443, secure=secure, plain=plain))
    catalog = registry_catalog(parse_applications(body), options=ParseOptions(prefer_secure=prefer_secure))
    web = catalog.catalog.get("web")
    assert web is not None and web.endpoints[0].port == expected


def test_logical_name_from_metadata_and_bad_instances_are_skipped_with_notes() -> None:
    body = apps(
        instance("WEB-SERVICE", "10.0.0.1", metadata={"xds.dev/service-name": "web"}),
        instance("WEB-SERVICE", "host.example", instance_id="byname"),
        instance("WEB-SERVICE", "10.0.0.3", plain=False),
        instance("BAD NAME", "10.0.0.4"),
        instance("WEB-SERVICE", "10.0.0.5", instance_id="a"),
        instance("WEB-SERVICE", "10.0.0.5", instance_id="b"))
    result = registry_catalog(parse_applications(body))
    web = result.catalog.get("web")
    assert web is not None and [e.host for e in web.endpoints] == ["10.0.0.1"]
    assert "xds.dev/service-name" not in dict(web.endpoints[0].metadata)
    other = result.catalog.get("web-service")
    assert other is not None and [e.host for e in other.endpoints] == ["10.0.0.5"]
    notes = "\n".join(result.skipped)
    assert "instance byname of WEB-SERVICE: ipAddr 'host.example' is not an IP address" in notes
    assert "neither `port` nor `securePort` is enabled" in notes
    assert "'bad name' is not a valid service name" in notes
    assert "instance b of WEB-SERVICE: 10.0.0.5:8080 is already registered" in notes
    assert len(result.skipped) == 4


def test_hashcode_counts_every_status_in_alphabetical_order() -> None:
    registry = parse_applications(apps(
        instance("WEB", "10.0.0.1"), instance("WEB", "10.0.0.2"), instance("API", "10.0.0.3"),
        instance("API", "10.0.0.4", status="DOWN"), instance("API", "10.0.0.5", status="STARTING"),
        instance("API", "10.0.0.6", status="OUT_OF_SERVICE")))
    assert reconcile_hashcode(registry.instances) == "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_UP_3_"
    assert reconcile_hashcode(()) == ""


def test_delta_apply_added_modified_deleted_and_hashcode_check() -> None:
    registry = parse_applications(apps(instance("WEB", "10.0.0.1"), instance("WEB", "10.0.0.2")))
    delta = parse_delta(apps(instance("WEB", "10.0.0.3", action="ADDED"),
                             instance("WEB", "10.0.0.1", status="DOWN", action="MODIFIED"),
                             instance("WEB", "10.0.0.2", action="DELETED"),
                             hashcode="DOWN_1_UP_1_"))
    after = apply_delta(registry, delta)
    assert delta_matches(after)
    assert {(i.ip, i.status) for i in after.instances} == {("10.0.0.1", "DOWN"), ("10.0.0.3", "UP")}
    # A delta that missed a change (the server says UP_2_) does not match: the source then does a full fetch.
    stale = apply_delta(registry, Delta(delta.changes, "UP_2_"))
    assert not delta_matches(stale)


def test_empty_delta_keeps_registry_and_matches() -> None:
    registry = parse_applications(apps(instance("WEB", "10.0.0.1")))
    delta = parse_delta({"applications": {"versions__delta": "2", "apps__hashcode": "UP_1_",
                                          "application": []}})
    after = apply_delta(registry, delta)
    assert after.instances == registry.instances and delta_matches(after) and after.version == 2


@pytest.mark.parametrize(("body", "message"), [
    ([], "GET /eureka/apps: expected a JSON object, got list"),
    ({}, "GET /eureka/apps: no `applications` object"),
    ({"applications": None}, "GET /eureka/apps: applications: expected a JSON object, got null"),
    ({"applications": {"application": "WEB"}}, "applications.application: expected a JSON list or object"),
    ({"applications": {"application": [{"name": "WEB", "instance": [{"app": "WEB", "status": "UP"}]}]}},
     "applications.application[0].instance[0]: no `instanceId` and no `hostName`"),
    ({"applications": {"application": [{"name": "WEB", "instance": [7]}]}},
     "applications.application[0].instance[0]: expected a JSON object, got int"),
    ({"applications": {"application": [{"name": "WEB", "instance": [{"instanceId": "x"}]}]}},
     "applications.application[0].instance[0]: no `status`"),
])
def test_bad_full_fetch_raises_saying_where(body: object, message: str) -> None:
    with pytest.raises(EurekaParseError) as info:
        parse_applications(body)
    assert message in str(info.value)


def test_bad_delta_raises_saying_where() -> None:
    body = apps(instance("WEB", "10.0.0.1", action="RENAMED"))
    with pytest.raises(EurekaParseError) as info:
        parse_delta(body)
    where = "GET /eureka/apps/delta: applications.application[0].instance[0]"
    assert f"{where}: actionType 'RENAMED'" in str(info.value)
    no_hash = apps(instance("WEB", "10.0.0.1", action="ADDED"), hashcode="")
    with pytest.raises(EurekaParseError, match="apps__hashcode is missing"):
        parse_delta(no_hash)


def test_ports_as_plain_numbers_and_strings() -> None:
    raw = instance("WEB", "10.0.0.1")
    raw["port"] = {"$": "8081", "@enabled": "true"}
    registry = parse_applications(apps(raw))
    assert registry.instances[0].port == Port(8081, True)
    assert Registry((Instance("B", "2", "UP"), Instance("A", "1", "UP"))).instances[0].app == "A"


def test_real_server_answers() -> None:
    """Answers recorded from the Spring Cloud Netflix Eureka test server (tests/unit/data/eureka/README.md):
    ORDERS orders-1 UP and orders-2 OUT_OF_SERVICE, PAYMENTS payments-1 UP; then the delta: orders-1 DOWN,
    payments-2 registered STARTING, payments-1 cancelled."""
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data" / "eureka"
    full = parse_applications(json.loads((data / "apps_full.json").read_text()))
    assert full.hashcode == "OUT_OF_SERVICE_1_UP_2_" == reconcile_hashcode(full.instances)
    catalog = registry_catalog(full).catalog
    orders = catalog.get("orders")
    assert orders is not None
    assert {e.port: e.health for e in orders.endpoints} == {9001: Health.HEALTHY, 9002: Health.DRAINING}
    first = orders.endpoints[0]
    assert first.locality == Locality(zone="zone-a") and ("version", "v1") in first.metadata
    delta = parse_delta(json.loads((data / "apps_delta.json").read_text()))
    assert ("DELETED", ("PAYMENTS", "payments-1")) in [(c.action, c.instance.key) for c in delta.changes]
    after = apply_delta(full, delta)
    assert delta_matches(after) and after.hashcode == "DOWN_1_OUT_OF_SERVICE_1_STARTING_1_"
    # payments-1 is gone and payments-2 is only STARTING: nothing of PAYMENTS is left to route to.
    assert registry_catalog(after).catalog.get("payments") is None
