"""ORCA load reports as an upstream sends them in a response header (issue 10, proxy-side mode).

Envoy's client-side weighted round robin reads one header, `endpoint-load-metrics`, whose value starts with
its format (docs/load-aware.md, "The header"):

  TEXT cpu_utilization=0.9,mem_utilization=0.3,rps_fractional=100
  JSON {"cpuUtilization": 0.9, "memUtilization": 0.3, "rpsFractional": 100}
  BIN  <base64 of a serialized xds.data.orca.v3.OrcaLoadReport>

Envoy computes a host's weight as rps_fractional / (utilization + eps / rps_fractional * penalty), where
utilization is application_utilization when above 0, else cpu_utilization; a report without a positive
rps_fractional is dropped, so every report here carries one. mem_utilization is reported for completeness
(and for the control-plane mode) but does not enter Envoy's weight.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Literal

from xds.data.orca.v3 import orca_load_report_pb2

ORCA_HEADER = "endpoint-load-metrics"
OrcaFormat = Literal["TEXT", "JSON", "BIN"]


@dataclass(frozen=True, slots=True)
class OrcaLoad:
    """One endpoint's load as it reports it; 0 leaves a field out (ORCA's "not reported")."""

    cpu_utilization: float = 0.0
    mem_utilization: float = 0.0
    rps_fractional: float = 0.0
    eps: float = 0.0
    application_utilization: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("cpu_utilization", self.cpu_utilization),
                            ("mem_utilization", self.mem_utilization),
                            ("application_utilization", self.application_utilization),
                            ("rps_fractional", self.rps_fractional), ("eps", self.eps)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"OrcaLoad.{name} must be a finite number >= 0, got {value!r}")

    def fields(self) -> dict[str, float]:
        """The reported fields, by their ORCA names, in a fixed order; zeros left out."""
        every = {"cpu_utilization": self.cpu_utilization, "mem_utilization": self.mem_utilization,
                 "application_utilization": self.application_utilization,
                 "rps_fractional": self.rps_fractional, "eps": self.eps}
        return {name: value for name, value in every.items() if value}

    def proto(self) -> orca_load_report_pb2.OrcaLoadReport:
        return orca_load_report_pb2.OrcaLoadReport(**self.fields())

    def header_value(self, fmt: OrcaFormat = "TEXT") -> str:
        if fmt == "TEXT":
            return "TEXT " + ",".join(f"{name}={value:g}" for name, value in self.fields().items())
        if fmt == "JSON":
            # The proto's JSON mapping (lowerCamelCase names), as Envoy parses it.
            return "JSON " + json.dumps({_camel(name): value for name, value in self.fields().items()})
        return "BIN " + base64.b64encode(self.proto().SerializeToString(deterministic=True)).decode("ascii")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def expected_weight(load: OrcaLoad, *, penalty: float = 1.0) -> int | None:
    """The host weight Envoy's client-side weighted round robin derives from `load`, by its documented
    formula: qps / (utilization + eps / qps * penalty), utilization being application_utilization when above
    0, else cpu_utilization (client_side_weighted_round_robin.proto); Envoy stores it as an integer,
    truncated. None where Envoy drops the report (no qps, or no utilization): the host then gets the median
    weight of the others."""
    qps = load.rps_fractional
    if qps <= 0:
        return None
    utilization = load.application_utilization or load.cpu_utilization
    utilization += penalty * load.eps / qps
    if utilization <= 0:
        return None
    return int(min(qps / utilization, 2**32 - 1))


def expected_shares(weights: dict[str, int]) -> dict[str, float]:
    """Percent of requests each host gets from weighted round robin with these weights."""
    total = sum(weights.values())
    return {name: 100.0 * weight / total for name, weight in weights.items()}
