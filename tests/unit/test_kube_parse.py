"""Pure parts of the Kubernetes source: the mapping of Services and EndpointSlices (docs/protocol.md R35), the
TrafficPolicy judgements and status conditions, the resync hold, the configuration and the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from xds import cli, cli_kube
from xds.model.service import PROTOCOL_KEY, Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy import load
from xds.sources.kubernetes.client import (
    ENDPOINT_SLICES,
    SERVICES,
    TRAFFIC_POLICIES,
    KubeBadResponse,
    KubeConfig,
    KubeConfigError,
    KubeForbidden,
    KubeGone,
    KubeNotFound,
    KubeUnavailable,
    error_for_status,
    kubeconfig_paths,
    resolve_server,
)
from xds.sources.kubernetes.parse import (
    KubeParseError,
    KubeService,
    KubeSlice,
    ServicePort,
    SliceEndpoint,
    SlicePort,
    assemble_catalog,
    catalog_name,
    endpoint_health,
    is_logical_name,
    parse_service,
    parse_slice,
    port_names,
    service_endpoints,
)
from xds.sources.kubernetes.policies import (
    PolicyObject,
    TrafficPolicies,
    TrafficPolicyParseError,
    parse_traffic_policy,
)
from xds.sources.kubernetes.watcher import hold_removals

# ----------------------------------------------------------------------------------------- builders


def service(name: str = "web", namespace: str = "shop", *, ports: list[dict[str, Any]] | None = None,
            annotations: dict[str, str] | None = None, type_: str = "ClusterIP",
            cluster_ip: str = "10.0.0.10", external_name: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "clusterIP": cluster_ip,
                            "ports": ports if ports is not None else [{"port": 80, "targetPort": 8080,
                                                                       "protocol": "TCP"}]}
    if external_name:
        spec["externalName"] = external_name
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "1"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def ep(address: str | list[str], *, ready: bool | None = True, serving: bool | None = None,
       terminating: bool | None = None, zone: str = "") -> dict[str, Any]:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
                  if v is not None}
    out: dict[str, Any] = {"addresses": address if isinstance(address, list) else [address],
                           "conditions": conditions}
    if zone:
        out["zone"] = zone
    return out


def eslice(name: str, endpoints: list[dict[str, Any]], *, service_name: str = "web", namespace: str = "shop",
           ports: list[dict[str, Any]] | None = None, address_type: str = "IPv4") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name} if service_name else {}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": "1"},
            "ports": ports if ports is not None else [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def endpoints_of(svc: dict[str, Any], *slices: dict[str, Any]) -> dict[str, dict[tuple[str, int], Endpoint]]:
    result = service_endpoints(parse_service(svc), [parse_slice(s) for s in slices])
    return {name: {e.address: e for e in eps} for name, eps in result.services}


# ----------------------------------------------------------------------------------------- health


@pytest.mark.parametrize(("ready", "serving", "terminating", "expected"), [
    (True, True, False, Health.HEALTHY),
    (None, None, None, Health.HEALTHY),  # nil ready "should be interpreted as true"
    (True, None, None, Health.HEALTHY),
    (True, True, True, Health.HEALTHY),  # publishNotReadyAddresses: ready wins
    (False, True, True, Health.DRAINING),  # shutting down, still serving: let requests finish
    (False, None, True, Health.DRAINING),  # nil serving means true
    (False, False, True, None),  # terminating and no longer serving: out
    (False, True, False, None),  # not ready, not terminating (a failing readiness probe): out
    (False, True, None, None),  # nil terminating means false
    (False, None, None, None),
])
def test_endpoint_health_follows_the_conditions(ready: bool | None, serving: bool | None,
                                                terminating: bool | None, expected: Health | None) -> None:
    assert endpoint_health(ready=ready, serving=serving, terminating=terminating) is expected


# ------------------------------------------------------------------------------------------ names


def test_catalog_name_is_service_namespace_and_port_number() -> None:
    assert catalog_name("shop", "web", 80) == "web.shop:80"


@pytest.mark.parametrize(("ports", "annotations", "expected", "note"), [
    # One port: the default name, or the logical name when annotated.
    ([{"port": 80}], {}, {80: "web.shop:80"}, ""),
    ([{"port": 80}], {"xds.dev/service-name": "web"}, {80: "web"}, ""),
    # Two ports: one cluster each.
    ([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}], {},
     {80: "web.shop:80", 9090: "web.shop:9090"}, ""),
    # The logical name goes to the port named (by name or number) in xds.dev/service-port.
    ([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}],
     {"xds.dev/service-name": "web", "xds.dev/service-port": "grpc"}, {80: "web.shop:80", 9090: "web"}, ""),
    ([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}],
     {"xds.dev/service-name": "web", "xds.dev/service-port": "80"}, {80: "web", 9090: "web.shop:9090"}, ""),
    # Ambiguous: several ports and no xds.dev/service-port.
    ([{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}], {"xds.dev/service-name": "web"},
     {80: "web.shop:80", 9090: "web.shop:9090"}, "needs xds.dev/service-port"),
    ([{"name": "http", "port": 80}], {"xds.dev/service-name": "web", "xds.dev/service-port": "nope"},
     {80: "web.shop:80"}, "names no TCP port"),
    # Not a usable service name for policies.
    ([{"port": 80}], {"xds.dev/service-name": "Web_App!"}, {80: "web.shop:80"}, "ignored"),
    # UDP is skipped, and does not count as a second port for the logical name.
    ([{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "http", "port": 80}],
     {"xds.dev/service-name": "web"}, {80: "web"}, "53/UDP skipped"),
])
def test_port_names(ports: list[dict[str, Any]], annotations: dict[str, str], expected: dict[int, str],
                    note: str) -> None:
    names, notes = port_names(parse_service(service(ports=ports, annotations=annotations)))
    assert names == expected
    if note:
        assert any(note in n for n in notes), notes
    else:
        assert notes == ()


def test_logical_name_rule_is_the_policy_loaders_without_a_port() -> None:
    # A logical name is what other registries call the service (Consul has no ports in names), so it is
    # the loader's rule without the optional `:<port>` suffix the catalog names of Kubernetes use.
    for text in ("web", "web-v2", "a.b_c-d", "x" * 253, "Web", "-web", "web-", "web:80", "", "x" * 254):
        loader_ok = bool(load._NAME_RE.fullmatch(text)) and len(text) <= load.MAX_NAME_LENGTH
        assert is_logical_name(text) == (loader_ok and ":" not in text), text


# ------------------------------------------------------------------------------------- endpoints


def test_slices_join_their_service_by_port_name() -> None:
    svc = service(ports=[{"name": "http", "port": 80}, {"name": "admin", "port": 81}])
    piece = eslice("web-abc", [ep("10.1.0.1", zone="zone-a"), ep("10.1.0.2")],
                   ports=[{"name": "http", "port": 8080}, {"name": "admin", "port": 9901}])
    found = endpoints_of(svc, piece)
    assert set(found) == {"web.shop:80", "web.shop:81"}
    web = found["web.shop:80"][("10.1.0.1", 8080)]
    assert web.health is Health.HEALTHY
    assert web.locality == Locality(zone="zone-a")
    assert web.source == "kubernetes:shop/web-abc"
    assert web.weight == 1 and web.priority == 0
    assert dict(web.metadata) == {"registry": "kubernetes", "k8s.namespace": "shop", "k8s.service": "web"}
    assert set(found["web.shop:81"]) == {("10.1.0.1", 9901), ("10.1.0.2", 9901)}


def test_every_slice_of_a_service_is_merged_and_duplicates_removed() -> None:
    # While the controller moves an endpoint, it can sit in two slices (R35, F7): one copy is kept, the ready
    # one, and otherwise the one of the slice whose name sorts first.
    a = eslice("web-a", [ep("10.1.0.1", ready=False, serving=True, terminating=True), ep("10.1.0.2")])
    b = eslice("web-b", [ep("10.1.0.1"), ep("10.1.0.2"), ep("10.1.0.3")])
    found = endpoints_of(service(), b, a)["web.shop:80"]
    assert set(found) == {("10.1.0.1", 8080), ("10.1.0.2", 8080), ("10.1.0.3", 8080)}
    assert found[("10.1.0.1", 8080)].health is Health.HEALTHY
    assert found[("10.1.0.1", 8080)].source == "kubernetes:shop/web-b"
    assert found[("10.1.0.2", 8080)].source == "kubernetes:shop/web-a"  # first by name, whatever the order


def test_draining_copy_does_not_replace_a_ready_one() -> None:
    a = eslice("web-a", [ep("10.1.0.1")])
    b = eslice("web-b", [ep("10.1.0.1", ready=False, serving=True, terminating=True)])
    found = endpoints_of(service(), a, b)["web.shop:80"]
    assert found[("10.1.0.1", 8080)].health is Health.HEALTHY


def test_not_ready_endpoints_are_left_out_and_terminating_ones_drain() -> None:
    piece = eslice("web-a", [ep("10.1.0.1"), ep("10.1.0.2", ready=False),
                             ep("10.1.0.3", ready=False, serving=True, terminating=True),
                             ep("10.1.0.4", ready=False, serving=False, terminating=True)])
    found = endpoints_of(service(), piece)["web.shop:80"]
    assert {a: e.health for a, e in found.items()} == {("10.1.0.1", 8080): Health.HEALTHY,
                                                        ("10.1.0.3", 8080): Health.DRAINING}


@pytest.mark.parametrize(("svc_app", "slice_app", "http2"), [
    ("http2", "", True), ("grpc", "", True), ("kubernetes.io/h2c", "", True), ("h2c", "", True),
    ("", "kubernetes.io/h2c", True),  # the controller copies appProtocol to the slice port
    ("http", "", False), ("", "", False), ("kubernetes.io/ws", "", False),
    ("http", "grpc", False),  # the Service's own appProtocol wins
])
def test_app_protocol_marks_http2(svc_app: str, slice_app: str, http2: bool) -> None:
    port: dict[str, Any] = {"port": 80}
    if svc_app:
        port["appProtocol"] = svc_app
    slice_port: dict[str, Any] = {"name": "", "port": 8080}
    if slice_app:
        slice_port["appProtocol"] = slice_app
    found = endpoints_of(service(ports=[port]), eslice("web-a", [ep("10.1.0.1")], ports=[slice_port]))
    endpoint = found["web.shop:80"][("10.1.0.1", 8080)]
    assert endpoint.speaks_http2 is http2
    assert (dict(endpoint.metadata).get(PROTOCOL_KEY) == "http2") is http2


def test_only_the_first_address_counts_and_addresses_are_canonical() -> None:
    found = endpoints_of(service(), eslice("web-a", [ep(["10.1.0.1", "10.1.0.9"])]),
                         eslice("web-v6", [ep("2001:db8:0:0::1")], address_type="IPv6"))["web.shop:80"]
    assert set(found) == {("10.1.0.1", 8080), ("2001:db8::1", 8080)}


@pytest.mark.parametrize(("address_type", "address", "note"), [
    ("FQDN", "web.example.com", "addressType FQDN skipped"),
    ("IPv4", "not-an-ip", "is not an IPv4 address"),
    ("IPv4", "2001:db8::1", "is not an IPv4 address"),
    ("IPv6", "10.1.0.1", "is not an IPv6 address"),
])
def test_unusable_addresses_are_skipped_with_a_note(address_type: str, address: str, note: str) -> None:
    result = service_endpoints(parse_service(service()),
                               [parse_slice(eslice("web-a", [ep(address)], address_type=address_type)),
                                parse_slice(eslice("web-b", [ep("10.1.0.2")]))])
    assert dict(result.services)["web.shop:80"] == (Endpoint("10.1.0.2", 8080, metadata=(
        ("k8s.namespace", "shop"), ("k8s.service", "web"), ("registry", "kubernetes")),
        source="kubernetes:shop/web-b"),)
    assert any(note in n for n in result.skipped), result.skipped


def test_slice_ports_that_match_nothing_or_have_no_number_are_noted() -> None:
    piece = eslice("web-a", [ep("10.1.0.1")], ports=[{"name": "metrics", "port": 9100}, {"name": ""}])
    result = service_endpoints(parse_service(service()), [parse_slice(piece)])
    assert dict(result.services) == {"web.shop:80": ()}
    assert any("matches no TCP port" in n for n in result.skipped)
    assert any("has no port number" in n for n in result.skipped)


def test_headless_services_work_through_their_slices() -> None:
    found = endpoints_of(service(cluster_ip="None"), eslice("web-a", [ep("10.1.0.1")]))
    assert set(found["web.shop:80"]) == {("10.1.0.1", 8080)}


def test_external_name_becomes_a_dns_endpoint() -> None:
    ports = [{"name": "pg", "port": 5432}, {"name": "h2", "port": 8443, "appProtocol": "grpc"}]
    svc = service("db", ports=ports, type_="ExternalName", cluster_ip="", external_name="DB.Example.COM.")
    result = service_endpoints(parse_service(svc), [])
    assert result.skipped == ()
    found = dict(result.services)
    (pg,) = found["db.shop:5432"]
    assert (pg.host, pg.port, pg.is_dns_name) == ("db.example.com", 5432, True)
    assert dict(pg.metadata)["address_type"] == "fqdn"
    assert pg.source == "kubernetes:shop/db"
    (h2,) = found["db.shop:8443"]
    assert h2.speaks_http2


@pytest.mark.parametrize(("external_name", "ports", "note"), [
    ("bad name!", [{"port": 80}], "is not a DNS name"),
    ("db.example.com", [], "needs at least one TCP port"),
])
def test_unusable_external_names_are_noted(external_name: str, ports: list[dict[str, Any]],
                                           note: str) -> None:
    svc = service("db", ports=ports, type_="ExternalName", external_name=external_name)
    result = service_endpoints(parse_service(svc), [])
    assert all(eps == () for _, eps in result.services)
    assert any(note in n for n in result.skipped), result.skipped


def test_logical_name_carries_the_endpoints() -> None:
    svc = service(annotations={"xds.dev/service-name": "web"})
    assert set(endpoints_of(svc, eslice("web-a", [ep("10.1.0.1")]))) == {"web"}


@pytest.mark.parametrize(("obj", "message"), [
    ({"metadata": {"namespace": "shop"}, "spec": {}}, "without metadata.name"),
    ({"metadata": {"name": "web", "namespace": "shop"}}, "has no spec"),
])
def test_malformed_services_raise(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeParseError, match=message):
        parse_service(obj)


def test_parse_tolerates_odd_fields() -> None:
    parsed = parse_slice({"metadata": {"name": "s", "namespace": "n"}, "ports": [{"port": True}, "x"],
                          "endpoints": [{"addresses": []}, {"addresses": [7]}, "junk",
                                        {"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]})
    assert parsed == KubeSlice("n", "s", service_name="", address_type="IPv4",
                               ports=(SlicePort("", None), SlicePort("", None)),
                               endpoints=(SliceEndpoint("10.0.0.1"),))
    assert parse_service(service(ports=[{"port": 0}, {"port": "80"}, {"port": 81}])).ports == (
        ServicePort("", 81),)


def test_assemble_catalog_merges_logical_names_and_keeps_empty_services() -> None:
    old = service_endpoints(
        parse_service(service("web", "old", annotations={"xds.dev/service-name": "web"})),
        [parse_slice(eslice("web-1", [ep("10.1.0.1")], namespace="old"))])
    new = service_endpoints(
        parse_service(service("web", "new", annotations={"xds.dev/service-name": "web"})),
        [parse_slice(eslice("web-1", [ep("10.2.0.1"), ep("10.1.0.1")], namespace="new"))])
    empty = service_endpoints(parse_service(service("idle", "new")), [])
    catalog = assemble_catalog([new, old, empty])
    web = catalog.get("web")
    assert web is not None
    assert {(e.host, e.source) for e in web.endpoints} == {("10.1.0.1", "kubernetes:new/web-1"),
                                                            ("10.2.0.1", "kubernetes:new/web-1")}
    idle = catalog.get("idle.new:80")
    assert idle is not None and idle.endpoints == ()


# -------------------------------------------------------------------------------------------- hold


def test_hold_removals_puts_back_what_disappeared_and_lets_changes_through() -> None:
    a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    draining = Endpoint("10.0.0.1", 80, health=Health.DRAINING)
    new = Endpoint("10.0.0.3", 80)
    previous = Catalog((Service(ServiceName("web"), (a, b)), Service(ServiceName("gone"), (a,))))
    candidate = Catalog((Service(ServiceName("web"), (draining, new)),))
    held = hold_removals(previous, candidate)
    web = held.get("web")
    assert web is not None and set(web.endpoints) == {draining, b, new}
    assert held.get("gone") == Service(ServiceName("gone"), (a,))


# ---------------------------------------------------------------------------------------- policies


EDGE = {"services": [{"name": "web"}],
        "listeners": [{"name": "edge", "port": 10000, "routes": [{"backends": [{"service": "web"}]}]}]}
OTHER = {"services": [{"name": "api", "lb_policy": "random"}],
         "listeners": [{"name": "other", "port": 10001, "routes": [{"backends": [{"service": "api"}]}]}]}


def obj(name: str, spec: Any, *, generation: int = 1, namespace: str = "shop",
        conditions: list[dict[str, Any]] | None = None) -> PolicyObject:
    raw: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace, "generation": generation},
                           "spec": spec}
    if conditions is not None:
        raw["status"] = {"conditions": conditions}
    return parse_traffic_policy(raw)


def objects(*items: PolicyObject) -> dict[tuple[str, str], PolicyObject]:
    return {i.key: i for i in items}


def test_valid_policies_are_merged_and_accepted() -> None:
    policies = TrafficPolicies(source="kubernetes:https://k8s", clock=lambda: 0.0)
    outcome = policies.update(objects(obj("edge", EDGE), obj("other", OTHER)))
    assert outcome.changed and outcome.problems == ()
    assert [listener.name for listener in policies.policy.listeners] == ["edge", "other"]
    patches = policies.status_patches()
    assert [(p.name, p.condition.status, p.condition.reason) for p in patches] == [
        ("edge", "True", "Accepted"), ("other", "True", "Accepted")]
    assert patches[0].body() == {"conditions": [{
        "type": "Accepted", "status": "True", "reason": "Accepted", "message": "Valid and served",
        "observedGeneration": 1, "lastTransitionTime": "1970-01-01T00:00:00Z"}]}


def test_an_invalid_edit_keeps_the_previous_version_serving() -> None:
    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    policies.update(objects(obj("edge", EDGE)))
    served = policies.policy
    broken = {**EDGE, "listeners": [{"name": "edge", "port": 99999, "routes": []}]}
    outcome = policies.update(objects(obj("edge", broken, generation=2)))
    assert not outcome.changed and policies.policy == served
    assert len(outcome.problems) == 1
    assert "trafficpolicy:shop/edge: listeners[0].port: must be an integer between 1 and 65535" in \
        outcome.problems[0]
    (patch,) = policies.status_patches()
    assert (patch.condition.status, patch.condition.reason, patch.condition.observed_generation) == \
        ("False", "Invalid", 2)
    assert "listeners[0].routes: must list at least one route" in patch.condition.message
    assert "the previous valid version, generation 1, keeps serving" in patch.condition.message
    # The same problem is not reported twice.
    assert policies.update(objects(obj("edge", broken, generation=2))).problems == ()


def test_a_never_valid_policy_contributes_nothing() -> None:
    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    outcome = policies.update(objects(obj("bad", {"listeners": "nope"}), obj("other", OTHER)))
    assert [listener.name for listener in policies.policy.listeners] == ["other"]
    assert outcome.problems
    bad = next(p for p in policies.status_patches() if p.name == "bad")
    assert "keeps serving" not in bad.condition.message
    assert policies.update(objects(obj("bad", None), obj("other", OTHER))).problems[0].endswith(
        "the document is empty; expected a mapping with 'services' and/or 'listeners'")


def test_a_conflict_marks_both_invalid_and_keeps_the_previous_merge() -> None:
    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    policies.update(objects(obj("edge", EDGE), obj("other", OTHER), obj("web2", OTHER, namespace="z")))
    served = policies.policy
    clash = {"services": [{"name": "web"}],
             "listeners": [{"name": "clash", "port": 10000, "routes": [{"backends": [{"service": "web"}]}]}]}
    outcome = policies.update(objects(obj("edge", EDGE), obj("other", OTHER),
                                      obj("web2", clash, namespace="z")))
    assert not outcome.changed and policies.policy == served
    status = {p.key: p.condition for p in policies.status_patches()}
    assert status[("shop", "edge")].reason == "Invalid" and status[("z", "web2")].reason == "Invalid"
    assert "0.0.0.0:10000" in status[("z", "web2")].message
    # A bystander is valid but not served while the conflict holds the previous merge.
    assert status[("shop", "other")].status == "True"
    assert "not served yet" in status[("shop", "other")].message
    # Fixing it serves the new merge and clears the conflict.
    outcome = policies.update(objects(obj("edge", EDGE), obj("other", OTHER)))
    assert outcome.changed and policies.problems() == ()


def test_removed_policies_stop_serving_unless_held() -> None:
    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    policies.update(objects(obj("edge", EDGE), obj("other", OTHER)))
    assert not policies.update(objects(obj("other", OTHER)), keep_removed=True).changed
    assert policies.update(objects(obj("other", OTHER))).changed
    assert [listener.name for listener in policies.policy.listeners] == ["other"]


def test_status_is_written_only_when_the_condition_changes() -> None:
    clock = [100.0]
    policies = TrafficPolicies(source="k", clock=lambda: clock[0])
    policies.update(objects(obj("edge", EDGE)))
    (patch,) = policies.status_patches()
    written = patch.body()["conditions"]
    assert isinstance(written, list)
    # The object now carries our condition (seen through the watch): nothing more to write.
    policies.update(objects(obj("edge", EDGE, conditions=written)))
    assert policies.status_patches() == ()
    # A new generation with the same verdict: observedGeneration moves, lastTransitionTime stays.
    clock[0] = 200.0
    policies.update(objects(obj("edge", {**EDGE, "services": [{"name": "web", "lb_policy": "random"}]},
                                generation=2, conditions=written)))
    (patch,) = policies.status_patches()
    assert patch.condition.observed_generation == 2
    assert patch.condition.last_transition_time == "1970-01-01T00:01:40Z"
    # A verdict that flips gets a new lastTransitionTime.
    policies.update(objects(obj("edge", {"listeners": 1}, generation=3, conditions=written)))
    (patch,) = policies.status_patches()
    assert patch.condition.last_transition_time == "1970-01-01T00:03:20Z"


def test_long_messages_are_cut_to_the_condition_limit() -> None:
    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    many = {"services": [{"name": f"S{i}"} for i in range(2000)]}
    policies.update(objects(obj("big", many)))
    (patch,) = policies.status_patches()
    assert len(patch.condition.message) == 32768 and patch.condition.message.endswith("...")


def test_malformed_traffic_policy_raises() -> None:
    with pytest.raises(TrafficPolicyParseError):
        parse_traffic_policy({"metadata": {"name": "x"}})


# ------------------------------------------------------------------------------------- client bits


def test_resource_paths() -> None:
    assert SERVICES.path() == "/api/v1/services"
    assert SERVICES.path("shop") == "/api/v1/namespaces/shop/services"
    assert ENDPOINT_SLICES.path("shop") == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert TRAFFIC_POLICIES.path("shop", "edge", subresource="status") == \
        "/apis/xds.dev/v1alpha1/namespaces/shop/trafficpolicies/edge/status"


@pytest.mark.parametrize(("status", "kind"), [
    (401, KubeForbidden), (403, KubeForbidden), (404, KubeNotFound), (410, KubeGone), (429, KubeUnavailable),
    (500, KubeUnavailable), (503, KubeUnavailable), (400, KubeBadResponse), (422, KubeBadResponse),
])
def test_error_for_status(status: int, kind: type[Exception]) -> None:
    body = b'{"kind":"Status","message":"too old resource version"}'
    error = error_for_status("GET /x", status, payload=body, retry_after="3")
    assert type(error) is kind
    assert "too old resource version" in str(error)
    if isinstance(error, KubeUnavailable):
        assert error.retry_after_s == 3.0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"namespaces": ("Shop",)}, "invalid Kubernetes namespace"),
    ({"namespaces": ("a", "a")}, "listed twice"),
    ({"policy_namespaces": ("x" * 64,)}, "invalid Kubernetes namespace"),
    ({"in_cluster": True, "kubeconfig": "/k"}, "not both"),
    ({"watch_timeout_s": 0}, "must be positive"),
    ({"resync_grace_s": -1}, "must not be negative"),
    ({"backoff_initial_s": 5, "backoff_max_s": 1}, "backoff"),
    ({"page_size": 0}, "page_size"),
    ({"label_selector": "a=b\nc=d"}, "one line"),
])
def test_kube_config_validation(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KubeConfig(**overrides)


def test_source_name() -> None:
    assert KubeConfig(server="https://10.0.0.1:6443").source_name == "kubernetes:https://10.0.0.1:6443"
    assert KubeConfig(in_cluster=True).source_name == "kubernetes:in-cluster"
    assert KubeConfig("/etc/kube.yaml").source_name == "kubernetes:/etc/kube.yaml"


def write_kubeconfig(path: Path, *, current: str | None, contexts: dict[str, str], clusters: dict[str, str]
                     ) -> Path:
    import yaml

    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in clusters.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": "u"}} for n, c in contexts.items()],
        "users": [{"name": "u", "user": {"token": "t"}}]}
    if current is not None:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


def test_resolve_server_from_kubeconfig_files(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "a", current="one", contexts={"one": "c1"}, clusters={"c1": "https://a/"})
    second = write_kubeconfig(tmp_path / "b", current="two", contexts={"two": "c2", "one": "c2"},
                              clusters={"c2": "https://b"})
    assert resolve_server(KubeConfig(str(first))) == "https://a"
    # KUBECONFIG lists merge, the first file to set a key wins (kubectl's rule).
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    assert resolve_server(KubeConfig(), env=env) == "https://a"
    assert resolve_server(KubeConfig(context="two"), env=env) == "https://b"
    assert kubeconfig_paths(KubeConfig(), env={"HOME": str(tmp_path)})[0].name == "config"


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "no kubeconfig found"),
    ("no-current", "no current-context"),
    ("unknown-context", "no context 'nope'"),
    ("no-server", "names no cluster with a server"),
    ("broken", "cannot read kubeconfig"),
])
def test_resolve_server_problems(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "config"
    context = None
    if setup == "no-current":
        write_kubeconfig(path, current=None, contexts={"one": "c1"}, clusters={"c1": "https://a"})
    elif setup == "unknown-context":
        write_kubeconfig(path, current="one", contexts={"one": "c1"}, clusters={"c1": "https://a"})
        context = "nope"
    elif setup == "no-server":
        write_kubeconfig(path, current="one", contexts={"one": "c9"}, clusters={"c1": "https://a"})
    elif setup == "broken":
        path.write_text("clusters: [unclosed")
    with pytest.raises(KubeConfigError, match=message):
        resolve_server(KubeConfig(str(path), context=context))


def test_resolve_server_in_cluster() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert resolve_server(KubeConfig(in_cluster=True), env=env) == "https://[fd00::1]:443"
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        resolve_server(KubeConfig(in_cluster=True), env={})


# ------------------------------------------------------------------------------------ command line


def kube_args(env: dict[str, str], *argv: str) -> argparse.Namespace:
    return cli.build_parser(env).parse_args(["serve", *argv])


def test_cli_without_kubernetes_flags_has_no_kubernetes_source() -> None:
    assert cli_kube.config(kube_args({}), {}) is None


def test_cli_builds_the_kubernetes_config(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "k", current="one", contexts={"one": "c1"},
                            clusters={"c1": "https://10.0.0.1:6443"})
    args = kube_args({}, "--kubeconfig", str(path), "--kube-namespace", "a", "--kube-namespace", "b",
                     "--kube-label-selector", "mesh=xds", "--kube-policy-namespace", "ops",
                     "--kube-resync-grace", "5")
    config = cli_kube.config(args, {})
    assert config is not None
    assert (config.kubeconfig, config.server, config.namespaces, config.label_selector,
            config.policy_namespaces, config.resync_grace_s, config.policies) == (
        str(path), "https://10.0.0.1:6443", ("a", "b"), "mesh=xds", ("ops",), 5.0, True)


def test_cli_reads_the_kubernetes_environment(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "k", current="one", contexts={"one": "c1"}, clusters={"c1": "https://x"})
    env = {"kubeconfig": str(path), "kube_namespace": "a, b", "kube_policies": "false",
           "kube_label_selector": "app=web,tier=front"}
    config = cli_kube.config(kube_args(env), env)
    assert config is not None
    assert (config.namespaces, config.policies, config.label_selector) == (("a", "b"), False,
                                                                           "app=web,tier=front")
    assert not cli_kube.config(kube_args(env, "--no-kube-policies"), env).policies  # type: ignore[union-attr]


@pytest.mark.parametrize(("argv", "env", "message"), [
    (("--kube-in-cluster",), {}, "KUBERNETES_SERVICE_HOST"),
    (("--kubeconfig", "/nonexistent/kubeconfig"), {}, "no kubeconfig found"),
    (("--kube",), {"kube_namespace": "Bad"}, "invalid Kubernetes namespace"),
    ((), {"kube": "maybe"}, "expected true or false"),
])
def test_cli_rejects_bad_kubernetes_settings(argv: tuple[str, ...], env: dict[str, str], message: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit, match=message):
        cli_kube.config(kube_args(env, *argv), env)


def test_environment_names() -> None:
    from xds.settings import from_environment

    found = from_environment({"XDS_KUBECONFIG": "/k", "XDS_KUBE_IN_CLUSTER": "true", "XDS_KUBE": "1",
                              "XDS_KUBE_NAMESPACE": "a", "XDS_KUBE_POLICY_NAMESPACE": "b",
                              "XDS_KUBE_LABEL_SELECTOR": "x=y", "XDS_KUBE_POLICIES": "false",
                              "XDS_KUBE_CONTEXT": "c", "XDS_KUBE_RESYNC_GRACE_S": "3"})
    assert found == {"kubeconfig": "/k", "kube_in_cluster": "true", "kube": "1", "kube_namespace": "a",
                     "kube_policy_namespace": "b", "kube_label_selector": "x=y", "kube_policies": "false",
                     "kube_context": "c", "kube_resync_grace": "3"}


def test_a_service_from_the_kube_source_is_keyed_by_logical_or_default_name() -> None:
    svc = KubeService("shop", "web", ports=(ServicePort("", 80),))
    assert port_names(svc) == ({80: "web.shop:80"}, ())


def test_a_policy_can_route_to_a_default_kubernetes_name() -> None:
    spec = {"services": [{"name": "web.shop:80"}],
            "listeners": [{"name": "edge", "port": 10000,
                           "routes": [{"backends": [{"service": "web.shop:80"}]}]}]}
    load.policy_from_data(spec, where="trafficpolicy:shop/edge")
