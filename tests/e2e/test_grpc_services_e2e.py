"""What a gRPC client sees of the control plane process (issue 11 item 3): health for every service on
every port, calls to unserved methods logged and counted, and server reflection behind --grpc-reflection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from harness import ControlPlaneProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
XDS_SERVICES = ("envoy.service.discovery.v3.AggregatedDiscoveryService",
                "envoy.service.cluster.v3.ClusterDiscoveryService",
                "envoy.service.endpoint.v3.EndpointDiscoveryService",
                "envoy.service.listener.v3.ListenerDiscoveryService",
                "envoy.service.route.v3.RouteDiscoveryService",
                "envoy.service.secret.v3.SecretDiscoveryService")
RUNTIME = "/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime"


@pytest.fixture
def control_plane(workdir: Path, control_plane_factory: Any) -> ControlPlaneProcess:
    catalog = workdir / "catalog.yaml"
    catalog.write_text("version: 1\nservices:\n  - name: web\n    endpoints: [{address: '127.0.0.1:9'}]\n")
    process: ControlPlaneProcess = control_plane_factory(catalog, extra_args=("--grpc-reflection",))
    return process


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        status: int = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status


def test_health_answers_for_every_service_on_every_port(control_plane: ControlPlaneProcess) -> None:
    for service in ("", *XDS_SERVICES):
        assert _health(control_plane.xds_address, service) == SERVING, service
    assert _health(control_plane.management_address, "xds.management.v1.Management") == SERVING
    assert _health(f"127.0.0.1:{control_plane.load_report_port}", "") == SERVING
    with pytest.raises(grpc.RpcError) as raised:
        _health(control_plane.xds_address, "xds.management.v1.Management")  # not on this port
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def _call(address: str, method: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        stream = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        try:
            list(stream(iter([b""]), timeout=5))
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    raise AssertionError(f"{method} answered without an error")


def _counter(text: str, method: str) -> float:
    match = re.search(rf'^xds_unimplemented_calls_total{{method="{re.escape(method)}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_unserved_methods_are_counted_and_logged(control_plane: ControlPlaneProcess) -> None:
    assert _call(control_plane.xds_address, RUNTIME) == grpc.StatusCode.UNIMPLEMENTED
    assert _call(control_plane.xds_address, "/made.up.Service/Anything") == grpc.StatusCode.UNIMPLEMENTED
    metrics = control_plane.metrics_text()
    assert _counter(metrics, RUNTIME) == 1
    assert _counter(metrics, "other") == 1  # a client-chosen name never becomes a label
    assert "made.up.Service" not in metrics
    log = control_plane.tail(200)
    assert "unimplemented_method" in log and RUNTIME in log and "/made.up.Service/Anything" in log


def test_reflection_lists_the_xds_services(control_plane: ControlPlaneProcess) -> None:
    with grpc.insecure_channel(control_plane.xds_address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert set(XDS_SERVICES) <= services
        assert "grpc.health.v1.Health" in services


def test_health_needs_no_token_where_the_management_api_does(workdir: Path, control_plane_factory: Any
                                                              ) -> None:
    catalog = workdir / "catalog.yaml"
    catalog.write_text("version: 1\nservices:\n  - name: web\n    endpoints: [{address: '127.0.0.1:9'}]\n")
    token_file = workdir / "read.token"
    token_file.write_text("a-management-token-of-enough-length-0123456789\n")
    control_plane = control_plane_factory(catalog, env={"XDS_MANAGEMENT_TOKEN_FILE": str(token_file)})
    # Probes cannot send a token; health says SERVING and nothing else, so it answers without one.
    assert _health(control_plane.management_address, "xds.management.v1.Management") == SERVING
    assert _health(f"127.0.0.1:{control_plane.load_report_port}", "") == SERVING
    address = control_plane.management_address
    with pytest.raises(grpc.RpcError) as raised, grpc.insecure_channel(address) as ch:
        ch.unary_unary("/xds.management.v1.Management/ListProxies", request_serializer=None,
                       response_deserializer=None)(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
