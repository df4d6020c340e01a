"""The bounds and lexical rules of the file format and the policy schema.

One place for the numbers, patterns and vocabularies that a document is checked against, with the words a
problem report uses for each. The validating walk (`walker.py`) enforces them and the generated OpenAPI
schema (`openapi.py`) publishes them, so the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re

from xds.model.service import Health
from xds.policy.desired import LbPolicy, MtlsMode

VERSION = 1
MAX_CONNECT_TIMEOUT_S = 60.0
MAX_ROUTE_TIMEOUT_S = 3600.0
MAX_RETRIES = 10
MAX_BACKOFF_S = 300.0
MAX_HOST_SELECTION_ATTEMPTS = 10
MAX_COOKIE_TTL_S = 366 * 24 * 3600.0
MAX_FAULT_DELAY_S = 60.0
# Outlier detection (docs/config.md "Outlier detection"): counts of consecutive failures, and the longest
# interval or ejection time that is still a plausible setting rather than a unit mistake.
MAX_CONSECUTIVE_FAILURES = 1000
MAX_OUTLIER_DURATION_S = 3600.0
# Circuit breaker thresholds are UInt32Value in Envoy (circuit_breaker.proto).
MAX_CIRCUIT_LIMIT = 2**32 - 1
MAX_HEALTH_THRESHOLD = 1000
# Load balancer knobs (docs/config.md "Load balancer"): Envoy's own bounds (cluster.proto) where it has them.
MAX_CHOICE_COUNT = 100
MAX_RING_SIZE = 8_388_608
MAX_MAGLEV_TABLE_SIZE = 5_000_011
MAX_SLOW_START_WINDOW_S = 3600.0
# client_side_weighted (issue 10, docs/load-aware.md): its periods up to an hour (Envoy's defaults are 10 s
# to 3 min); Envoy raises a weight update period under 100 ms to 100 ms, so the loader refuses one instead
# of letting it be changed silently. The error penalty multiplies eps/qps, a fraction: 100 already lets one
# error in a hundred requests count as fully busy.
MAX_CSWRR_PERIOD_S = 3600.0
MIN_WEIGHT_UPDATE_PERIOD_S = 0.1
MAX_ERROR_UTILIZATION_PENALTY = 100.0
# Upstream connections: idle timeouts up to a day; keepalive counts and seconds up to Linux's limits
# (TCP_KEEPCNT 127, TCP_KEEPIDLE/TCP_KEEPINTVL 32767 s).
MAX_IDLE_TIMEOUT_S = 24 * 3600.0
MAX_KEEPALIVE_PROBES = 127
MAX_KEEPALIVE_S = 32767.0
# locality.overprovisioning_factor, percent: 10x already sends nothing to the next tier until 90% of a tier
# is down.
MAX_OVERPROVISIONING_FACTOR = 1000
MAX_ENDPOINT_WEIGHT = 10_000
MAX_NAME_LENGTH = 253

# An optional `:<port>` suffix lets policies name Kubernetes services as the source catalogs them
# (`web.shop:80`, docs/kubernetes.md).
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?")
NAME_RULE = ("lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit, "
             "optionally followed by ':' and a port number")
# Subset pairs become part of a cluster name ("web|version=v1,zone=a"), so the separators are excluded.
PAIR_KEY_RE = re.compile(r"[^\s,=|\x00-\x1f\x7f]+")
PAIR_VALUE_RE = re.compile(r"[^\s,=|\x00-\x1f\x7f]*")
PAIR_KEY_RULE = "must not contain whitespace, ',', '=', '|' or control characters"
# Control characters in values that end up in Envoy config are refused outright (docs/protocol.md R44).
TEXT_RE = re.compile(r"[^\x00-\x1f\x7f]*")
TEXT_RULE = "must not contain control characters"
HEADER_NAME_RE = re.compile(r":?[a-z0-9!#$%&'*+.^_`|~-]+")
# Header names are matched lowercased (walker.py); schemas accept them in any case.
HEADER_NAME_ANY_CASE_RE = re.compile(r":?[A-Za-z0-9!#$%&'*+.^_`|~-]+")
HEADER_NAME_RULE = "must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)"
DOMAIN_RE = re.compile(r"\*|(\*[.-])?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?([.-]\*)?(:[0-9]{1,5})?")
DOMAIN_RULE = "must be a host name, optionally with one leading or trailing '*' wildcard and a port"
PREFIX_RE = re.compile(r"/[^\s\x00-\x1f\x7f]*")
HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")
HOST_RULE = "must be a host name, optionally with a port, such as web.internal or web.internal:8080"
PREFIX_RULE = "must start with '/' and contain no whitespace or control characters"
GROUP_RE = re.compile(r"[^\x00-\x1f\x7f]+")
PORT_RE = re.compile(r"[0-9]{1,5}")
DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m)")
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0}

# Envoy's names for what a route retries on (router filter docs, "x-envoy-retry-on" and
# "x-envoy-retry-grpc-on"); `retriable-headers` is left out because nothing here sets the headers it needs.
RETRY_ON_CONDITIONS = ("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                       "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
                       "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal",
                       "resource-exhausted", "unavailable")
# RFC 6265 section 4.1.1: a cookie name is an HTTP token.
COOKIE_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
COOKIE_NAME_RULE = "must be a cookie name (letters, digits and !#$%&'*+.^_`|~-)"
QUERY_PARAMETER_RE = re.compile(r"[^\s&=#\x00-\x1f\x7f]+")
QUERY_PARAMETER_RULE = ("must be a query parameter name without whitespace, '&', '=', '#' or control "
                        "characters")

LB_POLICIES = {p.value: p for p in LbPolicy}
HEALTH_VALUES = {h.value: h for h in Health}
PROTOCOLS = {"http1": False, "http2": True}  # value: whether to speak HTTP/2 upstream
MTLS_MODES = {m.value: m for m in MtlsMode}
# An authorization rule names a caller by SPIFFE ID or by node group (whose workload identity is
# spiffe://<trust-domain>/group/<group>, xds/model/spiffe.py); a group must be a SPIFFE path segment.
IDENTITY_RE = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+|[A-Za-z0-9._-]+")
IDENTITY_RULE = ("must be a SPIFFE ID (spiffe://<trust-domain>/<path>) or a node group name (letters, "
                 "digits, '.', '-', '_')")
# RFC 9110 section 9 and PATCH (RFC 5789): the methods an authorization rule can narrow to.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# RFC 1123 section 2.1 host names: dot-separated labels of letters, digits and '-', 1 to 63 characters each,
# neither starting nor ending with '-', at most MAX_NAME_LENGTH characters in all. The last label may not be
# all digits (RFC 3696 section 2), so a mistyped IPv4 address such as 10.0.0.300 is not taken for a name.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}", re.ASCII)
HOST_NAME_RULE = ("must be an IP address or an RFC 1123 host name (labels of letters, digits and '-', "
                  "separated by '.')")


def _host_name_problem(host: str) -> str:
    """"" when `host` is a host name Envoy can resolve in a DNS cluster (issue 13, docs/dns.md)."""
    if len(host) > MAX_NAME_LENGTH or not HOST_NAME_RE.fullmatch(host):
        return f"the host {HOST_NAME_RULE}"
    if host.rpartition(".")[2].isdigit():
        return "the host is neither an IP address nor a host name (its last label is all digits)"
    return ""


def parse_host_port(text: str) -> tuple[str, int, str]:
    """(host, port, "") or ("", 0, problem). The host is an IP literal or a host name (issue 13): a service
    with a host name becomes a DNS cluster that Envoy resolves itself (docs/dns.md), since Envoy refuses
    host names in EDS endpoints. Host names are lowercased: DNS does not tell case apart, and one name spelt
    two ways must not make two endpoints."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            return "", 0, "must be host:port, with an IPv6 host in brackets as [::1]:8080"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return "", 0, "must be host:port, such as 127.0.0.1:8080 or web.internal:8080"
        if ":" in host:
            return "", 0, "an IPv6 address must be in brackets, as [::1]:8080"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None:
        if text.startswith("["):
            return "", 0, "only IPv6 addresses go in brackets"
        problem = _host_name_problem(host)
        if problem:
            return "", 0, problem
    elif text.startswith("[") and ip.version != 6:
        return "", 0, "only IPv6 addresses go in brackets"
    if not PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return "", 0, "the port must be a number from 1 to 65535"
    return (str(ip) if ip is not None else host.lower()), int(port_text), ""
