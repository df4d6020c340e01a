"""Frozen value types for discovered services and the deterministic merge of sources."""
