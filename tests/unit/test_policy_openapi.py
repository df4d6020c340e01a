"""The TrafficPolicy CRD's OpenAPI schema against the policy loader, in both directions.

- Every policy document the loader accepts (the examples, the compose policies, the documentation's
  snippets, and a document using every key) validates against the schema: the CRD never refuses a valid
  policy.
- Documents the loader rejects are rejected by the schema where OpenAPI can express the rule; the rules it
  cannot express are listed (loader-only), so adding one to the schema later shows up here.
- The schema is structural (the rules kube-apiserver enforces on a CRD), uses only the keywords the
  validator below implements, and deploy/crd-trafficpolicy.yaml is in sync with the generator.

The validator implements the subset of OpenAPI v3 that the schema uses, with kube-apiserver's semantics:
patterns are searched (unanchored, as Go's regexp.MatchString), unknown fields are refused as `kubectl apply`
does with its default strict field validation, and `x-kubernetes-list-type` map/set forbid duplicates.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xds.policy.errors import PolicyError
from xds.policy.load import policy_from_data
from xds.policy.openapi import CRD_NAME, GROUP, KIND, PLURAL, VERSION_NAME, crd, policy_schema, render_crd

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crd-trafficpolicy.yaml"

# ------------------------------------------------------------------------------------ the validator

_KEYWORDS = frozenset({
    "type", "description", "properties", "required", "items", "additionalProperties", "enum", "pattern",
    "maxLength", "minLength", "minimum", "maximum", "exclusiveMinimum", "minItems", "default", "format",
    "oneOf", "allOf", "anyOf",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
})


def _type_ok(kind: str, value: object) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise AssertionError(f"unknown type {kind}")


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _search(pattern: str, text: str) -> bool:
    # Go's `$` (without the m flag) matches only at the very end; Python's also before a final newline.
    return re.search(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern, text) is not None


def validate(schema: dict[str, Any], value: object, path: str = "") -> list[str]:
    """Problems of `value` against `schema`; [] when valid."""
    where = path or "<root>"
    if "type" in schema and not _type_ok(schema["type"], value):
        return [f"{where}: expected {schema['type']}, got {type(value).__name__}"]
    problems: list[str] = []
    if "enum" in schema and not any(_same(value, choice) for choice in schema["enum"]):
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not _search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: length {len(value)} out of bounds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and (value < schema["minimum"] or (
                schema.get("exclusiveMinimum") and value == schema["minimum"])):
            problems.append(f"{where}: {value} below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                problems.append(f"{where}: missing required {key!r}")
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                problems += validate(properties[key], item, child)
            elif isinstance(extra, dict):
                problems += validate(extra, item, child)
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{child}: unknown field (strict field validation)")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        for index, item in enumerate(value):
            problems += validate(schema["items"], item, f"{path}[{index}]")
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            seen = [repr(v) for v in value]
            if len(set(seen)) != len(seen):
                problems.append(f"{where}: duplicate entries in a set")
        elif list_type == "map":
            keys = [tuple(repr(v.get(k)) for k in schema["x-kubernetes-list-map-keys"])
                    for v in value if isinstance(v, dict)]
            if len(set(keys)) != len(keys):
                problems.append(f"{where}: duplicate map keys")
    if "oneOf" in schema:
        matching = sum(1 for option in schema["oneOf"] if not validate(option, value, path))
        if matching != 1:
            problems.append(f"{where}: matches {matching} of the oneOf alternatives, not exactly one")
    for option in schema.get("allOf", ()):
        problems += validate(option, value, path)
    # Inside a junctor, `properties` only constrains the keys it names (no pruning, no unknown fields).
    open_options = [{**option, "x-kubernetes-preserve-unknown-fields": True}
                    for option in schema.get("anyOf", ())]
    if open_options and all(validate(option, value, path) for option in open_options):
        problems.append(f"{where}: matches none of the anyOf alternatives")
    return problems


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`[]` for array items, `{}` for additionalProperties)."""
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}" if path else key)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.{{}}")


def value_paths(value: object, path: str = "") -> Iterator[str]:
    """Every path present in a document, in the notation of `walk`."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            yield child
            yield from value_paths(item, child)
    elif isinstance(value, list):
        for item in value:
            yield f"{path}[]"
            yield from value_paths(item, f"{path}[]")


# --------------------------------------------------------------------------------- the documents

EVERY_KEY = yaml.safe_load("""
version: 1
services:
  - {name: web, lb_policy: least_request, connect_timeout: 250ms, protocol: http2,
     outlier_detection: {consecutive_5xx: 3, consecutive_gateway_failure: 2, interval: 1s,
                         base_ejection_time: 30s, max_ejection_percent: 50, success_rate: false,
                         split_external_local_origin_errors: true},
     circuit_breakers: {max_connections: 100, max_pending_requests: 10, max_requests: 50,
                        retry_budget: {budget_percent: 25, min_retry_concurrency: 2}},
     health_check: {http: {path: /healthz, expected_statuses: [200, 204], host: web.internal},
                    interval: 2s, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2,
                    no_traffic_interval: 30s, port: 9901},
     load_balancer: {choice_count: 3, slow_start_window: 30s, healthy_panic_threshold: 25},
     upstream_connection: {idle_timeout: 5m, max_requests_per_connection: 100,
                           tcp_keepalive: {probes: 3, time: 60s, interval: 10}}}
  - {name: api, connect_timeout: 0.5, lb_policy: ring_hash, protocol: http1,
     load_balancer: {minimum_ring_size: 2048, maximum_ring_size: 4096},
     dns: {mode: logical, refresh_rate: 10s, respect_ttl: true, lookup_family: v4_only}}
  - {name: cart, lb_policy: maglev, load_balancer: {table_size: 131071}, mtls: strict,
     authorization: [{identities: [edge, "spiffe://xds.local/ns/ops"], prefix: /api, methods: [GET, POST]},
                     {identities: [web-v1]}]}
  - {name: db, outlier_detection: {}, circuit_breakers: {max_retries: 0}, health_check: {tcp: {}},
     locality: {failover: true, overprovisioning_factor: 200,
                weights: [{region: r1, zone: a, sub_zone: rack1, weight: 70}, {region: r2, weight: 30}]}}
  - {name: orders, protocol: http2, health_check: {grpc: {service: orders.v1.Orders}}}
  - {name: stock, protocol: http2, health_check: {grpc: {}}}
  - {name: payments-api, tls: {ca_file: /etc/xds/ca.pem, sni: api.payments.example,
                               subject_alt_names: [api.payments.example, "spiffe://example.org/payments"]}}
  - {name: search, lb_policy: client_side_weighted,
     load_balancer: {blackout_period: 2s, weight_expiration_period: 1m, weight_update_period: 250ms,
                     error_utilization_penalty: 0.5, oob_reporting: true, oob_reporting_period: 5s,
                     healthy_panic_threshold: 20}}
  # Last: the rules below name `search` as services.7.
  - {name: inventory, load_balancer: {weights: load_aware, orca_port: 9000}}
tracing: {address: 127.0.0.1, port: 4317, provider: opentelemetry, sampling: 12.5, service_name: edge,
          tags: [{name: env, literal: prod}, {name: user, header: X-User, default: "-"},
                 {name: host, environment: HOSTNAME, default: unknown}]}
listeners:
  - name: edge
    address: "::"
    port: 10000
    tracing: {address: "::1", port: 9411, provider: zipkin, sampling: 0, service_name: edge-zipkin,
              tags: [{name: route, literal: edge}, {name: ua, header: user-agent, default: none},
                     {name: pod, environment: POD}]}
    groups: [edge, "Edge Group 2"]
    domains: ["*.example.com", "example.com:8080", "*"]
    tls:
      certificates:
        - {cert_file: /etc/xds/shop.pem, key_file: /etc/xds/shop.key,
           server_names: [shop.example.com, "*.shop.example.com"]}
        - {cert_file: /etc/xds/default.pem, key_file: /etc/xds/default.key}
    routes:
      - name: api
        match:
          prefix: /api
          headers:
            - {name: X-Canary, exact: "yes"}
            - {name: x-debug, present: true, invert: true}
            - {name: ":authority", exact: "a.example.com", invert: false}
        timeout: 1.5s
        timeouts: {idle: 30s}
        retries: 2
        hash_policy:
          - {cookie: {name: session, ttl: 60m, path: /}}
          - {header: X-User, terminal: true}
          - {source_ip: true}
          - {query_parameter: user}
        fault: {delay: {duration: 100ms, percent: 5}, abort: {status: 503, percent: 1}}
        backends: [{service: api, subset: {version: v2, "k8s.namespace": shop}, weight: 100}]
      - backends:
          - {service: web, weight: 90}
          - {service: web, subset: {version: v1}, weight: 10}
  - {name: inbound, address: 127.0.0.1, port: 15001, groups: [web-v1],
     routes: [{name: local, timeout: 30, backends: [{service: web}]}]}
  - {name: cart-in, address: 127.0.0.1, port: 15002, inbound_for: cart,
     routes: [{backends: [{service: web}]}]}
""")


def _without_endpoints(document: Any) -> Any:
    """A file-format document as a policy-only one: endpoints come from registries there."""
    out = copy.deepcopy(document)
    for service in out.get("services") or ():
        if isinstance(service, dict):
            service.pop("endpoints", None)
    return out


def _yaml_blocks(path: Path) -> Iterator[Any]:
    for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S):
        for document in yaml.safe_load_all(block):
            if isinstance(document, dict):
                yield document


def accepted_documents() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = [("every key", EVERY_KEY)]
    found.append(("examples/catalog.yaml", _without_endpoints(
        yaml.safe_load((ROOT / "examples" / "catalog.yaml").read_text()))))
    for path in sorted((ROOT / "compose" / "policies").glob("*.yaml")):
        found.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    for index, document in enumerate(_yaml_blocks(ROOT / "docs" / "config.md")):
        if "services" in document or "listeners" in document:
            found.append((f"docs/config.md block {index}", _without_endpoints(document)))
    for index, document in enumerate(_yaml_blocks(ROOT / "docs" / "kubernetes.md")):
        if document.get("kind") == KIND:
            found.append((f"docs/kubernetes.md TrafficPolicy {index}", document["spec"]))
    variations = [
        {"services": []}, {"listeners": []}, {"version": 1, "services": [{"name": "a"}]},
        {"services": [{"name": "a", "connect_timeout": " 2s "}]},  # the loader strips whitespace
        {"services": [{"name": "a", "connect_timeout": 60}]},
        {"services": [{"name": "a", "connect_timeout": "1m"}]},
        {"services": [{"name": "a"}], "listeners": [{"name": "l", "port": 1, "routes": [
            {"timeouts": {"request": "2s"}, "backends": [{"service": "a"}],
             "retries": {"num_retries": 3, "retry_on": ["5xx", "retriable-status-codes"],
                         "per_try_timeout": "500ms", "backoff_base": "10ms", "backoff_max": 1,
                         "retriable_status_codes": [503, 504], "different_host": True,
                         "host_selection_attempts": 3}}]}]},
        # A listener for proxyless gRPC clients has no port (issue 11).
        {"services": [{"name": "a"}], "listeners": [{"name": "g", "kind": "grpc",
                                                    "routes": [{"backends": [{"service": "a"}]}]}]},
        {"services": [{"name": "a"}], "listeners": [{"name": "l", "port": 1, "address": "fe80::1%eth0",
                                                    "routes": [{"backends": [{"service": "a", "weight": 0},
                                                                             {"service": "a", "weight": 100,
                                                                              "subset": {"v": ""}}]}]}]},
        # Tracing (issue 14 item 2): every key at the top level, and a listener's own block.
        {"services": [{"name": "a"}],
         "tracing": {"address": "127.0.0.1", "port": 4317, "provider": "opentelemetry", "sampling": 12.5,
                     "service_name": "edge", "tags": [{"name": "env", "literal": "prod"},
                                                      {"name": "user", "header": "X-User", "default": "-"},
                                                      {"name": "host", "environment": "HOSTNAME"}]},
         "listeners": [{"name": "l", "port": 1, "routes": [{"backends": [{"service": "a"}]}],
                        "tracing": {"address": "::1", "port": 9411, "provider": "zipkin", "sampling": 0}}]},
    ]
    found += [(f"variation {i}", v) for i, v in enumerate(variations)]
    return found


ACCEPTED = accepted_documents()


def _edit(path: str, value: Any) -> Any:
    """EVERY_KEY with the value at a dotted path (list indexes as numbers) replaced; `...` deletes it."""
    document = copy.deepcopy(EVERY_KEY)
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = document
    for part in parts[:-1]:
        node = node[part]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return document


# Rejected by both the loader and the schema.
REJECTED: list[tuple[str, Any]] = [
    ("tracing sampling over 100", {**EVERY_KEY, "tracing": {"address": "127.0.0.1", "port": 4317,
                                                            "sampling": 100.5}}),
    ("tracing tag with two sources", {**EVERY_KEY, "tracing": {
        "address": "127.0.0.1", "port": 4317, "tags": [{"name": "a", "literal": "x", "header": "y"}]}}),
    ("tracing collector by host name", _edit("listeners.0.tracing", {"address": "jaeger", "port": 4317})),
    ("not a mapping", ["services"]),
    ("unknown top-level key", {**EVERY_KEY, "listenrs": []}),
    ("unknown service key", _edit("services.0.prot", "http2")),
    ("endpoints in a policy document", _edit("services.0.endpoints", [{"address": "10.0.0.1:80"}])),
    ("unknown listener key", _edit("listeners.0.hosts", ["a"])),
    ("unknown route key", _edit("listeners.0.routes.0.retry", 1)),
    ("unknown match key", _edit("listeners.0.routes.0.match.path", "/")),
    ("unknown header key", _edit("listeners.0.routes.0.match.headers.0.regex", "x")),
    ("unknown backend key", _edit("listeners.0.routes.0.backends.0.svc", "x")),
    ("version 2", _edit("version", 2)),
    ("version as text", _edit("version", "1")),
    ("services not a list", _edit("services", {"name": "web"})),
    ("service without a name", _edit("services.0.name", ...)),
    ("upper-case service name", _edit("services.0.name", "Web")),
    ("service name too long", _edit("services.0.name", "a" * 254)),
    ("unknown lb policy", _edit("services.0.lb_policy", "fastest")),
    ("unknown protocol", _edit("services.0.protocol", "http3")),
    ("unknown dns mode", _edit("services.1.dns.mode", "strict_dns")),
    ("unknown dns lookup family", _edit("services.1.dns.lookup_family", "v4")),
    ("unknown dns key", _edit("services.1.dns.ttl", True)),
    ("duration without a unit", _edit("services.0.connect_timeout", "250")),
    ("duration in words", _edit("services.0.connect_timeout", "5 seconds")),
    ("negative duration", _edit("services.0.connect_timeout", -1)),
    ("zero duration", _edit("services.0.connect_timeout", 0)),
    ("duration over the limit", _edit("services.0.connect_timeout", 61)),
    ("route timeout over an hour", _edit("listeners.0.routes.0.timeout", 3601)),
    ("duplicate service names", _edit("services.1.name", "web")),
    ("duplicate listener names", _edit("listeners.1.name", "edge")),
    ("listener without a port", _edit("listeners.0.port", ...)),
    ("http listener without a port", _edit("listeners.0", {"name": "x", "kind": "http", "routes": [
        {"backends": [{"service": "web"}]}]})),
    ("unknown listener kind", _edit("listeners.0.kind", "tcp")),
    ("listener without routes", _edit("listeners.0.routes", ...)),
    ("port 0", _edit("listeners.0.port", 0)),
    ("port too large", _edit("listeners.0.port", 65536)),
    ("port as text", _edit("listeners.0.port", "80")),
    ("address with a host name", _edit("listeners.0.address", "localhost")),
    ("empty groups", _edit("listeners.0.groups", [])),
    ("group with a control character", _edit("listeners.0.groups", ["a\tb"])),
    ("empty domains", _edit("listeners.0.domains", [])),
    ("duplicate domains", _edit("listeners.0.domains", ["a.com", "a.com"])),
    ("bad domain", _edit("listeners.0.domains", ["a b.com"])),
    ("empty routes", _edit("listeners.0.routes", [])),
    ("bad route name", _edit("listeners.0.routes.0.name", "API")),
    ("prefix without a slash", _edit("listeners.0.routes.0.match.prefix", "api")),
    ("prefix with a space", _edit("listeners.0.routes.0.match.prefix", "/a b")),
    ("retries over the limit", _edit("listeners.0.routes.0.retries", 11)),
    ("negative retries", _edit("listeners.0.routes.0.retries", -1)),
    ("route without backends", _edit("listeners.0.routes.0.backends", ...)),
    ("empty backends", _edit("listeners.0.routes.0.backends", [])),
    ("backend without a service", _edit("listeners.0.routes.0.backends.0.service", ...)),
    ("negative weight", _edit("listeners.0.routes.1.backends.0.weight", -5)),
    ("weight as text", _edit("listeners.0.routes.0.backends.0.weight", "100")),
    ("subset value with a comma", _edit("listeners.0.routes.0.backends.0.subset", {"version": "a,b"})),
    ("subset value not a string", _edit("listeners.0.routes.0.backends.0.subset", {"version": 2})),
    ("header name with a space", _edit("listeners.0.routes.0.match.headers.0.name", "x canary")),
    ("header with exact and present", _edit("listeners.0.routes.0.match.headers.0.present", True)),
    ("header with neither", _edit("listeners.0.routes.0.match.headers.0.exact", ...)),
    ("header present false", _edit("listeners.0.routes.0.match.headers.1.present", False)),
    ("header exact with a newline", _edit("listeners.0.routes.0.match.headers.0.exact", "a\nb")),
    ("invert as text", _edit("listeners.0.routes.0.match.headers.1.invert", "yes")),
    ("relative ca_file", _edit("services.6.tls.ca_file", "ca.pem")),
    ("tls without ca_file", _edit("services.6.tls.ca_file", ...)),
    ("sni with a port", _edit("services.6.tls.sni", "api.example:443")),
    ("empty subject_alt_names", _edit("services.6.tls.subject_alt_names", [])),
    ("listener tls without certificates", _edit("listeners.0.tls.certificates", ...)),
    ("certificate without key_file", _edit("listeners.0.tls.certificates.0.key_file", ...)),
    ("server name with a port", _edit("listeners.0.tls.certificates.0.server_names", ["a.com:443"])),
    ("error penalty above its bound", _edit("services.7.load_balancer.error_utilization_penalty", 101)),
    ("error penalty as text", _edit("services.7.load_balancer.error_utilization_penalty", "1")),
    ("oob_reporting as text", _edit("services.7.load_balancer.oob_reporting", "yes")),
]

# Rejected by the loader only: rules across fields or values that OpenAPI cannot express (openapi.py's
# module doc). Reported in the TrafficPolicy's status instead of at `kubectl apply`.
LOADER_ONLY: list[tuple[str, Any]] = [
    ("weights not summing to 100", _edit("listeners.0.routes.1.backends.0.weight", 80)),
    ("backend naming an undeclared service", _edit("listeners.0.routes.0.backends.0.service", "nope")),
    ("two listeners on one port", {**EVERY_KEY, "listeners": [
        EVERY_KEY["listeners"][0],
        {**EVERY_KEY["listeners"][1], "port": 10000, "address": "::", "groups": ["edge"]}]}),
    ("duplicate route names", _edit("listeners.0.routes.1.name", "api")),
    ("domains equal but for case", _edit("listeners.0.domains", ["a.com", "A.com"])),
    ("subset key with a comma", _edit("listeners.0.routes.0.backends.0.subset", {"a,b": "x"})),
    ("zero duration as text", _edit("services.0.connect_timeout", "0s")),
    ("duration as a boolean", _edit("services.0.connect_timeout", True)),
    ("address that is no IP", _edit("listeners.0.address", "1.2.3")),
    ("two default certificates", _edit("listeners.0.tls.certificates.0.server_names", ...)),
    ("server name claimed twice", _edit("listeners.0.tls.certificates.1.server_names", ["SHOP.example.com"])),
    ("weight update period under 100ms", _edit("services.7.load_balancer.weight_update_period", "50ms")),
    ("client-side knob on round robin", _edit("services.7.lb_policy", "round_robin")),
    ("dns refresh rate of 1ms", _edit("services.1.dns.refresh_rate", "1ms")),
]


# -------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(("name", "document"), ACCEPTED, ids=[n for n, _ in ACCEPTED])
def test_documents_the_loader_accepts_validate(name: str, document: Any) -> None:
    policy_from_data(document, where=name)  # the premise: the loader accepts it
    assert validate(policy_schema(), document) == []


@pytest.mark.parametrize(("name", "document"), REJECTED, ids=[n for n, _ in REJECTED])
def test_documents_the_loader_rejects_are_rejected(name: str, document: Any) -> None:
    with pytest.raises(PolicyError):
        policy_from_data(document, where=name)
    assert validate(policy_schema(), document) != []


@pytest.mark.parametrize(("name", "document"), LOADER_ONLY, ids=[n for n, _ in LOADER_ONLY])
def test_rules_only_the_loader_checks(name: str, document: Any) -> None:
    with pytest.raises(PolicyError):
        policy_from_data(document, where=name)
    assert validate(policy_schema(), document) == [], "the schema learned this rule: move it to REJECTED"


def test_every_schema_field_is_exercised_by_an_accepted_document() -> None:
    # Together with test_documents_the_loader_accepts_validate, every field of the schema is one the loader
    # accepts; with the unknown-key cases in REJECTED, the loader knows no field the schema lacks.
    present = {p for _, document in ACCEPTED for p in value_paths(document)}
    # A map's values (`subset.{}`) count as exercised when the map has any entry.
    fields = {path.removesuffix(".{}") for path, _ in walk(policy_schema()) if path}
    assert fields - present == set()


def _object_at(node: Any, parts: list[str]) -> Any:
    """The first object in `node` at the schema path `parts`, trying every item of a list ("[]"): keys that
    exclude each other (a health check's `http`, `tcp` and `grpc`) are in different items of EVERY_KEY."""
    if not parts:
        return node
    head, rest = parts[0], parts[1:]
    if head == "[]":
        for item in node:
            found = _object_at(item, rest)
            if found is not None:
                return found
        return None
    return _object_at(node[head], rest) if isinstance(node, dict) and head in node else None


def test_every_object_of_the_schema_refuses_unknown_keys_like_the_loader() -> None:
    objects = [path for path, node in walk(policy_schema()) if "properties" in node]
    for path in objects:
        document = copy.deepcopy(EVERY_KEY)
        parts = [p for p in path.replace("[]", ".[].").split(".") if p]
        node = _object_at(document, parts)
        assert node is not None, f"EVERY_KEY has no object at {path}"
        node["bogus"] = "x"
        with pytest.raises(PolicyError, match="unknown key 'bogus'"):
            policy_from_data(document, where=path or "<root>")
        assert any("bogus: unknown field" in p for p in validate(policy_schema(), document)), path


def test_schema_uses_only_keywords_the_validator_implements() -> None:
    for path, node in walk(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
        assert set(node) <= _KEYWORDS, (path, set(node) - _KEYWORDS)
        for option in node.get("oneOf", ()):
            assert set(option) <= {"required"}, path
        for junctor in node.get("allOf", ()):
            # A listener's `port` unless `kind: grpc` (issue 11): required and enum only, structural.
            assert set(junctor) == {"anyOf"}, path
            for option in junctor["anyOf"]:
                assert set(option) <= {"required", "properties"}, path
                assert all(set(v) == {"enum"} for v in option.get("properties", {}).values()), path


def test_schema_is_structural() -> None:
    # "Specifying a structural schema" (Kubernetes docs, CustomResourceDefinitions).
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        untyped = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert "type" in node or untyped, f"{path}: a structural schema needs a type"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties: false"
        assert not ("properties" in node and "additionalProperties" in node), path
        for junctor in ("oneOf", "anyOf", "allOf", "not"):
            for option in node.get(junctor, ()):
                forbidden = {"type", "description", "default", "additionalProperties", "nullable"}
                assert not forbidden & set(option), path
        if node.get("x-kubernetes-list-type") == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"].get("required", ())), path
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer", "number", "boolean"), path
        if "default" in node:
            assert validate({k: v for k, v in node.items() if k != "default"}, node["default"]) == [], path
        if "pattern" in node:
            re.compile(node["pattern"])
    assert root["properties"]["metadata"] == {"type": "object"}


def test_crd_shape() -> None:
    manifest = crd()
    assert manifest["metadata"]["name"] == CRD_NAME == f"{PLURAL}.{GROUP}" == "trafficpolicies.xds.dev"
    spec = manifest["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == ("xds.dev", "Namespaced", "TrafficPolicy")
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION_NAME, True, True)
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["properties"]["spec"] == policy_schema()


def test_status_schema_accepts_the_conditions_the_source_writes() -> None:
    from xds.sources.kubernetes.policies import PolicyObject, TrafficPolicies

    policies = TrafficPolicies(source="k", clock=lambda: 0.0)
    policies.update({("a", "bad"): PolicyObject("a", "bad", generation=3, spec={"listeners": 1}),
                     ("a", "good"): PolicyObject("a", "good", generation=1, spec={"services": []})})
    status = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    bodies = [p.body() for p in policies.status_patches()]
    assert len(bodies) == 2
    for body in bodies:
        assert validate(status, body) == []


def test_deployed_crd_is_in_sync_with_the_generator() -> None:
    assert CRD_FILE.read_text() == render_crd(), (
        "deploy/crd-trafficpolicy.yaml is stale: run `python -m xds.policy.openapi > "
        "deploy/crd-trafficpolicy.yaml`")
    assert yaml.safe_load(CRD_FILE.read_text()) == crd()
