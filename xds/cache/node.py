"""Which snapshot a node gets: the node-group key (node.cluster by default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
