"""Pure parts of the Consul source: mapping rules, index rules, KV policies, the resync hold, the config."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from xds.model.service import Catalog, Endpoint, Health, Locality, Service, ServiceName
from xds.policy.load import MAX_ENDPOINT_WEIGHT
from xds.sources.consul.client import ConsulConfig, advance_index, normalize_address
from xds.sources.consul.kv import KvEntry, KvPolicies, parse_kv_entries
from xds.sources.consul.parse import (
    ConsulParseError,
    ParseOptions,
    assemble_catalog,
    endpoint_metadata,
    endpoint_weight,
    instance_health,
    node_locality,
    parse_health,
    parse_service_names,
)
from xds.sources.consul.watcher import hold_removals


def check(status: str, check_id: str = "service:web-1", service_id: str = "web-1") -> dict[str, str]:
    return {"CheckID": check_id, "Status": status, "ServiceID": service_id}


SERF = check("passing", "serfHealth", "")


def entry(*, node: str = "n1", node_address: str = "10.0.0.1", service_id: str = "web-1",
          address: str = "", port: int = 8080, tags: list[str] | None = None,
          meta: dict[str, str] | None = None, node_meta: dict[str, str] | None = None,
          weights: dict[str, int] | None = None, kind: str = "", checks: list[dict[str, str]] | None = None,
          datacenter: str = "dc1") -> dict[str, Any]:
    service: dict[str, Any] = {"ID": service_id, "Service": "web", "Tags": tags or [], "Address": address,
                               "Meta": meta or {}, "Port": port, "Kind": kind}
    if weights is not None:
        service["Weights"] = weights
    node_fields = {"Node": node, "Address": node_address, "Datacenter": datacenter, "Meta": node_meta or {}}
    return {"Node": node_fields, "Service": service, "Checks": [SERF, *(checks or [])]}


# ------------------------------------------------------------------------------------------ health


@pytest.mark.parametrize(("checks", "warning_as", "expected"), [
    ([], Health.HEALTHY, Health.HEALTHY),  # no checks at all: Consul counts that as passing
    ([SERF, check("passing")], Health.HEALTHY, Health.HEALTHY),
    ([SERF, check("warning")], Health.HEALTHY, Health.HEALTHY),
    ([SERF, check("warning")], Health.DEGRADED, Health.DEGRADED),
    ([SERF, check("critical")], Health.HEALTHY, Health.UNHEALTHY),
    ([check("critical", "serfHealth", ""), check("passing")], Health.HEALTHY, Health.UNHEALTHY),  # node down
    ([SERF, check("warning"), check("critical", "other")], Health.DEGRADED, Health.UNHEALTHY),
    ([SERF, check("critical", "_service_maintenance:web-1")], Health.HEALTHY, Health.DRAINING),
    ([check("critical", "_node_maintenance", ""), SERF], Health.HEALTHY, Health.DRAINING),
    # Maintenance wins over a failing check: the operator's intent is the reason it is out.
    ([SERF, check("critical"), check("critical", "_service_maintenance:web-1")], Health.HEALTHY,
     Health.DRAINING),
    # Another instance's maintenance check does not apply (only this service id's).
    ([SERF, check("critical", "_service_maintenance:web-2")], Health.HEALTHY, Health.UNHEALTHY),
    ([SERF, check("bogus-status")], Health.HEALTHY, Health.UNHEALTHY),  # unknown state is not healthy
])
def test_instance_health(checks: list[dict[str, str]], warning_as: Health, expected: Health) -> None:
    assert instance_health(checks, service_id="web-1", warning_health=warning_as) is expected


@pytest.mark.parametrize(("weights", "health", "warning", "expected"), [
    (None, Health.HEALTHY, False, (1, Health.HEALTHY)),  # Consul's default weights are 1/1
    ({"Passing": 10, "Warning": 1}, Health.HEALTHY, False, (10, Health.HEALTHY)),
    ({"Passing": 10, "Warning": 3}, Health.HEALTHY, True, (3, Health.HEALTHY)),
    ({"Passing": 10, "Warning": 3}, Health.DEGRADED, True, (3, Health.DEGRADED)),
    # Weight 0 is "no traffic"; Envoy rejects 0, so the endpoint is served UNHEALTHY instead.
    ({"Passing": 0, "Warning": 1}, Health.HEALTHY, False, (1, Health.UNHEALTHY)),
    ({"Passing": 5, "Warning": 0}, Health.HEALTHY, True, (1, Health.UNHEALTHY)),
    ({"Passing": 0, "Warning": 0}, Health.DRAINING, False, (1, Health.DRAINING)),
    ({"Passing": 10**9}, Health.HEALTHY, False, (MAX_ENDPOINT_WEIGHT, Health.HEALTHY)),
    ({"Passing": "7"}, Health.HEALTHY, False, (1, Health.HEALTHY)),  # not a number: the default
])
def test_endpoint_weight(weights: dict[str, Any] | None, health: Health, warning: bool,
                         expected: tuple[int, Health]) -> None:
    assert endpoint_weight(weights, health=health, warning=warning) == expected


@pytest.mark.parametrize(("tags", "meta", "expected"), [
    ([], {}, ()),
    (["version=v2"], {}, (("version", "v2"),)),
    (["primary"], {}, (("tag.primary", "true"),)),
    (["a=b=c", "=odd"], {}, (("a", "b=c"), ("tag.=odd", "true"))),
    (["version=v1"], {"version": "v2"}, (("version", "v2"),)),  # Meta wins over a tag
    (["canary", "zone=a"], {"team": "x"}, (("tag.canary", "true"), ("team", "x"), ("zone", "a"))),
    ([], {"registry": "vm"}, (("registry", "vm"),)),  # an instance may say where it lives (Meta wins)
])
def test_endpoint_metadata(tags: list[str], meta: dict[str, str],
                           expected: tuple[tuple[str, str], ...]) -> None:
    # Every Consul instance is marked `registry: consul` unless its Meta says otherwise.
    defaults = {} if "registry" in meta else {"registry": "consul"}
    assert endpoint_metadata(tags, meta) == tuple(sorted({**defaults, **dict(expected)}.items()))


@pytest.mark.parametrize(("node_meta", "expected"), [
    ({}, Locality()),
    ({"zone": "z1", "region": "r1"}, Locality(region="r1", zone="z1")),
    ({"topology.kubernetes.io/zone": "kz", "topology.kubernetes.io/region": "kr"},
     Locality(region="kr", zone="kz")),
    ({"zone": "plain", "topology.kubernetes.io/zone": "k8s"}, Locality(zone="plain")),
    ({"sub_zone": "rack4", "zone": "z"}, Locality(zone="z", sub_zone="rack4")),
])
def test_node_locality(node_meta: dict[str, str], expected: Locality) -> None:
    assert node_locality(node_meta) == expected


def test_parse_health_maps_an_entry() -> None:
    result = parse_health([entry(address="10.1.1.1", port=9000, tags=["version=v2"],
                                 node_meta={"zone": "z1"}, weights={"Passing": 3, "Warning": 1})])
    assert result.endpoints == (Endpoint("10.1.1.1", 9000, weight=3, health=Health.HEALTHY,
                                         locality=Locality(zone="z1"),
                                         metadata=(("registry", "consul"), ("version", "v2")),
                                         source="consul:dc1"),)
    assert result.skipped == ()


def test_parse_health_falls_back_to_the_node_address() -> None:
    [endpoint] = parse_health([entry(node_address="10.9.9.9", address="")]).endpoints
    assert endpoint.host == "10.9.9.9"


def test_parse_health_normalizes_ipv6() -> None:
    [endpoint] = parse_health([entry(address="2001:db8:0::1")]).endpoints
    assert endpoint.host == "2001:db8::1"


def test_parse_health_priority_and_source_follow_the_datacenter() -> None:
    options = ParseOptions(priority=1, datacenter="dc2")
    [endpoint] = parse_health([entry(datacenter="ignored-when-configured")], options=options).endpoints
    assert (endpoint.priority, endpoint.source) == (1, "consul:dc2")


def test_parse_health_warning_uses_the_warning_weight_and_configured_health() -> None:
    options = ParseOptions(warning_health=Health.DEGRADED)
    [endpoint] = parse_health([entry(weights={"Passing": 10, "Warning": 2}, checks=[check("warning")])],
                              options=options).endpoints
    assert (endpoint.weight, endpoint.health) == (2, Health.DEGRADED)


@pytest.mark.parametrize("kind", ["connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway",
                                  "api-gateway"])
def test_parse_health_skips_connect_proxies_unless_asked(kind: str) -> None:
    body = [entry(kind=kind, service_id="web-sidecar", port=21000), entry(service_id="web-1", port=8080)]
    assert [e.port for e in parse_health(body).endpoints] == [8080]
    included = parse_health(body, options=ParseOptions(include_connect=True)).endpoints
    assert sorted(e.port for e in included) == [8080, 21000]


@pytest.mark.parametrize(("bad", "reason"), [
    ({"address": "web.internal"}, "not an IP address"),
    ({"port": 0}, "not in 1..65535"),
    ({"port": 70000}, "not in 1..65535"),
])
def test_parse_health_skips_unusable_entries_and_keeps_the_rest(bad: dict[str, Any], reason: str) -> None:
    body = [entry(service_id="bad", node="a", **bad), entry(service_id="good", node="b", address="10.0.0.2")]
    result = parse_health(body)
    assert [e.host for e in result.endpoints] == ["10.0.0.2"]
    assert len(result.skipped) == 1 and reason in result.skipped[0] and "bad" in result.skipped[0]


def test_parse_health_deduplicates_an_address() -> None:
    body = [entry(service_id="b", node="n2", address="10.0.0.5"), entry(service_id="a", node="n1",
                                                                          address="10.0.0.5")]
    result = parse_health(body)
    assert len(result.endpoints) == 1
    assert "already registered" in result.skipped[0]


@pytest.mark.parametrize("body", [{}, "x", None, 3])
def test_parse_health_rejects_a_wrong_shape(body: object) -> None:
    with pytest.raises(ConsulParseError):
        parse_health(body)


def test_parse_service_names() -> None:
    assert parse_service_names({"web": ["v1"], "api": [], "": []}) == {"web", "api"}
    with pytest.raises(ConsulParseError):
        parse_service_names(["web"])


def test_assemble_catalog_merges_datacenters_and_drops_empty_services() -> None:
    local = Endpoint("10.0.0.1", 80, source="consul:dc1")
    remote = Endpoint("10.1.0.1", 80, source="consul:dc2", priority=1)
    remote_dup = Endpoint("10.0.0.1", 80, source="consul:dc2", priority=1)
    catalog = assemble_catalog([("web", (local,)), ("gone", ()), ("web", (remote, remote_dup))])
    assert [s.name for s in catalog.services] == ["web"]
    web = catalog.get("web")
    assert web is not None and set(web.endpoints) == {local, remote}


# ------------------------------------------------------------------------------------------- index


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (0, 10, (10, False)),  # first read
    (10, 10, (10, False)),  # timeout or idempotent write: same index
    (10, 25, (25, False)),
    (500, 120, (0, True)),  # went backwards: reset to 0, full resync (F6a)
    (0, 0, (1, False)),  # 0 is never valid: use 1 so the next query blocks (F6b)
    (0, -7, (1, False)),
    (1, 0, (1, False)),
    (500, 0, (0, True)),  # 0 after a real index is also "went backwards"
])
def test_advance_index(previous: int, returned: int, expected: tuple[int, bool]) -> None:
    assert advance_index(previous, returned) == expected


# ---------------------------------------------------------------------------------------------- KV

POLICY_A = """\
services:
  - name: web
    lb_policy: least_request
listeners:
  - name: a
    port: 10000
    routes:
      - name: r
        backends: [{service: web}]
"""
POLICY_B = '{"services": [{"name": "api"}], "listeners": [{"name": "b", "port": 10001, ' \
           '"routes": [{"name": "r", "backends": [{"service": "api"}]}]}]}'
POLICY_B_CLASH = POLICY_B.replace('"name": "b"', '"name": "a"')


def kv(key: str, text: str | None) -> KvEntry:
    return KvEntry(key, None if text is None else text.encode())


def test_parse_kv_entries_decodes_base64_and_sorts() -> None:
    body = [{"Key": "xds/b", "Value": base64.b64encode(b"two").decode(), "ModifyIndex": 5},
            {"Key": "xds/a", "Value": base64.b64encode(b"one").decode()},
            {"Key": "xds/folder/", "Value": None}]
    assert parse_kv_entries(body) == (KvEntry("xds/a", b"one"), KvEntry("xds/b", b"two"),
                                      KvEntry("xds/folder/", None))
    assert parse_kv_entries(None) == ()
    with pytest.raises(ConsulParseError):
        parse_kv_entries({"Key": "x"})


def test_kv_policies_merge_in_key_order() -> None:
    policies = KvPolicies(prefix="xds/")
    outcome = policies.update([kv("xds/b", POLICY_B), kv("xds/a", POLICY_A), kv("xds/dir/", None)])
    assert outcome.changed and outcome.problems == ()
    assert [listener.name for listener in policies.policy.listeners] == ["a", "b"]
    assert policies.policy.origin == "consul-kv:xds/"
    assert not policies.update([kv("xds/b", POLICY_B), kv("xds/a", POLICY_A)]).changed


def test_kv_invalid_key_names_key_and_line_and_keeps_its_previous_version() -> None:
    policies = KvPolicies(prefix="xds/")
    policies.update([kv("xds/a", POLICY_A), kv("xds/b", POLICY_B)])
    broken = POLICY_A.replace("lb_policy: least_request", "lb_policy: fastest")
    outcome = policies.update([kv("xds/a", broken), kv("xds/b", POLICY_B)])
    assert not outcome.changed
    [problem] = outcome.problems
    assert problem.startswith("consul-kv:xds/a:3:")
    assert "previous valid version" in problem
    assert policies.policy.services[0].lb_policy.value == "least_request"
    # The same problem is not news twice; fixing it clears it.
    assert policies.update([kv("xds/a", broken), kv("xds/b", POLICY_B)]).problems == ()
    assert policies.update([kv("xds/a", POLICY_A), kv("xds/b", POLICY_B)]).problems == ()
    assert policies.problems() == ()


def test_kv_invalid_new_key_is_reported_and_left_out() -> None:
    policies = KvPolicies(prefix="xds/")
    outcome = policies.update([kv("xds/a", POLICY_A), kv("xds/new", "listeners: [")])
    assert [p.split(":")[1] for p in outcome.problems] == ["xds/new"]
    assert [listener.name for listener in policies.policy.listeners] == ["a"]


def test_kv_conflict_between_keys_keeps_the_previous_merge() -> None:
    policies = KvPolicies(prefix="xds/")
    policies.update([kv("xds/a", POLICY_A), kv("xds/b", POLICY_B)])
    before = policies.policy
    outcome = policies.update([kv("xds/a", POLICY_A), kv("xds/b", POLICY_B_CLASH)])
    assert not outcome.changed
    assert any("listener 'a'" in p for p in outcome.problems)
    assert policies.policy == before


def test_kv_removed_keys_are_dropped_unless_held() -> None:
    policies = KvPolicies(prefix="xds/")
    policies.update([kv("xds/a", POLICY_A), kv("xds/b", POLICY_B)])
    assert not policies.update([], keep_removed=True).changed
    assert len(policies.policy.listeners) == 2
    assert policies.update([]).changed
    assert policies.policy.listeners == ()


def test_kv_bad_base64_and_utf8_are_reported_with_the_key() -> None:
    body = [{"Key": "xds/x", "Value": "%%%not-base64"},
            {"Key": "xds/y", "Value": base64.b64encode(b"\xff\xfe").decode()}]
    policies = KvPolicies(prefix="xds/")
    problems = policies.update(parse_kv_entries(body)).problems
    assert [p.split(":")[1] for p in problems] == ["xds/x", "xds/y"]


# ------------------------------------------------------------------------------------ resync hold


def svc(name: str, *endpoints: Endpoint) -> Service:
    return Service(ServiceName(name), endpoints)


A1 = Endpoint("10.0.0.1", 80, source="consul:dc1")
A2 = Endpoint("10.0.0.2", 80, source="consul:dc1")


@pytest.mark.parametrize(("previous", "candidate", "expected"), [
    # Consul came back empty: everything is held.
    (Catalog((svc("a", A1, A2),)), Catalog(), Catalog((svc("a", A1, A2),))),
    # An endpoint missing: held; a new one: added.
    (Catalog((svc("a", A1),)), Catalog((svc("a", A2),)), Catalog((svc("a", A1, A2),))),
    # A superset passes unchanged.
    (Catalog((svc("a", A1),)), Catalog((svc("a", A1, A2), svc("b", A1))),
     Catalog((svc("a", A1, A2), svc("b", A1)))),
    # Routable -> UNHEALTHY is held (agents re-register checks as critical after a restart).
    (Catalog((svc("a", A1),)), Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.UNHEALTHY,
                                                          source="consul:dc1")),)),
     Catalog((svc("a", A1),))),
    # Other changes go through: draining, weights, metadata.
    (Catalog((svc("a", A1),)), Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.DRAINING,
                                                          weight=5, source="consul:dc1")),)),
     Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.DRAINING, weight=5, source="consul:dc1")),))),
    # Unhealthy before and after: nothing to hold.
    (Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.UNHEALTHY)),)),
     Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.UNHEALTHY, weight=2)),)),
     Catalog((svc("a", Endpoint("10.0.0.1", 80, health=Health.UNHEALTHY, weight=2)),))),
])
def test_hold_removals(previous: Catalog, candidate: Catalog, expected: Catalog) -> None:
    assert hold_removals(previous, candidate) == expected


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("given", "expected"), [
    ("127.0.0.1:8500", "http://127.0.0.1:8500"),
    ("http://localhost:8500/", "http://localhost:8500"),
    ("https://consul.example:8501", "https://consul.example:8501"),
    ("http://[::1]:8500", "http://[::1]:8500"),
])
def test_normalize_address(given: str, expected: str) -> None:
    assert normalize_address(given) == expected


@pytest.mark.parametrize("bad", ["ftp://x:1", "http://", "http://h:99999", "http://h:1/v1", "http://u@h:1"])
def test_normalize_address_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="Consul address"):
        normalize_address(bad)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"consistency": "eventual"}, "consistency"),
    ({"warning_health": "sick"}, "warning health"),
    ({"wait_s": 601.0}, "wait_s"),
    ({"wait_s": 0.0}, "wait_s"),
    ({"burst": 0}, "burst"),
    ({"rate_per_s": 0.0}, "rate_per_s"),
    ({"resync_grace_s": -1.0}, "resync_grace_s"),
    ({"datacenters": ("dc1", "dc1")}, "twice"),
    ({"datacenters": ("dc 1",)}, "datacenter"),
    ({"key_file": Path("k.pem")}, "certificate file"),
    ({"ca_file": Path("ca.pem")}, "https"),
    ({"kv_prefix": "/"}, "KV prefix"),
])
def test_config_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsulConfig("http://127.0.0.1:8500", **kwargs)


def test_config_normalizes_and_hides_the_token() -> None:
    config = ConsulConfig("127.0.0.1:8500", token="s3cr3t", kv_prefix="/xds/policies")
    assert config.address == "http://127.0.0.1:8500"
    assert config.kv_prefix == "xds/policies/"
    assert "s3cr3t" not in repr(config)
    assert config.blocking_timeout_s == pytest.approx(60 + 60 / 16 + 10)


# ------------------------------------------------------------------------------- settings and CLI


def _serve_args(argv: list[str], env: dict[str, str]) -> ConsulConfig | None:
    from xds.cli import build_parser
    from xds.cli_consul import config as _consul_config

    return _consul_config(build_parser(env).parse_args(["serve", *argv]), env)


def test_cli_without_an_address_has_no_consul_source() -> None:
    assert _serve_args([], {}) is None


def test_cli_builds_the_consul_config_from_flags(tmp_path: Path) -> None:
    token_file = tmp_path / "consul.token"
    token_file.write_text("tok\n")
    config = _serve_args(["--consul-address", "127.0.0.1:8500", "--consul-token-file", str(token_file),
                          "--consul-datacenter", "dc1", "--consul-datacenter", "dc2",
                          "--consul-consistency", "stale", "--consul-kv-prefix", "xds",
                          "--consul-warning-as", "degraded", "--consul-include-connect",
                          "--consul-resync-grace", "5"], {})
    assert config is not None
    assert (config.address, config.token, config.datacenters, config.consistency, config.kv_prefix,
            config.warning_health, config.include_connect, config.resync_grace_s) == (
        "http://127.0.0.1:8500", "tok", ("dc1", "dc2"), "stale", "xds/", "degraded", True, 5.0)


def test_cli_takes_consul_settings_from_the_environment() -> None:
    from xds.settings import from_environment

    env = from_environment({"XDS_CONSUL_ADDRESS": "https://consul:8501", "CONSUL_HTTP_TOKEN": "from-consul",
                            "XDS_CONSUL_DATACENTER": "east, west", "XDS_CONSUL_INCLUDE_CONNECT": "true",
                            "XDS_CONSUL_CA_FILE": "/etc/ca.pem"})
    config = _serve_args([], env)
    assert config is not None
    assert (config.address, config.token, config.datacenters, config.include_connect, config.ca_file) == (
        "https://consul:8501", "from-consul", ("east", "west"), True, Path("/etc/ca.pem"))
    # XDS_CONSUL_TOKEN wins over Consul's own variable.
    both = from_environment({"XDS_CONSUL_TOKEN": "ours", "CONSUL_HTTP_TOKEN": "theirs"})
    assert both["consul_token"] == "ours"


def test_cli_reports_a_bad_consul_value() -> None:
    with pytest.raises(SystemExit, match="Consul: TLS options"):
        _serve_args(["--consul-address", "http://127.0.0.1:8500", "--consul-ca-file", "/ca.pem"], {})


def test_serve_needs_some_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from xds.cli import main

    for var in ("XDS_CONFIG", "XDS_CONSUL_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit, match=r"--config.*--consul-address"):
        main(["serve"])


def test_app_adds_consul_after_the_files() -> None:
    from xds.app import App
    from xds.settings import Settings

    app = App(Settings(config_files=(Path("/tmp/a.yaml"),), consul=ConsulConfig("127.0.0.1:8500")))
    assert [s.name for s in app.sources] == ["file:/tmp/a.yaml", "consul:http://127.0.0.1:8500"]
    consul_only = App(Settings(consul=ConsulConfig("127.0.0.1:8500")))
    assert [s.name for s in consul_only.sources] == ["consul:http://127.0.0.1:8500"]
