from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from xds.model.service import Endpoint, Health, Locality
from xds.policy.desired import LbPolicy
from xds.policy.errors import PolicyError, Problem
from xds.policy.load import load_file, parse_document, parse_policy, policy_from_data
from xds.policy.reader import read_document_file
from xds.policy.schema import (
    BackendRef,
    HeaderMatch,
    ListenerPolicy,
    Policy,
    RoutePolicy,
    ServicePolicy,
    merge_policies,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems_of(text: str, where: str = "catalog.yaml") -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as info:
        parse_document(doc(text), where=where)
    return info.value.problems


# Each case: a document, then the line of the (first) problem and a fragment of its message.
ERROR_CASES = {
    "syntax error": (
        """
        services:
          - name: web
            lb_policy: round_robin: maglev
        listeners: []
        """,
        3, "invalid YAML: mapping values are not allowed",
    ),
    "unknown key with suggestion": (
        """
        services:
          - name: web
            prot: http2
        """,
        3, "unknown key 'prot' in service 'web'; did you mean 'protocol'?",
    ),
    "unknown top-level key": (
        """
        service:
          - name: web
        """,
        1, "did you mean 'services'?",
    ),
    "bad address (no port)": (
        """
        services:
          - name: web
            endpoints:
              - address: 127.0.0.1
        """,
        4, "must be host:port",
    ),
    "bad address (host name)": (
        """
        services:
          - name: web
            endpoints:
              - address: "exa mple:8080"
        """,
        4, "must be an IP address or an RFC 1123 host name",
    ),
    "bad address (mistyped IPv4)": (
        """
        services:
          - name: web
            endpoints:
              - address: 10.0.0.300:8080
        """,
        4, "last label is all digits",
    ),
    "bad address (unbracketed IPv6)": (
        """
        services:
          - name: web
            endpoints:
              - address: ::1:8080
        """,
        4, "in brackets",
    ),
    "bad address (port range)": (
        """
        services:
          - name: web
            endpoints:
              - address: 10.0.0.1:70000
        """,
        4, "port must be a number from 1 to 65535",
    ),
    "duplicate service": (
        """
        services:
          - name: web
          - name: api
          - name: web
        """,
        4, "duplicate service 'web' (first at line 2)",
    ),
    "duplicate endpoint (IPv6 spelled two ways)": (
        """
        services:
          - name: web
            endpoints:
              - address: "[::1]:8081"
              - address: "[0:0::1]:8081"
        """,
        5, "duplicate endpoint [::1]:8081 in service 'web' (first at line 4)",
    ),
    "bad endpoint weight": (
        """
        services:
          - name: web
            endpoints:
              - address: 127.0.0.1:8081
                weight: 0
        """,
        5, "weight: must be an integer between 1 and 10000, got integer 0",
    ),
    "bad backend weight": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends:
                  - service: web
                    weight: ten
        """,
        7, "backends[0].weight: must be an integer >= 0, got 'ten'",
    ),
    "negative backend weight": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends: [{service: web, weight: -5}]
        """,
        5, "must be an integer >= 0, got integer -5",
    ),
    "bad duration": (
        """
        services:
          - name: web
            connect_timeout: fast
        """,
        3, "must be a duration such as '250ms'",
    ),
    "duration out of range": (
        """
        services:
          - name: web
            connect_timeout: 2m
        """,
        3, "at most 60s",
    ),
    "zero duration": (
        """
        services:
          - name: web
            connect_timeout: 0s
        """,
        3, "more than 0",
    ),
    "missing backends": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - name: all
                match: {prefix: /}
        """,
        5, "missing required key 'backends' in route 'all' of listener 'ingress'",
    ),
    "empty backends": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends: []
        """,
        5, "must list at least one backend",
    ),
    "weights summing to 0": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends:
                  - {service: web, weight: 0}
                  - {service: api, weight: 0}
        services: [{name: web}, {name: api}]
        """,
        6, "backend weights are percentages and must sum to 100, got 0 (0 + 0)",
    ),
    "weights summing to 90": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends:
                  - {service: web, weight: 80}
                  - {service: api, weight: 10}
        services: [{name: web}, {name: api}]
        """,
        6, "must sum to 100, got 90 (80 + 10)",
    ),
    "unknown service with suggestion": (
        """
        listeners:
          - name: ingress
            port: 10000
            routes:
              - backends:
                  - {service: wbe}
        services: [{name: web}]
        """,
        6, "unknown service 'wbe': declare it under `services:`",
    ),
    "metadata non-string": (
        """
        services:
          - name: web
            endpoints:
              - address: 127.0.0.1:8081
                metadata: {version: 2}
        """,
        5, "metadata.version: must be a string, got integer 2; quote it",
    ),
    "duplicate listener port in a group": (
        """
        listeners:
          - name: a
            address: 127.0.0.1
            port: 10000
            groups: [frontend, backend]
            routes: [{backends: [{service: web}]}]
          - name: b
            address: 127.0.0.1
            port: 10000
            groups: [frontend]
            routes: [{backends: [{service: web}]}]
        services: [{name: web}, {name: api}]
        """,
        9, "127.0.0.1:10000 is already used by listener 'a' (first at line 4) in node group 'frontend'",
    ),
    "duplicate listener port for every group": (
        """
        listeners:
          - {name: a, port: 10000, routes: [{backends: [{service: web}]}]}
          - {name: b, port: 10000, groups: [edge], routes: [{backends: [{service: web}]}]}
        services: [{name: web}, {name: api}]
        """,
        3, "0.0.0.0:10000 is already used by listener 'a'",
    ),
    "duplicate mapping key": (
        """
        services:
          - name: web
            lb_policy: random
            lb_policy: maglev
        """,
        4, "duplicate key 'lb_policy' (first at line 3)",
    ),
    "duplicate listener": (
        """
        listeners:
          - {name: a, port: 10000, routes: [{backends: [{service: web}]}]}
          - {name: a, port: 10001, routes: [{backends: [{service: web}]}]}
        """,
        3, "duplicate listener 'a' (first at line 2)",
    ),
    "duplicate route name (explicit vs default)": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - backends: [{service: web}]
              - name: route-0
                backends: [{service: web}]
        """,
        6, "duplicate route name 'route-0' in listener 'a'",
    ),
    "bad lb_policy": (
        """
        services:
          - name: web
            lb_policy: roundrobin
        """,
        3, "must be one of round_robin, least_request, random, ring_hash, maglev, client_side_weighted; got "
           "'roundrobin'; did you mean 'round_robin'?",
    ),
    "bad service name": (
        """
        services:
          - name: Web_Front
        """,
        2, "must be lowercase letters",
    ),
    "unsupported version": (
        """
        version: 2
        services: []
        """,
        1, "unsupported version integer 2; only 1 is supported",
    ),
    "empty document": ("", 1, "the document is empty"),
    "document not a mapping": ("- a\n- b\n", 1, "the document must be a mapping, got a list"),
    "null list": (
        """
        services:
        """,
        1, "must be a list, got nothing (null) (write [] for none)",
    ),
    "prefix without slash": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - match: {prefix: api}
                backends: [{service: web}]
        """,
        5, "must start with '/'",
    ),
    "header with exact and present": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - match:
                  headers:
                    - {name: x-canary, exact: "yes", present: true}
                backends: [{service: web}]
        """,
        7, "exactly one of 'exact' or 'present'",
    ),
    "header exact unquoted yes": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - match:
                  headers: [{name: x-canary, exact: yes}]
                backends: [{service: web}]
        """,
        6, "must be a string, got boolean true; quote it",
    ),
    "control character in header value": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - match:
                  headers: [{name: x-a, exact: "a\\r\\nb"}]
                backends: [{service: web}]
        """,
        6, "must not contain control characters",
    ),
    "retries out of range": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - retries: 11
                backends: [{service: web}]
        """,
        5, "must be an integer between 0 and 10",
    ),
    "empty groups": (
        """
        listeners:
          - name: a
            port: 10000
            groups: []
            routes: [{backends: [{service: web}]}]
        """,
        4, "must list at least one group",
    ),
    "listener address not an IP": (
        """
        listeners:
          - name: a
            address: example.com
            port: 10000
            routes: [{backends: [{service: web}]}]
        """,
        3, "must be an IP address",
    ),
    "subset value with separator": (
        """
        listeners:
          - name: a
            port: 10000
            routes:
              - backends: [{service: web, subset: {version: "v1,v2"}}]
        """,
        5, "must not contain whitespace, ',', '=', '|'",
    ),
    "unsupported tag": (
        """
        services:
          - name: !!python/name:os.system web
        """,
        2, "unsupported YAML tag",
    ),
    "merge key": (
        """
        services:
          - <<: {name: web}
        """,
        2, "merge keys ('<<') are not supported",
    ),
    "control character in the file": ("services:\n  - \x07\n", 2, "unacceptable character #x0007"),
    "date-like metadata value": (
        """
        services:
          - name: web
            endpoints:
              - {address: 127.0.0.1:1, metadata: {since: 2024-01-05}}
        """,
        4, "must be a string, got date 2024-01-05; quote it",
    ),
    "raw Envoy config is not a key": (
        """
        services:
          - name: web
            typed_config: {"@type": x}
        """,
        3, "unknown key 'typed_config' in service 'web'",
    ),
    "duplicate domain": (
        """
        listeners:
          - name: a
            port: 10000
            domains: [example.com, EXAMPLE.com]
            routes: [{backends: [{service: web}]}]
        """,
        4, "duplicate domain 'EXAMPLE.com'",
    ),
}


@pytest.mark.parametrize(("text", "line", "fragment"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_cases(text: str, line: int, fragment: str) -> None:
    problems = problems_of(text)
    matching = [p for p in problems if fragment in p.message]
    assert matching, f"no problem mentions {fragment!r}: {[str(p) for p in problems]}"
    assert matching[0].line == line
    assert all(p.where == "catalog.yaml" for p in problems)


def test_rendering_has_file_line_column_and_path() -> None:
    text = """
    listeners:
      - name: ingress
        port: 10000
        routes:
          - backends:
              - {service: web, weight: 1}
              - service: web
                weight: ten
    services: [{name: web}]
    """
    with pytest.raises(PolicyError) as info:
        parse_document(doc(text), where="catalog.yaml")
    assert str(info.value) == (
        "catalog.yaml:8:21: listeners[0].routes[0].backends[1].weight: must be an integer >= 0, got 'ten'"
    )


def test_all_problems_are_collected_in_document_order() -> None:
    text = """
    services:
      - name: web
        lb_policy: fastest
        endpoints:
          - address: nowhere
          - address: 127.0.0.1:1
            health: sick
    listeners:
      - name: a
        port: 0
        routes: [{backends: [{service: web, weight: -1}]}]
    """
    problems = problems_of(text)
    assert [p.line for p in problems] == [3, 5, 7, 10, 11]
    assert len(str(PolicyError(problems)).splitlines()) == 5  # one line per problem


def test_valid_document_with_defaults() -> None:
    text = """
    services:
      - name: web
        endpoints:
          - address: 127.0.0.1:8081
      - name: settings-only
        lb_policy: maglev
    listeners:
      - name: ingress
        port: 10000
        routes:
          - backends: [{service: web}]
    """
    catalog, policy = parse_document(doc(text), where="/etc/xds.yaml")
    assert [s.name for s in catalog.services] == ["web"]  # no `endpoints` key: not in the catalog
    web = catalog.get("web")
    assert web is not None
    assert web.endpoints == (Endpoint(host="127.0.0.1", port=8081, source="file:/etc/xds.yaml"),)
    assert policy == Policy(
        services=(ServicePolicy("web"), ServicePolicy("settings-only", LbPolicy.MAGLEV)),
        listeners=(
            ListenerPolicy(
                "ingress", "0.0.0.0", port=10000, groups=None, domains=("*",),
                routes=(RoutePolicy("route-0", "/", backends=(BackendRef("web"),)),),
            ),
        ),
    )
    assert policy.services[0].connect_timeout_s == 1.0
    assert policy.services[0].http2 is False


def test_every_field() -> None:
    text = """
    version: 1
    services:
      - name: web
        lb_policy: ring_hash
        connect_timeout: 1.5s
        protocol: http2
        endpoints:
          - address: "[2001:db8::0001]:8081"
            weight: 3
            health: draining
            locality: {region: eu-west, zone: eu-west-1a}
            metadata: {version: v1, track: stable}
      - name: api
        endpoints: []
    listeners:
      - name: ingress
        address: "::"
        port: 10000
        groups: [frontend, edge]
        domains: ["*.example.com", "example.com:10000"]
        routes:
          - name: canary
            match:
              prefix: /app
              headers:
                - {name: X-Canary, exact: "yes"}
                - {name: x-debug, present: true, invert: true}
            timeout: 250ms
            retries: 2
            backends:
              - {service: web, subset: {version: v1, track: stable}, weight: 90}
              - {service: web, subset: {version: v2}, weight: 10}
    """
    catalog, policy = parse_document(doc(text), where="f.yaml")
    assert catalog.get("api") is not None  # `endpoints: []`: known, with none
    web = catalog.get("web")
    assert web is not None
    assert web.endpoints == (
        Endpoint(host="2001:db8::1", port=8081, weight=3, health=Health.DRAINING,
                 locality=Locality(region="eu-west", zone="eu-west-1a"),
                 metadata=(("track", "stable"), ("version", "v1")), source="file:f.yaml"),
    )
    assert policy.services[0] == ServicePolicy("web", LbPolicy.RING_HASH, connect_timeout_s=1.5, http2=True)
    (listener,) = policy.listeners
    assert listener.address == "::"
    assert listener.groups == frozenset({"frontend", "edge"})
    assert listener.domains == ("*.example.com", "example.com:10000")
    assert listener.routes == (
        RoutePolicy(
            "canary", "/app",
            headers=(HeaderMatch("x-canary", "yes"), HeaderMatch("x-debug", None, invert=True)),
            backends=(BackendRef("web", (("track", "stable"), ("version", "v1")), weight=90),
                      BackendRef("web", (("version", "v2"),), weight=10)),
            timeout_s=0.25, retries=2,
        ),
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250ms", 0.25), ("1s", 1.0), ("1.5s", 1.5), ("1m", 60.0), ("2", 2.0), ("0.5", 0.5), ("60", 60.0)],
)
def test_durations(value: str, seconds: float) -> None:
    _, policy = parse_document(f"services: [{{name: web, connect_timeout: {value}}}]", where="f")
    assert policy.services[0].connect_timeout_s == pytest.approx(seconds)


def test_same_port_in_disjoint_groups_is_fine() -> None:
    text = """
    listeners:
      - {name: a, port: 10000, groups: [x], routes: [{backends: [{service: web}]}]}
      - {name: b, port: 10000, groups: [y], routes: [{backends: [{service: web}]}]}
      - {name: c, address: 127.0.0.1, port: 10000, routes: [{backends: [{service: web}]}]}
    services: [{name: web}]
    """
    _, policy = parse_document(doc(text), where="f")
    assert [listener.name for listener in policy.listeners] == ["a", "b", "c"]


def test_aliases_are_expanded_but_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xds.policy.load._MAX_NODES", 10_000)  # the real bound is slower to reach
    text = """
    x: &eu {region: eu}
    """
    assert "unknown key 'x'" in str(problems_of(text))
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
    )
    (problem,) = problems_of(bomb)
    assert "too large" in problem.message


def test_multiple_documents_are_refused() -> None:
    (problem,) = problems_of("services: []\n---\nlisteners: []\n")
    assert problem.line == 2
    assert "single document" in problem.message


def test_policy_from_data_has_paths_but_no_lines() -> None:
    data = {
        "services": [{"name": "web", "protocl": "http2", "endpoints": []}],
        "listeners": [{"name": "a", "port": "80", "routes": [{"backends": [{"service": "web"}]}]}],
    }
    with pytest.raises(PolicyError) as info:
        policy_from_data(data, where="consul:kv/xds/policy")
    assert [str(p) for p in info.value.problems] == [
        "consul:kv/xds/policy: services[0].protocl: unknown key 'protocl' in service 'web'; "
        "did you mean 'protocol'?",
        "consul:kv/xds/policy: services[0].endpoints: endpoints are not accepted in a policy-only document; "
        "they come from the service registry",
        "consul:kv/xds/policy: listeners[0].port: must be an integer between 1 and 65535, got '80'",
    ]
    assert all(p.line is None and p.column is None for p in info.value.problems)


def test_policy_from_data_valid() -> None:
    data = {"services": [{"name": "web", "lb_policy": "random"}],
            "listeners": [{"name": "a", "port": 80, "routes": [{"backends": [{"service": "web"}]}]}]}
    policy = policy_from_data(data, where="k8s:default/p")
    assert policy.services == (ServicePolicy("web", LbPolicy.RANDOM),)
    assert policy.origin == "k8s:default/p"
    with pytest.raises(PolicyError, match="the document is empty"):
        policy_from_data(None, where="kv")


def test_parse_policy_keeps_lines_and_refuses_endpoints() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc("""
        services:
          - name: web
            endpoints: []
        """), where="kv")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (3, 5)


def test_example_file_loads() -> None:
    catalog, policy = load_file(EXAMPLE)
    assert [s.name for s in catalog.services] == ["api", "web"]
    assert [listener.name for listener in policy.listeners] == ["ingress"]


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"services: []\n# caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_file(bad)
    assert str(info.value) == f"{bad}:2: not valid UTF-8 at byte 18"


def _listener(name: str, port: int, groups: frozenset[str] | None = None) -> ListenerPolicy:
    return ListenerPolicy(name, port=port, groups=groups,
                          routes=(RoutePolicy("r", backends=(BackendRef("web"),)),))


def test_merge_policies_earlier_service_wins() -> None:
    first = Policy((ServicePolicy("web", LbPolicy.MAGLEV),), (_listener("a", 1),), origin="file:a")
    second = Policy((ServicePolicy("web"), ServicePolicy("api")), (_listener("b", 2),), origin="kv:b")
    merged = merge_policies([first, second])
    assert merged.services == (ServicePolicy("web", LbPolicy.MAGLEV), ServicePolicy("api"))
    assert [listener.name for listener in merged.listeners] == ["a", "b"]
    assert merge_policies([first]) is first


def test_merge_policies_refuses_listener_conflicts() -> None:
    first = Policy((), (_listener("a", 1), _listener("c", 3, frozenset({"x"}))), origin="file:a")
    second = Policy((), (_listener("a", 2), _listener("d", 3, frozenset({"x", "y"}))), origin="kv:b")
    with pytest.raises(PolicyError) as info:
        merge_policies([first, second])
    assert [str(p) for p in info.value.problems] == [
        "kv:b: listener 'a' is also defined by file:a",
        "kv:b: listener 'd' uses 0.0.0.0:3, already used by listener 'c' from file:a in node group 'x'",
    ]


def test_invalid_policy_values_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="at least one backend"):
        RoutePolicy("r")
    with pytest.raises(ValueError, match="sum to 0"):
        RoutePolicy("r", backends=(BackendRef("web", weight=0),))
    with pytest.raises(ValueError, match=">= 0"):
        BackendRef("web", weight=-1)


# --- issue 7: no crash on explicit tags, control characters escaped, every problem located, safe reads ----


@pytest.mark.parametrize("text", [
    "version: !!bool maybe\n", "version: !!int ''\n", "version: !!float ''\n", "version: !!bool ''\n",
    "version: !!timestamp ''\n", "version: !!int _\n", "version: !!int +\n", "!!bool x: 1\n",
])
def test_explicit_tags_on_values_they_do_not_fit_are_problems(text: str) -> None:
    # PyYAML's constructors raised KeyError, IndexError or AttributeError on these (found by fuzzing).
    for problem in problems_of(text):
        assert problem.line == 1 and problem.column is not None


def test_control_characters_are_escaped_in_every_problem_line() -> None:
    text = 'services:\n  - name: "web\\e]0;owned\\a"\n    "\\x9b2J\\u2028\\u202e\\x7f": 1\n'
    problems = problems_of(text, where="dir\x1b[31m/catalog.yaml")
    rendered = str(PolicyError(problems))
    assert rendered.isprintable() is False  # only because of the newline between problems
    assert all(line.isprintable() for line in rendered.splitlines())
    assert rendered.splitlines() == [
        "dir\\x1b[31m/catalog.yaml:2:11: services[0].name: must be lowercase letters, digits, '.', '_' "
        "and '-', starting and ending with a letter or digit, optionally followed by ':' and a port number, "
        "got 'web\\x1b]0;owned\\x07'",
        "dir\\x1b[31m/catalog.yaml:3:5: services[0].\\x9b2J\\u2028\\u202e\\x7f: unknown key "
        "'\\x9b2J\\u2028\\u202e\\x7f' in service 'web\\x1b]0;owned\\x07'",
    ]
    # The problems keep the raw text; only their rendering escapes it.
    assert problems[1].message.startswith("services[0].\x9b2J\u2028")


def test_a_document_too_large_is_located_where_the_budget_ran_out() -> None:
    (problem,) = problems_of("services:\n  - &a [*a]\n")
    assert (problem.line, problem.column) == (2, 5)
    assert "too large or nested too deeply" in problem.message


def _broken_path(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-symlink":
        os.symlink("/dev/zero", path)
    elif kind == "sparse-64gib":
        path.touch()
        os.truncate(path, 64 * 1024**3)
    else:
        path.mkdir()


@pytest.mark.parametrize(("kind", "reason"), [
    ("fifo", "it is a FIFO (named pipe), not a regular file"),
    ("dev-zero-symlink", "it is a character device, not a regular file"),
    ("sparse-64gib",
     "it is 68719476736 bytes (65536.0 MiB), more than the limit of 67108864 bytes (64.0 MiB)"),
    ("directory", "it is a directory, not a regular file"),
])
def test_load_file_refuses_what_is_not_a_regular_file_of_sane_size(tmp_path: Path, kind: str,
                                                                   reason: str) -> None:
    path = tmp_path / "catalog.yaml"
    _broken_path(path, kind)
    with pytest.raises(PolicyError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: cannot read the file: {reason}"


def test_load_file_size_limit() -> None:
    size = EXAMPLE.stat().st_size
    load_file(EXAMPLE, max_bytes=size)
    with pytest.raises(PolicyError, match=f"it is {size} bytes, more than the limit of {size - 1} bytes"):
        load_file(EXAMPLE, max_bytes=size - 1)


def test_the_read_is_bounded_even_when_the_size_lies() -> None:
    # procfs files are regular files that report size 0 and still have content: the stat cannot be trusted
    # to bound the read, so the read itself stops at the limit.
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0
    content = read_document_file(status, max_bytes=1 << 20)
    assert content.data.startswith(b"Name:")
    with pytest.raises(PolicyError, match="it grew past the limit of 100 bytes while being read"):
        read_document_file(status, max_bytes=100)
