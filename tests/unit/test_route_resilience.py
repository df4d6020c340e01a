"""Issue 8, per route: the retry policy, timeouts and hash policy, from YAML to the Envoy RouteAction.

Loader: located errors, defaults (unset = nothing emitted, Envoy's behaviour), the integer form of `retries`
unchanged; the cross-field rules; `xds validate`'s warning for a hash policy on a non-hashing service; and
the RouteAction each key becomes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2

from xds.cli import main
from xds.model.service import Catalog
from xds.policy.apply import apply_policy, explain_warnings
from xds.policy.desired import (
    HashPolicySpec,
    HashSource,
    RetrySpec,
    RouteConfigSpec,
    RouteSpec,
    VirtualHostSpec,
    WeightedClusterSpec,
)
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.schema import CookieHash, HashPolicy, Policy, RetryPolicy, RoutePolicy
from xds.translate.listeners import build_http_connection_manager
from xds.translate.routes import FAULT_FILTER_NAME, PREVIOUS_HOSTS, RETRY_ON, build_route_configuration

HEAD = """\
services:
  - {name: web, lb_policy: ring_hash}
  - {name: rr}
listeners:
  - name: edge
    port: 10000
    routes:
"""


def _policy(route: str) -> Policy:
    """A document whose one route is `route` (YAML indented as a list item under `routes:`)."""
    return parse_document(HEAD + textwrap.indent(textwrap.dedent(route).strip("\n"), "      "),
                          where="c.yaml")[1]


def _route(route: str) -> RoutePolicy:
    return _policy(route).listeners[0].routes[0]


def _errors(route: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        _policy(route)
    return [str(p) for p in info.value.problems]


def _action(route: str) -> route_components_pb2.RouteAction:
    state = apply_policy(Catalog(), _policy(route), group="g")
    return build_route_configuration(state.route_configs[0]).virtual_hosts[0].routes[0].route


# --- loader -------------------------------------------------------------------------------------------------


def test_integer_retries_unchanged() -> None:
    assert _route("- {retries: 2, backends: [{service: web}]}").retries == 2
    action = _action("- {retries: 2, backends: [{service: web}]}")
    assert (action.retry_policy.retry_on, action.retry_policy.num_retries.value) == (RETRY_ON, 2)
    assert _errors("- {retries: 11, backends: [{service: web}]}") == [
        "c.yaml:8:19: listeners[0].routes[0].retries: must be an integer between 0 and 10, got integer 11"]
    assert _errors("- {retries: '2', backends: [{service: web}]}") == [
        "c.yaml:8:19: listeners[0].routes[0].retries: must be an integer between 0 and 10, got '2'"]


def test_retry_mapping_defaults_leave_envoys() -> None:
    route = _route("- {retries: {}, backends: [{service: web}]}")
    assert route.retries == RetryPolicy()
    policy = _action("- {retries: {}, backends: [{service: web}]}").retry_policy
    # The same conditions as the integer form; everything else unset (Envoy: 1 retry, 25 ms, any host).
    assert policy.retry_on == RETRY_ON
    assert not policy.HasField("num_retries") and not policy.HasField("per_try_timeout")
    assert not policy.HasField("retry_back_off") and not policy.retry_host_predicate
    assert policy.host_selection_retry_max_attempts == 0 and not policy.retriable_status_codes


def test_retry_mapping_in_full() -> None:
    text = """
    - timeout: 5s
      retries:
        num_retries: 3
        retry_on: [gateway-error, retriable-status-codes, reset]
        per_try_timeout: 500ms
        backoff_base: 10ms
        backoff_max: 100ms
        retriable_status_codes: [503, 409]
        different_host: true
        host_selection_attempts: 4
      backends: [{service: web}]
    """
    assert _route(text).retries == RetryPolicy(
        num_retries=3, retry_on=("gateway-error", "retriable-status-codes", "reset"), per_try_timeout_s=0.5,
        backoff_base_s=0.01, backoff_max_s=0.1, retriable_status_codes=(503, 409), different_host=True,
        host_selection_attempts=4)
    policy = _action(text).retry_policy
    assert policy.retry_on == "gateway-error,retriable-status-codes,reset"
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.ToMilliseconds() == 500
    assert (policy.retry_back_off.base_interval.ToMilliseconds(),
            policy.retry_back_off.max_interval.ToMilliseconds()) == (10, 100)
    assert list(policy.retriable_status_codes) == [503, 409]
    (predicate,) = policy.retry_host_predicate
    assert predicate.name == PREVIOUS_HOSTS
    assert predicate.typed_config.Is(previous_hosts_pb2.PreviousHostsPredicate.DESCRIPTOR)
    assert policy.host_selection_retry_max_attempts == 4


@pytest.mark.parametrize(("route", "expected"), [
    ("- {retries: {retry_on: [5xx, 5XX]}, backends: [{service: web}]}",
     "c.yaml:8:36: listeners[0].routes[0].retries.retry_on[1]: must be one of"),
    ("- {retries: {retry_on: [5xx, 5xx]}, backends: [{service: web}]}",
     "c.yaml:8:36: listeners[0].routes[0].retries.retry_on[1]: duplicate '5xx'"),
    ("- {retries: {retry_on: [gateway_error]}, backends: [{service: web}]}",
     "did you mean 'gateway-error'?"),
    ("- {retries: {retry_on: []}, backends: [{service: web}]}",
     "c.yaml:8:30: listeners[0].routes[0].retries.retry_on: must list at least one Envoy retry "
     "condition"),
    ("- {retries: {num_retries: 11}, backends: [{service: web}]}",
     "c.yaml:8:33: listeners[0].routes[0].retries.num_retries: must be an integer between 0 and 10"),
    ("- {retries: {per_try_timeout: 0s}, backends: [{service: web}]}",
     "c.yaml:8:37: listeners[0].routes[0].retries.per_try_timeout: must be more than 0"),
    ("- {retries: {backoff_max: 1s}, backends: [{service: web}]}",
     "c.yaml:8:33: listeners[0].routes[0].retries.backoff_max: needs 'backoff_base'"),
    ("- {retries: {backoff_base: 2s, backoff_max: 1s}, backends: [{service: web}]}",
     "listeners[0].routes[0].retries.backoff_max: must be at least backoff_base (2s)"),
    ("- {retries: {retriable_status_codes: [503]}, backends: [{service: web}]}",
     "retriable_status_codes: only apply with 'retriable-status-codes' in retry_on"),
    ("- {retries: {retry_on: [retriable-status-codes], retriable_status_codes: [99]}, "
     "backends: [{service: web}]}",
     "retriable_status_codes[0]: must be an integer between 100 and 599, got integer 99"),
    ("- {retries: {host_selection_attempts: 2}, backends: [{service: web}]}",
     "host_selection_attempts: only applies with 'different_host: true'"),
    ("- {retries: {tries: 2}, backends: [{service: web}]}",
     "unknown key 'tries' in a retry policy"),
])
def test_retry_errors(route: str, expected: str) -> None:
    errors = _errors(route)
    assert len(errors) == 1 and expected in errors[0], errors


def test_per_try_timeout_longer_than_the_route_is_an_error() -> None:
    assert _errors("- {timeout: 1s, retries: {per_try_timeout: 2s}, backends: [{service: web}]}") == [
        "c.yaml:8:50: listeners[0].routes[0].retries.per_try_timeout: longer than the route's request "
        "timeout (1s): the attempt could never be cut and retried"]
    # Unset route timeout: Envoy's 15 s.
    assert "(15s, Envoy's default)" in _errors(
        "- {retries: {per_try_timeout: 20s}, backends: [{service: web}]}")[0]
    assert _route("- {timeout: 1s, retries: {per_try_timeout: 1s}, backends: [{service: web}]}")


def test_timeouts() -> None:
    route = _route("- {timeouts: {request: 2s, idle: 30s}, backends: [{service: web}]}")
    assert (route.timeout_s, route.idle_timeout_s) == (2.0, 30.0)
    action = _action("- {timeouts: {request: 2s, idle: 30s}, backends: [{service: web}]}")
    assert (action.timeout.ToSeconds(), action.idle_timeout.ToSeconds()) == (2, 30)
    assert _route("- {timeout: 3s, timeouts: {idle: 1m}, backends: [{service: web}]}").timeout_s == 3.0
    plain = _action("- {backends: [{service: web}]}")
    assert not plain.HasField("timeout") and not plain.HasField("idle_timeout")
    assert _errors("- {timeout: 3s, timeouts: {request: 2s}, backends: [{service: web}]}") == [
        "c.yaml:8:43: listeners[0].routes[0].timeouts.request: the request timeout is given twice: keep "
        "'timeout' or 'timeouts.request'"]
    assert "unknown key 'per_try' in route timeouts" in _errors(
        "- {timeouts: {per_try: 2s}, backends: [{service: web}]}")[0]
    assert "timeouts.idle: must be more than 0 and at most 3600s, got '61m'" in _errors(
        "- {timeouts: {idle: 61m}, backends: [{service: web}]}")[0]


def test_hash_policy() -> None:
    text = """
    - hash_policy:
        - {header: X-User}
        - {cookie: {name: session, ttl: 60m, path: /}, terminal: true}
        - {source_ip: true}
        - {query_parameter: user}
      backends: [{service: web}]
    """
    assert _route(text).hash_policy == (
        HashPolicy(header="x-user"), HashPolicy(cookie=CookieHash("session", 3600.0, "/"), terminal=True),
        HashPolicy(source_ip=True), HashPolicy(query_parameter="user"))
    header, cookie, source, query = _action(text).hash_policy
    assert header.header.header_name == "x-user" and not header.terminal
    assert (cookie.cookie.name, cookie.cookie.ttl.ToSeconds(), cookie.cookie.path, cookie.terminal) == (
        "session", 3600, "/", True)
    assert source.connection_properties.source_ip
    assert query.query_parameter.name == "user"
    # Without a ttl Envoy only hashes an existing cookie: no ttl is sent.
    (only,) = _action("- {hash_policy: [{cookie: {name: s}}], backends: [{service: web}]}").hash_policy
    assert not only.cookie.HasField("ttl") and only.cookie.path == ""


@pytest.mark.parametrize(("route", "expected"), [
    ("- {hash_policy: [{header: x, source_ip: true}], backends: [{service: web}]}",
     "c.yaml:8:24: listeners[0].routes[0].hash_policy[0]: a hash policy needs exactly one of 'header', "
     "'cookie', 'source_ip', 'query_parameter'; got 'header', 'source_ip'"),
    ("- {hash_policy: [{terminal: true}], backends: [{service: web}]}",
     "hash_policy[0]: a hash policy needs exactly one of"),
    ("- {hash_policy: [{source_ip: false}], backends: [{service: web}]}",
     "c.yaml:8:36: listeners[0].routes[0].hash_policy[0].source_ip: must be true"),
    ("- {hash_policy: [{header: 'a b'}], backends: [{service: web}]}",
     "hash_policy[0].header: must be an HTTP header name"),
    ("- {hash_policy: [{cookie: {ttl: 1s}}], backends: [{service: web}]}",
     "hash_policy[0].cookie: missing required key 'name' in a cookie hash"),
    ("- {hash_policy: [{cookie: {name: 'a;b'}}], backends: [{service: web}]}",
     "hash_policy[0].cookie.name: must be a cookie name"),
    ("- {hash_policy: [{cookie: {name: s, path: x}}], backends: [{service: web}]}",
     "hash_policy[0].cookie.path: must start with '/'"),
    ("- {hash_policy: [{query_parameter: 'a=b'}], backends: [{service: web}]}",
     "hash_policy[0].query_parameter: must be a query parameter name"),
    ("- {hash_policy: [], backends: [{service: web}]}",
     "hash_policy: must list at least one hash input"),
])
def test_hash_policy_errors(route: str, expected: str) -> None:
    errors = _errors(route)
    assert len(errors) == 1 and expected in errors[0], errors


def test_validate_warns_when_the_lb_policy_ignores_the_hash() -> None:
    hashing = _policy("- {hash_policy: [{header: x}], backends: [{service: web}]}")
    assert not [w for w in explain_warnings(Catalog(), hashing) if "hash_policy" in w]
    ignored = _policy("- {hash_policy: [{header: x}], backends: [{service: rr}]}")
    assert [w for w in explain_warnings(Catalog(), ignored) if "hash_policy" in w] == [
        "listener 'edge' route 'route-0': hash_policy has no effect on service 'rr', whose lb_policy is "
        "round_robin; use ring_hash or maglev for session affinity"]


def test_spec_without_new_keys_emits_nothing_new() -> None:
    spec = RouteSpec(name="r", backends=(WeightedClusterSpec("c", 100),),
                     retries=RetrySpec(retry_on=("5xx",)),
                     hash_policy=(HashPolicySpec(HashSource.SOURCE_IP),))
    config = build_route_configuration(RouteConfigSpec("rc", (VirtualHostSpec("v", routes=(spec,)),)))
    action = config.virtual_hosts[0].routes[0].route
    assert action.retry_policy.retry_on == "5xx" and not action.HasField("idle_timeout")
    assert action.hash_policy[0].connection_properties.source_ip


def test_xds_validate_prints_the_hash_warning_and_succeeds(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "c.yaml"
    route = "      - {hash_policy: [{cookie: {name: s, ttl: 60s}}], backends: [{service: rr}]}\n"
    catalog.write_text(HEAD.replace("- {name: rr}", "- {name: rr, endpoints: [{address: 10.0.0.1:80}]}")
                       + route)
    assert main(["validate", str(catalog)]) == 0
    captured = capsys.readouterr()
    warning = "listener 'edge' route 'route-0': hash_policy has no effect on service 'rr'"
    assert f"{catalog}: warning: {warning}" in captured.err
    assert "OK" in captured.out


def test_fault() -> None:
    text = """
    - fault: {delay: {duration: 250ms, percent: 10}, abort: {status: 503, percent: 5}}
      backends: [{service: web}]
    """
    state = apply_policy(Catalog(), _policy(text), group="g")
    assert state.listeners[0].fault_filter
    route = build_route_configuration(state.route_configs[0]).virtual_hosts[0].routes[0]
    fault = fault_pb2.HTTPFault()
    assert route.typed_per_filter_config[FAULT_FILTER_NAME].Unpack(fault)
    assert (fault.delay.fixed_delay.ToMilliseconds(), fault.delay.percentage.numerator) == (250, 10)
    assert (fault.abort.http_status, fault.abort.percentage.numerator) == (503, 5)
    assert fault.abort.percentage.denominator == percent_pb2.FractionalPercent.HUNDRED
    filters = [f.name for f in build_http_connection_manager(state.listeners[0]).http_filters]
    assert filters == [FAULT_FILTER_NAME, "envoy.filters.http.router"]
    # Without a fault anywhere on the listener, the chain is as before issue 8.
    calm = apply_policy(Catalog(), _policy("- {backends: [{service: web}]}"), group="g").listeners[0]
    assert not calm.fault_filter
    assert [f.name for f in build_http_connection_manager(calm).http_filters] == ["envoy.filters.http.router"]


@pytest.mark.parametrize(("route", "expected"), [
    ("- {fault: {}, backends: [{service: web}]}",
     "c.yaml:8:17: listeners[0].routes[0].fault: a fault needs 'delay', 'abort' or both"),
    ("- {fault: {abort: {status: 503}}, backends: [{service: web}]}",
     "listeners[0].routes[0].fault.abort: missing required key 'percent' in a fault abort"),
    ("- {fault: {abort: {status: 700, percent: 5}}, backends: [{service: web}]}",
     "c.yaml:8:34: listeners[0].routes[0].fault.abort.status: must be an integer between 200 and 599"),
    ("- {fault: {delay: {duration: 2m, percent: 5}}, backends: [{service: web}]}",
     "fault.delay.duration: must be more than 0 and at most 60s, got '2m'"),
    ("- {fault: {delay: {duration: 1s, percent: 101}}, backends: [{service: web}]}",
     "fault.delay.percent: must be an integer between 0 and 100, got integer 101"),
    ("- {fault: {abort: {status: 503, percent: 5, rate: 1}}, backends: [{service: web}]}",
     "unknown key 'rate' in a fault abort"),
])
def test_fault_errors(route: str, expected: str) -> None:
    errors = _errors(route)
    assert len(errors) == 1 and expected in errors[0], errors
