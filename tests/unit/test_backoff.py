"""Backoff and TokenBucket, driven by a fake clock and a scripted random source."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xds.sources.backoff import Backoff, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_backoff_ceiling_doubles_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, random=lambda: 1.0)
    delays = [backoff.next_delay_s() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_is_full_jitter() -> None:
    # The whole interval is randomized: random() == 0.25 gives a quarter of the ceiling.
    backoff = Backoff(initial_s=0.5, max_s=30.0, random=lambda: 0.25)
    assert [backoff.next_delay_s() for _ in range(3)] == [0.125, 0.25, 0.5]


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, random=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay_s()
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay_s() == 0.5


def test_backoff_survives_a_very_long_outage() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, random=lambda: 1.0)
    for _ in range(5000):  # 2.0**5000 would overflow a float
        delay = backoff.next_delay_s()
    assert delay == 30.0


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=50))
def test_backoff_delays_stay_within_zero_and_the_cap(randoms: list[float]) -> None:
    values = iter(randoms)
    backoff = Backoff(initial_s=0.5, max_s=30.0, random=lambda: next(values))
    for _ in randoms:
        assert 0.0 <= backoff.next_delay_s() <= 30.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"initial_s": 0.0}, "initial_s"),
    ({"initial_s": 5.0, "max_s": 1.0}, "max_s"),
    ({"multiplier": 0.5}, "multiplier"),
])
def test_backoff_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_bucket_allows_a_burst_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2.0, burst=5, clock=clock)
    assert [bucket.reserve_s() for _ in range(5)] == [0.0] * 5
    # Reservations queue one behind the other, 1/rate apart.
    assert [bucket.reserve_s() for _ in range(3)] == [0.5, 1.0, 1.5]


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2.0, burst=5, clock=clock)
    for _ in range(5):
        bucket.reserve_s()
    clock.advance(1.0)
    assert bucket.available() == pytest.approx(2.0)
    clock.advance(100.0)
    assert bucket.available() == pytest.approx(5.0)  # never more than the burst


def test_bucket_bounds_a_loop_that_would_spin() -> None:
    """A loop that honours reserve_s() makes at most burst + rate * T calls in T seconds.

    docs/protocol.md R32."""
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2.0, burst=5, clock=clock)
    start = clock.now
    calls = 0
    while clock.now - start < 10.0:
        clock.advance(bucket.reserve_s())
        if clock.now - start < 10.0:
            calls += 1
    assert calls <= 5 + 2 * 10


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=1.0, burst=1, clock=clock)
    assert bucket.reserve_s() == 0.0
    clock.advance(-50.0)
    assert bucket.reserve_s() == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=rate, burst=burst)
