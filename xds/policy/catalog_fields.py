"""The declared keys of a file-format endpoint and its locality (docs/config.md, "Endpoints").

Endpoint and Locality live in `xds.model`, below the policy layer, so they cannot carry declarations as
field metadata; their keys are declared here as rows instead (fields.py `table`), with the defaults still
read from the classes.
"""

from __future__ import annotations

from xds.model.service import Endpoint, Locality
from xds.policy.fields import Choice, FieldSpec, HostPort, Integer, Nested, Pairs, Text, erase, table
from xds.policy.rules import HEALTH_VALUES, MAX_ENDPOINT_WEIGHT, TEXT_RE, TEXT_RULE

LOCALITY = table(Locality, "Where the endpoint runs; each part optional.", [
    ("region", FieldSpec("region", Text(), "Region.")),
    ("zone", FieldSpec("zone", Text(), "Zone within the region.")),
    ("sub_zone", FieldSpec("sub_zone", Text(), "Sub-zone within the zone.")),
])

ENDPOINT = table(Endpoint, "One instance of the service.", [
    (None, FieldSpec(
        "address", HostPort(),
        "`host:port`. The host is an IP address, IPv6 in brackets (`[::1]:8081`), or an RFC 1123 host name "
        "(`web.internal:8080`), which makes the service a DNS cluster that Envoy resolves itself (`dns`, "
        "docs/dns.md). Port 1 to 65535. Unique within the service (`[::1]` and `[0::1]` are the same "
        "address, host names are compared lowercased).", required=True)),
    ("weight", FieldSpec("weight", Integer(1, MAX_ENDPOINT_WEIGHT),
                         "Load-balancing weight among the service's endpoints, "
                         f"1 to {MAX_ENDPOINT_WEIGHT}.")),
    ("health", FieldSpec("health", Choice(HEALTH_VALUES),
                         "`healthy`, `unhealthy`, `draining`, `degraded` or `unknown`, as Envoy should see "
                         "it.")),
    ("locality", FieldSpec("locality", Nested(erase(LOCALITY)),
                           "`{region, zone, sub_zone}`, each a string, all optional.", shown_default="none")),
    ("metadata", FieldSpec(
        "metadata", Pairs(TEXT_RE, TEXT_RULE, "A metadata value."),
        "String keys to string values, for example `{version: v1}`. Subsets select endpoints by it. Values "
        "must be strings: `version: 2` or `canary: true` is an error, write `\"2\"` or `\"true\"`. Keys "
        "cannot contain whitespace, `,`, `=` or `|`.", shown_default="`{}`")),
])
