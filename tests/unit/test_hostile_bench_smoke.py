"""Smoke test of benchmarks/hostile_clients.py at its --quick size against this checkout's server.

It starts real `xds serve` processes on 127.0.0.1 (a tiny catalog, a dozen churn groups), so it checks that
the benchmark's clients, probes and table work end to end. Sizes and timings are not asserted (they depend
on the machine); what is asserted is that every scenario printed its rows, that the hostile clients got
the statuses this checkout's limits give (issue 7), and that the numbers are plausible.
"""

from __future__ import annotations

import io
import re

from benchmarks import hostile_clients

COMMON = ("client status", "log written (KB)", "/healthz max (ms)", "/status size (KB)",
          "ListProxies size (KB)", "groups held at end", "fresh client CDS (ms)")
EXPECTED = {
    "groups-idle": ("RSS growth (MB)", "groups held after churn", "edit->client s, 0 groups (median)",
                    "edit->client s, after churn (median)"),
    "groups-expired": ("groups held after grace", "edit->client s, after churn (median)"),
    "node-id-8mib": ("RSS growth (MB)",),
    "node-id-1mib": ("RSS growth (MB)",),
    "unread-14mib": ("RSS held, client connected (MB)", "RSS growth after disconnect (MB)",
                     "requests written"),
    "unread-3.9mib": ("RSS held, client connected (MB)", "requests written"),
    "eds-100k": ("assignments in one answer",),
    "eds-20k": ("assignments in one answer", "one answer (KB)"),
    "deep-metadata": ("client status, 20 levels",),
    "stuck-reader": ("RSS held, client connected (MB)", "catalog changes", "write timeouts counted"),
}


def _table(text: str) -> dict[tuple[str, str], str]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in EXPECTED:
            rows[(cells[0], cells[1])] = cells[2]
    return rows


def _number(rows: dict[tuple[str, str], str], scenario: str, metric: str) -> float:
    value = rows[(scenario, metric)]
    assert re.fullmatch(r"-?\d+(\.\d+)?", value), f"{scenario} {metric}: {value!r}"
    return float(value)


def test_quick_run_prints_every_scenario_with_the_statuses_of_the_limits() -> None:
    out = io.StringIO()
    assert hostile_clients.main(["--quick"], out=out) == 0, out.getvalue()
    text = out.getvalue()
    rows = _table(text)

    for scenario, specific in EXPECTED.items():
        for metric in (*COMMON, *specific):
            assert (scenario, metric) in rows, f"no row {scenario} / {metric} in:\n{text}"
        assert _number(rows, scenario, "/healthz max (ms)") > 0
        assert _number(rows, scenario, "log written (KB)") < 100  # no client-supplied blob in the log
        assert _number(rows, scenario, "/status size (KB)") < 100
        assert _number(rows, scenario, "ListProxies size (KB)") < 100
        assert _number(rows, scenario, "fresh client CDS (ms)") > 0  # a number: the fresh client got CDS

    quick = hostile_clients.QUICK
    assert rows[("groups-idle", "client status")] == f"{quick.groups} OK"
    assert _number(rows, "groups-idle", "groups held after churn") == quick.groups + 1  # and `healthy`
    assert _number(rows, "groups-expired", "groups held after grace") <= 1
    assert _number(rows, "groups-idle", "edit->client s, after churn (median)") > 0
    assert rows[("node-id-8mib", "client status")] == f"{quick.node_id_streams}x RESOURCE_EXHAUSTED"
    assert rows[("node-id-1mib", "client status")] == f"{quick.node_id_streams}x INVALID_ARGUMENT"
    # gRPC refuses the oversized message before the handler sees it; the client gets the server's
    # RESOURCE_EXHAUSTED, or INTERNAL when the stream's reset reaches it while it is still writing.
    assert rows[("unread-14mib", "client status")].split()[0] in ("RESOURCE_EXHAUSTED", "INTERNAL")
    assert _number(rows, "unread-14mib", "requests written") <= 2
    assert _number(rows, "unread-14mib", "RSS held, client connected (MB)") > 0
    assert rows[("eds-100k", "client status")] == f"{quick.eds_streams}x INVALID_ARGUMENT"
    assert rows[("eds-20k", "client status")] == f"{quick.eds_streams}x OK"
    # Only names of the snapshot and at most 1000 placeholders (the default budget per stream).
    assert 0 < _number(rows, "eds-20k", "assignments in one answer") <= 1000 + quick.services
    assert rows[("deep-metadata", "client status")] == "INVALID_ARGUMENT"
    assert rows[("deep-metadata", "client status, 20 levels")] == "INVALID_ARGUMENT"
    assert _number(rows, "stuck-reader", "catalog changes") == quick.stuck_changes
    assert rows[("stuck-reader", "client status")] in ("open (never read)", "UNAVAILABLE")
    assert "benchmark process peak RSS" in text
