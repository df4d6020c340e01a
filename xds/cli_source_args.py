"""The flag-and-environment plumbing every source row of `xds serve` repeats (cli_consul, cli_kube,
cli_eureka, cli_dns; issue 13 clean-up): one place for how an XDS_* variable becomes a flag's value, how a
comma-separated variable becomes a list, and how an on/off flag falls back to its variable
(docs/config.md: a flag given on the command line wins over its environment variable)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from xds.settings import parse_flag


def environment_flags(env: Mapping[str, str], table: Mapping[str, str]) -> dict[str, str]:
    """The settings `env` gives through the variables of `table` (variable -> flag name), by flag name; an
    empty variable counts as unset."""
    return {flag: env[var] for var, flag in table.items() if env.get(var)}


def env_list(value: str) -> tuple[str, ...]:
    """A comma-separated variable's items, stripped, empty ones left out."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def switch(given: bool | None, env: Mapping[str, str], name: str, *, default: str = "") -> bool:
    """An on/off flag: `given` when it was on the command line, else the environment's `name` (flag name),
    else `default`. ValueError naming the value when the variable is not a boolean."""
    return given if given is not None else parse_flag(env.get(name, default))


def optional_path(value: Path | str | None) -> Path | None:
    """A path flag or variable; None when unset or empty."""
    return Path(value) if value else None
