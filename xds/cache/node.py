"""Which snapshot a node gets: the node-group key (node.cluster by default)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from xds.model.service import Locality
from xds.translate.delivery import ClientKind

DEFAULT_GROUP = "default"


@dataclass(frozen=True, slots=True)
class NodeGrouper:
    """Maps a node to its group.

    `key` is "cluster" (Envoy's --service-cluster / node.cluster), "id" (one snapshot per node), or
    "metadata:<field>" (a string field of node.metadata). A node without the chosen field lands in the
    "default" group, so a misconfigured sidecar still gets the policy meant for every group.
    """

    key: str = "cluster"

    def __post_init__(self) -> None:
        by_metadata = self.key.startswith("metadata:") and len(self.key) > len("metadata:")
        if self.key not in ("cluster", "id") and not by_metadata:
            raise ValueError(
                f"node group key must be 'cluster', 'id' or 'metadata:<field>', got {self.key!r}")

    def group_of(self, *, node_id: str, cluster: str, metadata: Mapping[str, object]) -> str:
        if self.key == "cluster":
            value: object = cluster
        elif self.key == "id":
            value = node_id
        else:
            value = metadata.get(self.key.removeprefix("metadata:"), "")
        return value if isinstance(value, str) and value else DEFAULT_GROUP


# A node that declares a locality (Envoy's node.locality, `xds bootstrap --zone/--region`) gets its own
# snapshot per (group, locality): services with `locality.failover` order their EDS priorities relative to
# it (issue 8). The store key stays a string so the store's lifecycle, idle grace and group cap apply to
# each (group, locality) as to any group. The locality is JSON after a marker, and the key splits at the
# first marker followed by exactly such JSON, so group and locality strings may hold any character. Only a
# plain group that itself ends in marker + JSON reads as located, which merely lets a client pick a
# locality it could declare anyway (both are client-supplied).
_LOCALITY_MARKER = "|locality="


def located_key(group: str, locality: Locality) -> str:
    """The store key of `group` seen from `locality`: the group itself when the node declares none."""
    if locality == Locality():
        return group
    return group + _LOCALITY_MARKER + json.dumps([locality.region, locality.zone, locality.sub_zone])


def split_key(key: str) -> tuple[str, Locality]:
    """(group, locality) of a store key made by `located_key`; an empty Locality for a plain group."""
    at = key.find(_LOCALITY_MARKER)
    while at >= 0:
        parts = _locality_json(key[at + len(_LOCALITY_MARKER):])
        if parts is not None:
            return key[:at], Locality(region=parts[0], zone=parts[1], sub_zone=parts[2])
        at = key.find(_LOCALITY_MARKER, at + 1)
    return key, Locality()


def _locality_json(text: str) -> list[str] | None:
    try:
        parts = json.loads(text)
    except ValueError:
        return None
    if isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts):
        return parts
    return None


# The kind of client (translate/delivery.py) is part of the store key too: an Envoy on single-type streams
# and a proxyless gRPC client of the same group get their own snapshot variants (issue 11), each serialized
# once for all its streams, while the resources the variants have in common are shared (make_snapshot's
# donor). Envoy on ADS keeps the plain key. The kind goes before the locality (located_key(client_key(..)))
# so split_key still finds the locality JSON at the end.
_CLIENT_MARKER = "|client="


def client_key(group: str, kind: ClientKind) -> str:
    return group if kind is ClientKind.ENVOY_ADS else group + _CLIENT_MARKER + kind.value


def split_client(key: str) -> tuple[str, ClientKind]:
    """(group, kind) of a key made by `client_key`; ENVOY_ADS for a plain group."""
    for kind in (ClientKind.ENVOY_SINGLE, ClientKind.GRPC):
        suffix = _CLIENT_MARKER + kind.value
        if key.endswith(suffix) and len(key) > len(suffix):
            return key.removesuffix(suffix), kind
    return key, ClientKind.ENVOY_ADS
