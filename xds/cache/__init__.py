"""Immutable snapshots per node group, serialized once and shared by every stream."""
