"""The declared keys of a service's `outlier_detection` and `circuit_breakers` (docs/config.md, issue 8).

The specs they fill (OutlierDetectionSpec, CircuitBreakersSpec) live in `desired.py`, the protobuf-free
contract with `translate`, which `rules.py` and so `fields.py` import: they cannot carry declarations as
field metadata without an import cycle, so their keys are declared here as rows (fields.py `table`), as
catalog_fields.py does for endpoints. Every key is optional and unset means Envoy's own default: nothing is
emitted for it.
"""

from __future__ import annotations

from xds.policy.desired import (
    CircuitBreakersSpec,
    GrpcHealthCheckSpec,
    HealthCheckSpec,
    HttpHealthCheckSpec,
    LocalitySpec,
    LocalityWeightSpec,
    OutlierDetectionSpec,
    RetryBudgetSpec,
    TcpHealthCheckSpec,
)
from xds.policy.fields import Boolean, Duration, FieldSpec, Integer, ListOf, Nested, Text, erase, table
from xds.policy.rules import (
    HOST_RE,
    HOST_RULE,
    MAX_CIRCUIT_LIMIT,
    MAX_CONSECUTIVE_FAILURES,
    MAX_ENDPOINT_WEIGHT,
    MAX_HEALTH_THRESHOLD,
    MAX_OUTLIER_DURATION_S,
    MAX_OVERPROVISIONING_FACTOR,
    PREFIX_RE,
    PREFIX_RULE,
)

_MAX_D = f"at most {MAX_OUTLIER_DURATION_S / 3600:g} h"

OUTLIER_DETECTION = table(OutlierDetectionSpec, "Eject hosts that keep failing (passive health checks).", [
    ("consecutive_5xx", FieldSpec(
        "consecutive_5xx", Integer(1, MAX_CONSECUTIVE_FAILURES),
        "Eject a host after this many consecutive 5xx responses (or resets), 1 to "
        f"{MAX_CONSECUTIVE_FAILURES}.",
        shown_default="Envoy's (5)")),
    ("consecutive_gateway_failure", FieldSpec(
        "consecutive_gateway_failure", Integer(1, MAX_CONSECUTIVE_FAILURES),
        "Eject a host after this many consecutive 502, 503 or 504 responses (or resets), 1 to "
        f"{MAX_CONSECUTIVE_FAILURES}. Unset: not enforced.", shown_default="off")),
    ("interval_s", FieldSpec(
        "interval", Duration(MAX_OUTLIER_DURATION_S),
        f"How often ejections are reconsidered and success rates computed; {_MAX_D}.",
        shown_default="Envoy's (10 s)")),
    ("base_ejection_time_s", FieldSpec(
        "base_ejection_time", Duration(MAX_OUTLIER_DURATION_S),
        f"How long a host stays ejected the first time (longer each time it is ejected again); {_MAX_D}.",
        shown_default="Envoy's (30 s)")),
    ("max_ejection_percent", FieldSpec(
        "max_ejection_percent", Integer(1, 100),
        "At most this percentage of the service's hosts ejected at once, 1 to 100 (Envoy always allows "
        "one).", shown_default="Envoy's (10)")),
    ("success_rate", FieldSpec(
        "success_rate", Boolean(),
        "`false` turns off ejection of hosts whose success rate is far below the others' (Envoy applies "
        "it only with at least 5 hosts of 100 requests each per interval).", shown_default="Envoy's (on)")),
    ("split_external_local_origin_errors", FieldSpec(
        "split_external_local_origin_errors", Boolean(),
        "`true`: connect failures, timeouts and resets (locally originated) are counted apart from the "
        "responses of the host, so `consecutive_5xx` counts only real 5xx responses.")),
])

RETRY_BUDGET = table(RetryBudgetSpec, "Retries limited to a share of the active requests.", [
    ("budget_percent", FieldSpec(
        "budget_percent", Integer(1, 100),
        "Active retries at most this percentage of active requests, 1 to 100.",
        shown_default="Envoy's (20)")),
    ("min_retry_concurrency", FieldSpec(
        "min_retry_concurrency", Integer(0, MAX_CIRCUIT_LIMIT),
        "Retries always allowed whatever the budget.", shown_default="Envoy's (3)")),
])

_LIMIT = f"1 to {MAX_CIRCUIT_LIMIT}"

CIRCUIT_BREAKERS = table(CircuitBreakersSpec, "Limits past which Envoy fails requests fast (503, "
                                              "`x-envoy-overloaded`) instead of queueing them.", [
    ("max_connections", FieldSpec(
        "max_connections", Integer(1, MAX_CIRCUIT_LIMIT),
        f"Connections to all the service's hosts, {_LIMIT}.", shown_default="Envoy's (1024)")),
    ("max_pending_requests", FieldSpec(
        "max_pending_requests", Integer(1, MAX_CIRCUIT_LIMIT),
        f"Requests waiting for a connection, {_LIMIT}.", shown_default="Envoy's (1024)")),
    ("max_requests", FieldSpec(
        "max_requests", Integer(1, MAX_CIRCUIT_LIMIT),
        f"Requests in flight to the service, {_LIMIT}.", shown_default="Envoy's (1024)")),
    ("max_retries", FieldSpec(
        "max_retries", Integer(0, MAX_CIRCUIT_LIMIT),
        f"Retries in flight to the service, 0 to {MAX_CIRCUIT_LIMIT}; not with `retry_budget`, which "
        "replaces it.",
        shown_default="Envoy's (3)")),
    ("retry_budget", FieldSpec(
        "retry_budget", Nested(erase(RETRY_BUDGET)),
        "`{budget_percent, min_retry_concurrency}`: limit retries to a share of the requests in flight "
        "instead of `max_retries`.", shown_default="none")),
])

HTTP_HEALTH_CHECK = table(HttpHealthCheckSpec, "An HTTP GET to each endpoint.", [
    ("path", FieldSpec("path", Text(PREFIX_RE, PREFIX_RULE), "The path to GET, starting with `/`.",
                       required=True)),
    ("expected_statuses", FieldSpec(
        "expected_statuses", ListOf(Integer(100, 599), item_doc="An HTTP status code, 100 to 599.",
                                    nonempty=True, list_type="set"),
        "Statuses that count as healthy, each 100 to 599, no duplicates.", shown_default="`[200]`")),
    ("host", FieldSpec("host", Text(HOST_RE, HOST_RULE), "The `Host` header of the check.",
                       shown_default="the cluster name")),
])

TCP_HEALTH_CHECK = table(TcpHealthCheckSpec, "Connect only: healthy while the endpoint accepts connections.",
                         [])

GRPC_HEALTH_CHECK = table(GrpcHealthCheckSpec, "The grpc.health.v1 Check call; needs `protocol: http2`.", [
    ("service", FieldSpec("service", Text(), "The service name asked about; empty for the whole server.",
                          shown_default="empty")),
])

_MAX_H = f"at most {MAX_OUTLIER_DURATION_S / 3600:g} h"

HEALTH_CHECK = table(HealthCheckSpec, "Envoy probes each endpoint itself: exactly one of `http`, `tcp` and "
                                      "`grpc`.", [
    ("http", FieldSpec("http", Nested(erase(HTTP_HEALTH_CHECK)), "`{path, expected_statuses, host}`: an "
                       "HTTP check (below).", shown_default="")),
    ("tcp", FieldSpec("tcp", Nested(erase(TCP_HEALTH_CHECK)), "`{}`: a connect-only check.",
                      shown_default="")),
    ("grpc", FieldSpec("grpc", Nested(erase(GRPC_HEALTH_CHECK)), "`{service}`: a gRPC health check; the "
                       "service needs `protocol: http2`.", shown_default="")),
    ("interval_s", FieldSpec("interval", Duration(MAX_OUTLIER_DURATION_S),
                             f"Time between checks of one endpoint; {_MAX_H}.")),
    ("timeout_s", FieldSpec("timeout", Duration(MAX_OUTLIER_DURATION_S),
                            f"A check not answered within this fails; {_MAX_H}.")),
    ("unhealthy_threshold", FieldSpec(
        "unhealthy_threshold", Integer(1, MAX_HEALTH_THRESHOLD),
        f"Consecutive failed checks that make an endpoint unhealthy, 1 to {MAX_HEALTH_THRESHOLD}. An `http` "
        "answer with a status outside `expected_statuses` fails the endpoint at once (Envoy's rule).")),
    ("healthy_threshold", FieldSpec(
        "healthy_threshold", Integer(1, MAX_HEALTH_THRESHOLD),
        f"Consecutive passed checks that make it healthy again, 1 to {MAX_HEALTH_THRESHOLD}.")),
    ("no_traffic_interval_s", FieldSpec(
        "no_traffic_interval", Duration(MAX_OUTLIER_DURATION_S),
        f"Time between checks while the service gets no traffic; {_MAX_H}.",
        shown_default="Envoy's (60 s)")),
    ("port", FieldSpec(
        "port", Integer(1, 65535),
        "Probe this port of each endpoint instead of its serving port (a separate health or admin "
        "port), 1 to 65535.", shown_default="the endpoint's port")),
], one_of=("http", "tcp", "grpc"))

LOCALITY_WEIGHT = table(LocalityWeightSpec, "A locality's share of traffic; the parts given must match.", [
    ("region", FieldSpec("region", Text(), "Region to match.", shown_default="any")),
    ("zone", FieldSpec("zone", Text(), "Zone to match.", shown_default="any")),
    ("sub_zone", FieldSpec("sub_zone", Text(), "Sub-zone to match.", shown_default="any")),
    ("weight", FieldSpec("weight", Integer(1, MAX_ENDPOINT_WEIGHT),
                         f"The locality's weight, 1 to {MAX_ENDPOINT_WEIGHT}.", required=True)),
])

LOCALITY_POLICY = table(LocalitySpec, "Endpoints ordered relative to each proxy's own locality (issue 8).", [
    ("failover", FieldSpec(
        "failover", Boolean(),
        "`true`: each proxy sends traffic to endpoints in its own zone (Envoy's `node.locality`, `xds "
        "bootstrap --zone/--region`), then its region, then anywhere, as EDS priorities computed per proxy "
        "locality; the catalog's `priority` orders endpoints within each of those tiers. A proxy without a "
        "locality gets the catalog's priorities.", shown_default="off")),
    ("overprovisioning_factor", FieldSpec(
        "overprovisioning_factor", Integer(100, MAX_OVERPROVISIONING_FACTOR),
        "Percent: a tier takes all the traffic while its healthy share times this is at least 100%, so "
        "with 140 traffic starts to spill to the next tier when fewer than about 71% of its endpoints are "
        f"healthy; 100 to {MAX_OVERPROVISIONING_FACTOR}.",
        shown_default="Envoy's (140)")),
    ("weights", FieldSpec(
        "weights", ListOf(Nested(erase(LOCALITY_WEIGHT)), nonempty=True),
        "`[{region, zone, sub_zone, weight}]`: locality-weighted balancing. Within each priority, a locality "
        "gets traffic in proportion to the weight of the first entry matching it (list specific entries "
        "first), whatever its number of endpoints; endpoint weights then apply inside it. A locality no "
        "entry matches gets weight 1. Each entry names at least one part, and no two entries name the same "
        "locality.", shown_default="off")),
])
