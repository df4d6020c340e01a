"""The output of translation: one Envoy proto per resource, with the names it depends on."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from xds.typeurls import TypeUrl


@dataclass(frozen=True, slots=True)
class Translated:
    type_url: TypeUrl
    name: str
    message: Message
    # Resources this one needs to be useful: a Cluster refers to its ClusterLoadAssignment, a Listener
    # to its RouteConfiguration, a RouteConfiguration to the Clusters its routes send traffic to.
    # The snapshot consistency check (XDS-RULES R24) and make-before-break ordering (R23) use them.
    refs: tuple[tuple[TypeUrl, str], ...] = ()
