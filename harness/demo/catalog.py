"""The demo's catalog file: rendered from the weights of the current phase, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    LOOPBACK,
)
from harness.demo.constants import WEB_ROUTE, Weights


@dataclass(frozen=True, slots=True)
class Edge:
    """One Envoy: its node id, its node group (also its listener's name) and the port it serves on."""

    envoy: str
    group: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def weights_label(weights: Weights) -> str:
    return f"{weights[0]}/{weights[1]}"


# -- the catalog file ------------------------------------------------------------------------------


def render_catalog(*, upstream_ports: Mapping[str, int], edges: Sequence[Edge], weights: Weights) -> str:
    """The demo's catalog (format: docs/config.md): `web` v1/v2 and `api`, one listener per node group."""
    lines = [
        "# Written by `python -m harness.demo`, which rewrites the web weights below to shift the canary.",
        "# Edit them yourself while the demo runs: the control plane picks up every save within a second.",
        "version: 1",
        "",
        "services:",
        "  - name: web",
        "    connect_timeout: 250ms",
        "    endpoints:",
        f"      - address: {LOOPBACK}:{upstream_ports['web-v1']}",
        "        metadata: {version: v1}",
        f"      - address: {LOOPBACK}:{upstream_ports['web-v2']}",
        "        metadata: {version: v2}",
        "  - name: api",
        "    connect_timeout: 250ms",
        "    endpoints:",
        f"      - address: {LOOPBACK}:{upstream_ports['api']}",
        "",
        "listeners:",
    ]
    for edge in edges:
        lines += [
            f"  - name: {edge.group}",
            f"    address: {LOOPBACK}",
            f"    port: {edge.port}",
            f"    groups: [{edge.group}]  # only Envoys with node.cluster {edge.group} get this listener",
            "    routes:",
            "      - name: api",
            "        match: {prefix: /api}",
            "        backends: [{service: api}]",
            f"      - name: {WEB_ROUTE}",
            "        match: {prefix: /}",
            "        backends:",
            f"          - {{service: web, subset: {{version: v1}}, weight: {weights[0]}}}",
            f"          - {{service: web, subset: {{version: v2}}, weight: {weights[1]}}}",
        ]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step, so the control plane never reads a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
