"""Raw xDS clients over plaintext or mTLS, and a TLS probe of the certificate a server presents.

For the mTLS end-to-end tests (tests/e2e/test_xds_mtls_e2e.py) and the handshake benchmark
(benchmarks/tls_handshake.py): they need what Envoy cannot easily express -- a stream that changes its node
midway, a fresh TCP+TLS connection per stream, the server certificate's serial as a client sees it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.pki import Issued

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


def channel(address: str, *, ca_pem: bytes | None = None, client: Issued | None = None,
            server_name: str = "localhost") -> grpc.aio.Channel:
    """A channel with its own connection (no subchannel shared with other channels of this process), so
    every channel pays its own TCP and TLS handshake. `ca_pem` None: plaintext."""
    options: list[tuple[str, str | int]] = [("grpc.use_local_subchannel_pool", 1)]
    if ca_pem is None:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None)
    options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(address, credentials, options=options)


def _request(type_url: str, node: base_pb2.Node | None) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(type_url=type_url)
    if node is not None:
        request.node.CopyFrom(node)
    return request


class AdsStream:
    """One ADS stream whose requests are queued by `send`; `recv` returns the next response or raises the
    stream's grpc.aio.AioRpcError (PERMISSION_DENIED, UNAVAILABLE after a failed handshake...)."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self._outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(chan).StreamAggregatedResources(
            self._requests())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (item := await self._outbox.get()) is not None:
            yield item

    def send(self, type_url: str = CLUSTER_TYPE, *, node_id: str | None = None, cluster: str = "") -> None:
        node = base_pb2.Node(id=node_id, cluster=cluster) if node_id is not None else None
        self._outbox.put_nowait(_request(type_url, node))

    async def recv(self, timeout_s: float = 10.0) -> discovery_pb2.DiscoveryResponse:
        message = await asyncio.wait_for(self._call.read(), timeout_s)
        if message is grpc.aio.EOF:
            raise AssertionError("the server ended the stream without a status")
        assert isinstance(message, discovery_pb2.DiscoveryResponse)
        return message

    def close(self) -> None:
        self._outbox.put_nowait(None)
        self._call.cancel()


async def first_config(address: str, *, node_id: str, cluster: str, ca_pem: bytes | None = None,
                       client: Issued | None = None, timeout_s: float = 10.0
                       ) -> discovery_pb2.DiscoveryResponse:
    """Connect (a new connection), open ADS as `node_id` in `cluster`, return the first CDS response."""
    async with channel(address, ca_pem=ca_pem, client=client) as chan:
        stream = AdsStream(chan)
        stream.send(node_id=node_id, cluster=cluster)
        try:
            return await stream.recv(timeout_s)
        finally:
            stream.close()


async def health_ok(address: str, *, ca_pem: bytes | None = None, client: Issued | None = None,
                    timeout_s: float = 5.0) -> bool:
    """A new connection (mTLS, or plaintext without `ca_pem`), then the gRPC health check: True when it
    answers at all (the handshake passed)."""
    async with channel(address, ca_pem=ca_pem, client=client) as chan:
        try:
            await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
    return True


def presented_certificate(port: int, *, ca_file: Path, cert_file: Path, key_file: Path,
                          server_name: str = "localhost", host: str = "127.0.0.1",
                          alpn: Sequence[str] = ("h2",)) -> x509.Certificate:
    """The leaf certificate the server presents to a new TLS handshake (Python's `ssl`, not gRPC)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(list(alpn))
    with socket.create_connection((host, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None, "the server presented no certificate"
    return x509.load_der_x509_certificate(der)
