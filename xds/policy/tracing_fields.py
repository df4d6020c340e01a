"""The declared keys of a `tracing` block, top-level or per listener (docs/tracing.md; issue 14 item 2).

Each key is declared once here, in the metadata of the field it fills (fields.py); the declaration drives the
loader, the docs/config.md tables, the CRD schema and `xds schema`. `apply.py` turns the block into a
`TracingSpec` (tracing_spec.py), which `translate/tracing.py` spells as the HTTP connection manager's
`tracing` and the collector's cluster.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass, field

from xds.policy.fields import Choice, Integer, IpAddress, ListOf, Nested, Number, Text, declare, erase, shape
from xds.policy.rules import HEADER_NAME_ANY_CASE_RE, HEADER_NAME_RULE
from xds.policy.tracing_spec import TracingProvider

TRACING_PROVIDERS = {p.value: p for p in TracingProvider}
DEFAULT_SAMPLING_PERCENT = 100.0
# A span tag or environment variable name: printable, no whitespace; Envoy takes any non-empty string for the
# tag (custom_tag.proto `tag`, min_len 1), and a variable name with `=` could never be set.
TAG_NAME_RE = re.compile(r"[A-Za-z0-9_.:/-]+")
TAG_NAME_RULE = "letters, digits, `_`, `.`, `:`, `/` and `-`"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME_RULE = "an environment variable name: letters, digits and `_`, not starting with a digit"
SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SERVICE_NAME_RULE = "letters, digits, `.`, `_` and `-`, starting with a letter or digit"


@dataclass(frozen=True, slots=True)
class TracingTag:
    """A custom tag on every span: a fixed value, a request header's value, or an environment variable of
    the Envoy process (Envoy's CustomTag)."""

    name: str = field(metadata=declare(
        "name", Text(TAG_NAME_RE, TAG_NAME_RULE), f"The span tag's name: {TAG_NAME_RULE}.", required=True))
    literal: str | None = field(default=None, metadata=declare(
        "literal", Text(), "This fixed value.", shown_default=""))
    header: str | None = field(default=None, metadata=declare(
        "header", Text(HEADER_NAME_ANY_CASE_RE, HEADER_NAME_RULE),
        "The value of this request header (case does not matter); no tag when the request lacks it, "
        "unless `default` is given.", shown_default=""))
    environment: str | None = field(default=None, metadata=declare(
        "environment", Text(ENV_NAME_RE, ENV_NAME_RULE),
        "The value of this environment variable of the Envoy process (read when Envoy starts).",
        shown_default=""))
    _: KW_ONLY
    default: str | None = field(default=None, metadata=declare(
        "default", Text(), "The value when the header or variable is missing (a `literal` ignores it).",
        shown_default="none (no tag)"))


TRACING_TAG = shape(TracingTag, "A custom span tag: exactly one of `literal`, `header`, `environment`.",
                    one_of=("literal", "header", "environment"))


@dataclass(frozen=True, slots=True)
class TracingPolicy:
    """Where Envoy sends the spans of the HTTP requests a listener handles, and how many (issue 14)."""

    address: str = field(metadata=declare(
        "address", IpAddress(), "The collector's IP address (Jaeger, an OpenTelemetry collector, Zipkin).",
        required=True))
    port: int = field(metadata=declare(
        "port", Integer(1, 65535), "The collector's port: its OTLP/gRPC port (usually 4317) for "
        "`opentelemetry`, its HTTP port (usually 9411) for `zipkin`.", required=True))
    _: KW_ONLY
    provider: TracingProvider = field(default=TracingProvider.OPENTELEMETRY, metadata=declare(
        "provider", Choice(TRACING_PROVIDERS),
        "`opentelemetry`: OTLP over gRPC (Envoy's envoy.tracers.opentelemetry); `zipkin`: Zipkin's JSON v2 "
        "API over HTTP (envoy.tracers.zipkin), which Jaeger and Zipkin both accept."))
    sampling: float = field(default=DEFAULT_SAMPLING_PERCENT, metadata=declare(
        "sampling", Number(0.0, 100.0),
        "Percentage of the requests that start a trace, 0 to 100 (Envoy's random_sampling). A request that "
        "arrives with a sampled trace context is traced whatever this says, so one trace spans every proxy.",
        shown_default="`100`"))
    service_name: str | None = field(default=None, metadata=declare(
        "service_name", Text(SERVICE_NAME_RE, SERVICE_NAME_RULE),
        "The service the spans are reported under (`opentelemetry` only: Zipkin spans always carry the "
        "Envoy's `--service-cluster`, its node group).", shown_default="the node group"))
    tags: tuple[TracingTag, ...] = field(default=(), metadata=declare(
        "tags", ListOf(Nested(erase(TRACING_TAG)), nonempty=True),
        "Custom tags added to every span (below).", shown_default="none"))


TRACING = shape(TracingPolicy, "Envoy's HTTP tracing: collector, sampling and custom tags (docs/tracing.md).")
