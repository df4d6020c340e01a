"""Metrics: drive the callbacks and reports, then read the values back from the rendered text format."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xds import typeurls
from xds.cache.store import BuildReport
from xds.observability.metrics import Metrics
from xds.server.callbacks import StreamInfo

STREAM = StreamInfo(stream_id=1, node_id="n", group="g", peer="ipv4:127.0.0.1:1", method="ads")


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def test_series_exist_at_zero_before_any_event() -> None:
    m = Metrics()
    for t in ("cds", "eds", "lds", "rds"):
        assert value(m, "xds_pushes_total", type=t) == 0
        assert value(m, "xds_acks_total", type=t) == 0
        assert value(m, "xds_nacks_total", type=t) == 0
        assert value(m, "xds_response_bytes_count", type=t) == 0
    for method in ("ads", "cds", "eds", "lds", "rds"):
        assert value(m, "xds_connected_streams", method=method) == 0
    assert value(m, "xds_snapshot_build_errors_total") == 0


def test_instances_do_not_share_series() -> None:
    a, b = Metrics(), Metrics()
    a.on_stream_open(STREAM)
    assert value(a, "xds_connected_streams", method="ads") == 1
    assert value(b, "xds_connected_streams", method="ads") == 0


def test_connected_streams_by_method() -> None:
    m = Metrics()
    eds = StreamInfo(stream_id=2, node_id="n", group="g", peer="p", method="eds")
    m.on_stream_open(STREAM)
    m.on_stream_open(eds)
    m.on_stream_open(StreamInfo(stream_id=3, node_id="m", group="g", peer="p", method="ads"))
    m.on_stream_closed(STREAM)
    assert value(m, "xds_connected_streams", method="ads") == 1
    assert value(m, "xds_connected_streams", method="eds") == 1


def test_pushes_bytes_acks_and_nacks_by_type() -> None:
    m = Metrics()
    m.on_response_sent(STREAM, type_url=typeurls.CLUSTER, version="v1", nonce="1", resource_names=(),
                       size_bytes=500)
    m.on_response_sent(STREAM, type_url=typeurls.CLUSTER, version="v2", nonce="2", resource_names=(),
                       size_bytes=5 * 1024 * 1024)
    m.on_response_sent(STREAM, type_url=typeurls.ENDPOINT, version="v1", nonce="3", resource_names=("a",),
                       size_bytes=2000)
    m.on_ack(STREAM, type_url=typeurls.CLUSTER, version="v1", nonce="1")
    m.on_nack(STREAM, type_url=typeurls.CLUSTER, version="v1", nonce="2", rejected_version="v2", message="no")
    assert value(m, "xds_pushes_total", type="cds") == 2
    assert value(m, "xds_pushes_total", type="eds") == 1
    assert value(m, "xds_response_bytes_count", type="cds") == 2
    assert value(m, "xds_response_bytes_sum", type="cds") == 500 + 5 * 1024 * 1024
    assert value(m, "xds_response_bytes_bucket", type="cds", le="1024.0") == 1
    # 5 MiB lands above gRPC's 4 MiB default limit bucket: the reason the bucket is there.
    assert value(m, "xds_response_bytes_bucket", type="cds", le="4.194304e+06") == 1
    assert value(m, "xds_response_bytes_bucket", type="cds", le="1.048576e+07") == 2
    assert value(m, "xds_acks_total", type="cds") == 1
    assert value(m, "xds_nacks_total", type="cds") == 1
    assert value(m, "xds_nacks_total", type="eds") == 0


def test_unknown_type_url_gets_its_own_series() -> None:
    m = Metrics()
    m.on_ack(STREAM, type_url="type.googleapis.com/envoy.other", version="v", nonce="1")
    assert value(m, "xds_acks_total", type="type.googleapis.com/envoy.other") == 1


def test_build_reports() -> None:
    m = Metrics()
    m.on_build(BuildReport(group="g", seconds=0.002, ok=True))
    m.on_build(BuildReport(group="g", seconds=0.3, ok=False, error="dangling reference"))
    assert value(m, "xds_snapshot_build_seconds_count") == 2
    assert value(m, "xds_snapshot_build_seconds_sum") == pytest.approx(0.302)
    assert value(m, "xds_snapshot_build_errors_total") == 1


def test_source_sync_error_and_recovery() -> None:
    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    m.source_synced("consul")
    assert value(m, "xds_source_last_sync_timestamp_seconds", source="consul") == 1000.0
    assert value(m, "xds_source_stale", source="consul") == 0
    assert value(m, "xds_source_errors_total", source="consul") == 0
    now[0] = 1010.0
    m.source_error("consul", "connection refused")
    m.source_error("consul", "connection refused")
    assert value(m, "xds_source_stale", source="consul") == 1
    assert value(m, "xds_source_errors_total", source="consul") == 2
    # The timestamp still says when the data being served was last fresh.
    assert value(m, "xds_source_last_sync_timestamp_seconds", source="consul") == 1000.0
    now[0] = 1020.0
    m.source_synced("consul")
    assert value(m, "xds_source_stale", source="consul") == 0
    assert value(m, "xds_source_last_sync_timestamp_seconds", source="consul") == 1020.0


def test_source_error_before_first_sync_is_stale() -> None:
    m = Metrics()
    m.source_error("files", "parse error")
    assert value(m, "xds_source_stale", source="files") == 1
    assert ("xds_source_last_sync_timestamp_seconds", frozenset({("source", "files")})) not in samples(m)


def test_process_metrics_are_exported() -> None:
    names = {name for name, _ in samples(Metrics())}
    assert "process_cpu_seconds_total" in names
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names


def test_content_type_matches_the_format_rendered() -> None:
    assert Metrics.CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_convergence_histogram_observes_acks_that_carry_it() -> None:
    m = Metrics()
    m.on_ack(STREAM, type_url=typeurls.ENDPOINT, version="v1", nonce="1", convergence_s=0.02)
    m.on_ack(STREAM, type_url=typeurls.ENDPOINT, version="v1", nonce="2")  # no interval known: not observed
    text = m.render().decode()
    assert 'xds_convergence_seconds_count{type="eds"} 1.0' in text
    assert 'xds_convergence_seconds_bucket{le="0.05",type="eds"} 1.0' in text
