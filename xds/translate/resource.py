"""The output of translation: one Envoy proto per resource, with the names it depends on."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from xds.typeurls import TypeUrl

Refs = tuple[tuple[TypeUrl, str], ...]


@dataclass(frozen=True, slots=True)
class Translated:
    type_url: TypeUrl
    name: str
    message: Message
    # Resources this one needs to be useful: a Cluster refers to its ClusterLoadAssignment, a Listener
    # to its RouteConfiguration, a RouteConfiguration to the Clusters its routes send traffic to.
    # The snapshot consistency check (docs/protocol.md R24) and make-before-break ordering (R23) use them.
    refs: Refs = ()
    # The frozen spec this resource was translated from. Equal keys mean byte-identical resources, so a
    # snapshot build reuses the previous snapshot's serialized resource instead of serializing again.
    key: Hashable = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A resource planned from a frozen spec, whose proto is built only if it has to be serialized.

    A rebuild after a change finds almost every resource's key equal to the one the previous snapshot
    holds and reuses that resource's bytes, so for those the proto is never built at all. Nothing here
    outlives the build: unlike a process-wide cache by spec (which leaked a copy of every translation ever
    made, issue 7), the only memory of earlier builds is the previous snapshot itself.
    """

    type_url: TypeUrl
    name: str
    make: Callable[[], Message] = field(repr=False)
    refs: Refs = ()
    # As Translated.key: equal keys must mean byte-identical protos, so it covers every input of `make`.
    key: Hashable = None

    def translated(self) -> Translated:
        return Translated(self.type_url, self.name, self.make(), refs=self.refs, key=self.key)
