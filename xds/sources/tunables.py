"""The checks every registry source's config makes on its timing knobs (Consul, Kubernetes, Eureka; issue 13
clean-up: each config had written them): the knobs of the shared registry engine (sources/registry/engine.py:
resync grace, debounce, staleness report, backoff) plus the source's own timeouts and intervals.
Pure: a ValueError naming the source and the field, as the config's own checks do (docs/config.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# The registry engine's knobs that may be 0 (0 turns the grace, the debounce or the staleness report off).
ENGINE_NON_NEGATIVE = ("resync_grace_s", "debounce_s", "max_stale_s")


class EngineTunables(Protocol):
    """The registry engine's knobs, as every registry source's config holds them."""

    @property
    def debounce_s(self) -> float: ...

    @property
    def max_stale_s(self) -> float: ...

    @property
    def resync_grace_s(self) -> float: ...

    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...


def check_tunables(config: EngineTunables, label: str, *, positive: Sequence[str],
                   non_negative: Sequence[str] = ENGINE_NON_NEGATIVE) -> None:
    """Fields `positive` of `config` > 0, fields `non_negative` >= 0, and 0 < backoff_initial_s <=
    backoff_max_s; ValueError ("<label> <field> must be positive, got <value>") on the first that is not."""
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"{label} {name} must be positive, got {getattr(config, name)}")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ValueError(f"{label} {name} must not be negative, got {getattr(config, name)}")
    initial, maximum = config.backoff_initial_s, config.backoff_max_s
    if not 0 < initial <= maximum:
        raise ValueError(f"{label} backoff needs 0 < backoff_initial_s <= backoff_max_s, got {initial} and "
                         f"{maximum}")
