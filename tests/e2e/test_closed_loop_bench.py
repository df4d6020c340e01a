"""Smoke test of benchmarks/closed_loop.py at its --quick size: the code works end to end, in every mode.

It starts the real processes (capacity upstreams, the control plane, one Envoy per mode) and sends a light
open-loop rate for a few seconds per mode. Latencies are not asserted (they depend on the machine, and at
this rate nothing is overloaded); what is asserted is that every mode printed its row with every request
answered, and that the two load signals arrived where they go: Envoy's client-side weights follow the
upstreams' ORCA headers (the slow upstream, half the capacity, gets about half the weight), and in
load_aware mode the control plane took the upstreams' reports and refused none.
"""

from __future__ import annotations

import io
import re

from benchmarks import closed_loop


def _row(text: str, mode: str) -> list[str]:
    match = re.search(rf"^{mode}\s+(.*)$", text, re.MULTILINE)
    assert match is not None, f"no row for {mode} in:\n{text}"
    return match.group(1).split()


def test_quick_run_prints_every_mode_and_the_load_signals_arrive() -> None:
    out = io.StringIO()
    assert closed_loop.main(["--quick"], out=out) == 0, out.getvalue()
    text = out.getvalue()

    counts = set()
    for mode in closed_loop.MODES:
        requests, p50, p99, top, errors, share, utilization, weights = _row(text, mode)
        counts.add(int(requests))
        assert int(errors) == 0, text
        assert 0 < float(p50) <= float(p99) <= float(top), text
        assert sum(int(s) for s in share.split("/")) in (99, 100, 101), text  # rounded percentages
        assert all(0 <= int(u) <= 100 for u in utilization.split("/")), text
        fast_1, fast_2, slow = (int(w) for w in weights.split("/"))
        if mode == "client_side_weighted":
            # Envoy weighs a host by rps / utilization from its ORCA headers: about its capacity.
            assert slow < 0.75 * min(fast_1, fast_2), text
        elif mode != "load_aware":
            assert (fast_1, fast_2, slow) == (1, 1, 1), text
        line = re.search(rf"^{mode}: control plane took (\d+) load reports, refused (\d+)\b", text,
                         re.MULTILINE)
        assert line is not None, text
        if mode == "load_aware":
            assert int(line.group(1)) > 0 and int(line.group(2)) == 0, text
    assert len(counts) == 1, text  # the same schedule for every mode
    assert re.search(r"^  load_aware\s+p50\s+\d+\.\d+x\s+p99\s+\d+\.\d+x", text, re.MULTILINE), text
