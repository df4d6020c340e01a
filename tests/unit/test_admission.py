"""Issue 12: connect-storm admission (xds/server/admission.py) on a fake clock."""

from __future__ import annotations

import pytest

from xds.server.admission import (
    STARTS_LIMIT,
    SYNCS_LIMIT,
    Admission,
    AdmissionSettings,
    EveryInterval,
    Refusal,
    Ticket,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_defaults_admit_everything() -> None:
    admission = Admission(AdmissionSettings(), clock=Clock())
    tickets = [admission.admit() for _ in range(10_000)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert admission.syncing == 10_000 and admission.refused == 0


def test_starts_per_second_admits_the_burst_then_the_rate() -> None:
    clock = Clock()
    admission = Admission(AdmissionSettings(starts_per_s=10, start_burst=5), clock=clock)
    first = [admission.admit() for _ in range(6)]
    assert [isinstance(t, Ticket) for t in first] == [True] * 5 + [False]
    refusal = first[-1]
    assert isinstance(refusal, Refusal) and refusal.limit == STARTS_LIMIT
    assert "10 new streams per second" in refusal.message and "retry" in refusal.message
    clock.now += 0.1  # one token back
    assert isinstance(admission.admit(), Ticket)
    assert isinstance(admission.admit(), Refusal)
    clock.now += 60  # the bucket refills to its burst, not beyond
    assert sum(isinstance(admission.admit(), Ticket) for _ in range(20)) == 5
    assert admission.refused == 2 + 15


def test_the_burst_defaults_to_one_seconds_worth() -> None:
    admission = Admission(AdmissionSettings(starts_per_s=3), clock=Clock())
    assert sum(isinstance(admission.admit(), Ticket) for _ in range(10)) == 3


def test_initial_syncs_are_bounded_and_a_released_ticket_makes_room() -> None:
    admission = Admission(AdmissionSettings(max_initial_syncs=2), clock=Clock())
    a, b = admission.admit(), admission.admit()
    assert isinstance(a, Ticket) and isinstance(b, Ticket)
    refused = admission.admit()
    assert isinstance(refused, Refusal) and refused.limit == SYNCS_LIMIT
    assert "--max-initial-syncs" in refused.message
    a.release()
    a.release()  # idempotent: a stream releases at its sync and again when it ends
    assert admission.syncing == 1 and not a.held and b.held
    assert isinstance(admission.admit(), Ticket)
    assert isinstance(admission.admit(), Refusal)


def test_a_refusal_by_the_sync_bound_takes_no_rate_token() -> None:
    clock = Clock()
    admission = Admission(AdmissionSettings(starts_per_s=1, start_burst=1, max_initial_syncs=1), clock=clock)
    first = admission.admit()
    assert isinstance(first, Ticket)
    clock.now += 1
    assert isinstance(admission.admit(), Refusal)  # syncs full: the token is still there
    first.release()
    assert isinstance(admission.admit(), Ticket)


@pytest.mark.parametrize("field", ["starts_per_s", "start_burst", "max_initial_syncs"])
def test_negative_settings_are_refused_by_name(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AdmissionSettings(**{field: -1})


def test_the_refusal_log_is_folded_to_one_line_per_interval() -> None:
    clock = Clock()
    every = EveryInterval(1.0, clock=clock)
    assert every.due() == 1  # the first refusal is logged at once
    assert [every.due() for _ in range(99)] == [0] * 99
    clock.now += 1.0
    assert every.due() == 100  # the next line counts all folded since
    assert every.due() == 0
