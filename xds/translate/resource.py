"""The output of translation: one Envoy proto per resource, with the names it depends on."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

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
    # The frozen spec this resource was translated from. Equal keys mean byte-identical resources, so a
    # snapshot build reuses the previous snapshot's serialized resource instead of serializing again.
    key: Hashable = field(default=None, compare=False)
