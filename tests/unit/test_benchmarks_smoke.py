"""Smoke test of the snapshot benchmark's code at tiny sizes: it runs and prints a complete table.

Timings are not asserted (they depend on the machine); only that every timed step printed a positive
number and that the sanity checks the benchmark makes on its own data passed. The convergence benchmark
starts real processes and is not run here: the end-to-end tests cover convergence correctness. The soak
benchmark runs for a few seconds at a tiny size: its verdict is not asserted (a few seconds of a starting
process say nothing about a slope), only that churn reached the clients and a slope was fitted.
"""

from __future__ import annotations

import io
import re

from benchmarks import change_path, snapshot_build, soak, stream_state

STEPS = (
    "parse_document (YAML file source)",
    "policy apply",
    "translate (cold)",
    "make_snapshot (serialize+hash+check)",
    "total build (build_snapshot)",
    "total build, resilience features on",
    "rebuild, 1 endpoint changed, previous=",
    "store.publish, 100 watchers",
    "3 streams: protocol + encode",
    "3 streams: encode_response only",
    "3 streams: naive Pack+Serialize",
    "change via file, incremental parse, 4 groups",
    "change via file, whole-document parse, 4 groups",
    "change via registry, 4 groups",
)
_NUMBER = r"(\d+(?:\.\d+)?)"


def _run(*args: str) -> str:
    out = io.StringIO()
    assert snapshot_build.main(list(args), out=out) == 0
    return out.getvalue()


def test_snapshot_benchmark_prints_a_table_of_positive_numbers() -> None:
    text = _run("--services", "20", "--endpoints", "2", "--runs", "1", "--streams", "3")

    for step in STEPS:
        match = re.search(rf"^{re.escape(step)}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s*$",
                          text, re.MULTILINE)
        assert match is not None, f"no row for {step!r} in:\n{text}"
        median, low, high, cpu = (float(g) for g in match.groups())
        assert median > 0 and cpu > 0, match.group(0)
        assert low <= median <= high, match.group(0)

    for ratio in ("rebuild with previous= / full build", "build with resilience features / without",
                  "naive / (protocol + encode)",
                  "naive / encode_response only"):
        match = re.search(rf"{re.escape(ratio)}: {_NUMBER}x", text)
        assert match is not None and float(match.group(1)) > 0, ratio

    for kind, count in (("CDS", 20), ("EDS", 20), ("LDS", 1), ("RDS", 1)):
        match = re.search(rf"^  {kind}: {count} resources, {_NUMBER} B", text, re.MULTILINE)
        assert match is not None and float(match.group(1)) > 0, kind
    # One endpoint changed: every resource but that service's ClusterLoadAssignment is shared.
    assert "CDS 20/20, EDS 19/20, LDS 1/1, RDS 1/1" in text
    assert "parses to the same World as built in memory: yes" in text
    assert "cached and naive responses carry the same resources: yes" in text
    assert "notified 100 of 100 watchers" in text
    assert re.search(r"protobuf \S+ \(backend \w+\)", text)
    assert re.search(r"cores: \d+", text)


def test_snapshot_benchmark_spreads_services_over_listeners() -> None:
    text = _run("--services", "6", "--endpoints", "1", "--listeners", "3", "--runs", "1", "--streams", "1",
                "--watchers", "2")

    assert "3 listener(s)" in text
    assert re.search(r"^  LDS: 3 resources", text, re.MULTILINE)
    assert re.search(r"^  RDS: 3 resources", text, re.MULTILINE)
    assert "notified 2 of 2 watchers" in text


def test_soak_benchmark_churns_to_connected_clients_and_fits_a_slope() -> None:
    out = io.StringIO()
    status = soak.main(["--duration", "3", "--services", "5", "--endpoints", "2", "--clients", "2",
                        "--sample", "0.5", "--warmup", "1"], out=out)
    text = out.getvalue()

    assert status in (0, 1), text  # flat or growing; 2 would mean the run itself failed
    samples = re.findall(rf"^\s+{_NUMBER}\s+{_NUMBER}\s+(\d+)\s+(\d+)$", text, re.MULTILINE)
    assert len(samples) == 7, text  # t = 0, 0.5, ..., 3
    assert all(float(rss) > 0 for _, rss, _, _ in samples)
    changes = re.search(r"^changes made: (\d+) .*EDS responses per client: (\d+), (\d+)$", text, re.MULTILINE)
    assert changes is not None, text
    made, *per_client = (int(g) for g in changes.groups())
    assert made >= 10 and all(count > 0 for count in per_client), text  # 10 changes/s reached both streams
    assert re.search(r"^slope after warm-up: [+-]\d+\.\d+ MiB/min \(linear fit over \d+ samples\)$", text,
                     re.MULTILINE), text
    assert re.search(r"^verdict: (flat|growing) \(threshold 0.5 MiB/min\)$", text, re.MULTILINE), text


def test_soak_slope_is_the_least_squares_fit_in_mib_per_minute() -> None:
    samples = [soak.Sample(t_s=t, rss_mib=100 + 0.05 * t, changes=0, responses=0) for t in range(0, 60, 5)]
    assert abs(soak.slope_mib_per_min(samples) - 3.0) < 1e-9


def test_stream_state_benchmark_prints_every_row_and_one_resource_per_change() -> None:
    out = io.StringIO()
    assert stream_state.main(["--services", "20", "--endpoints", "2", "--streams", "3", "--runs", "1"],
                             out=out) == 0
    text = out.getvalue()

    for variant in ("sotw", "delta"):
        for step in ("start-up CDS->EDS->LDS->RDS with ACKs", "one endpoint change + ACKs"):
            match = re.search(rf"^{variant}: {re.escape(step)}\s+{_NUMBER}\s+{_NUMBER}\s+{_NUMBER}\s*$", text,
                              re.MULTILINE)
            assert match is not None, f"no row for {variant} {step!r} in:\n{text}"
            assert all(float(g) > 0 for g in match.groups()), match.group(0)
        # One endpoint changed: each stream is sent that service's ClusterLoadAssignment and nothing else.
        assert f"{variant}: resources sent per stream per change: 1\n" in text
        match = re.search(rf"^{variant}: tracemalloc bytes per idle synced stream: (\d+)", text, re.MULTILINE)
        assert match is not None and int(match.group(1)) > 0, text


def test_change_path_benchmark_times_both_paths_and_profiles_them() -> None:
    out = io.StringIO()
    assert change_path.main(["--services", "12", "--endpoints", "2", "--groups", "2", "--runs", "1",
                             "--profile"], out=out) == 0
    text = out.getvalue()
    for row in ("change via file, incremental parse, 2 groups", "change via file, whole-document parse, "
                "2 groups", "change via registry, 2 groups"):
        match = re.search(rf"^  {re.escape(row)}\s+{_NUMBER}", text, re.MULTILINE)
        assert match is not None and float(match.group(1)) > 0, f"no row for {row!r} in:\n{text}"
        assert f"profile, {row}:" in text
