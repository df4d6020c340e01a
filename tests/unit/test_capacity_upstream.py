"""The benchmark upstreams' load bookkeeping (harness/capacity_upstream.py): pure, with explicit times."""

from __future__ import annotations

import math

import pytest

from harness.capacity_upstream import BusyMeter, Capacity, orca_header


def test_busy_seconds_integrate_busy_workers_over_time() -> None:
    meter = BusyMeter(4, tau_s=1.0, now=0.0)
    meter.acquire(0.0)
    meter.acquire(1.0)
    meter.release(3.0)  # two workers busy from 0 s and 1 s; one of them is done at 3 s

    assert meter.integral(3.0) == pytest.approx(3.0 + 2.0)
    assert meter.integral(5.0) == pytest.approx(5.0 + 2.0)  # the other is still busy
    assert meter.completed == 1 and meter.busy == 1


def test_smoothed_utilization_follows_the_busy_fraction_with_its_time_constant() -> None:
    meter = BusyMeter(2, tau_s=1.0, now=0.0)
    meter.acquire(0.0)  # one of two workers busy: a busy fraction of 0.5 from now on
    t = 0.0
    while t < 1.0 - 1e-9:
        t += 0.1
        meter.tick(t)

    # After one time constant an EWMA has covered 1 - 1/e of the step.
    assert meter.utilization == pytest.approx(0.5 * (1 - math.exp(-1)), rel=1e-6)
    while t < 20:
        t += 0.1
        meter.tick(t)
    assert meter.utilization == pytest.approx(0.5, abs=1e-6)


def test_completion_rate_is_smoothed_per_second() -> None:
    meter = BusyMeter(1, tau_s=0.5, now=0.0)
    t = 0.0
    for _ in range(200):  # 10 requests a second of 50 ms each, for 20 s
        meter.acquire(t)
        meter.release(t + 0.05)
        t += 0.1
        meter.tick(t)

    assert meter.rps == pytest.approx(10.0, rel=0.01)
    assert meter.utilization == pytest.approx(0.5, rel=0.01)


def test_orca_header_is_envoys_text_form_with_a_request_rate() -> None:
    # Envoy's client-side weighted round robin weighs a host by rps_fractional / utilization and drops a
    # report without a positive rps_fractional, so both must be there.
    assert orca_header(0.5, 0.2, 12.5) == \
        "TEXT cpu_utilization=0.5000,mem_utilization=0.2000,rps_fractional=12.500"


def test_capacity_round_trips_its_command_line_form() -> None:
    capacity = Capacity.parse("slow:8080:4:40")

    assert capacity == Capacity("slow", 8080, 4, 0.04)
    assert capacity.max_rps == pytest.approx(100)
    assert Capacity.parse(capacity.argument()) == capacity
    with pytest.raises(ValueError, match="NAME:PORT:WORKERS:SERVICE_MS"):
        Capacity.parse("slow:8080:4")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Capacity.parse("slow:8080:0:40")
