"""The table of registry source kinds (issue 13 section 1): one row per kind, read by settings.py (its
environment variables), cli.py (its flags and config) and app.py (its Source), so none of them names a
registry. Adding a registry is its package under xds/sources/, a `cli_<kind>.py` with its flags, and one
row here.

The order of the rows is the merge order after the file sources (docs/consul.md "Merging with files",
docs/kubernetes.md "Merging with Consul and files"): on the same service the earlier source wins a
duplicate host:port.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from xds import cli_consul, cli_dns, cli_eureka, cli_kube

if TYPE_CHECKING:
    from xds.sources.base import Source


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One kind of registry source. Each callable is cheap and does no I/O beyond reading files the
    flags name (a kubeconfig, a token file)."""

    name: str  # the key of its config in Settings.registries, and SourceStatus.kind
    hint: str  # how to turn it on, for the "no source configured" error
    from_environment: Callable[[Mapping[str, str]], dict[str, str]]  # XDS_* variables -> flag values
    add_arguments: Callable[[argparse.ArgumentParser, dict[str, str]], None]  # its `xds serve` flags
    config: Callable[[argparse.Namespace, dict[str, str]], Any]  # its config, None when not asked for
    source: Callable[[Any], Source]  # the Source for a config
    secrets: Callable[[Any], tuple[str | None, ...]]  # values to redact everywhere (docs/security.md)


class KindModule(Protocol):
    """What a `cli_<kind>.py` module provides (xds/cli_consul.py is an example)."""

    HINT: str

    def from_environment(self, env: Mapping[str, str], /) -> dict[str, str]: ...
    def add_arguments(self, parser: argparse.ArgumentParser, defaults: dict[str, str], /) -> None: ...
    def config(self, args: argparse.Namespace, env: dict[str, str], /) -> Any: ...
    def source(self, config: Any, /) -> Source: ...
    def secrets(self, config: Any, /) -> tuple[str | None, ...]: ...


def _row(name: str, module: KindModule) -> SourceKind:
    """A kind whose `cli_<kind>.py` module defines the six names a row needs."""
    return SourceKind(name, module.HINT, module.from_environment, module.add_arguments, module.config,
                      module.source, module.secrets)


KINDS: tuple[SourceKind, ...] = (
    _row("consul", cli_consul),
    _row("kubernetes", cli_kube),
    _row("eureka", cli_eureka),
    _row("dns", cli_dns),
)


def kind(name: str) -> SourceKind:
    for row in KINDS:
        if row.name == name:
            return row
    raise KeyError(f"unknown source kind {name!r}; known: {', '.join(k.name for k in KINDS)}")
