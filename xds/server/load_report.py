"""The load report API (protos/xds/load/v1/load.proto, issue 10) on its own gRPC listener.

An agent or the application reports one endpoint's CPU and memory utilization; the load engine
(xds/load_engine.py) checks and keeps it. Its listener follows the management API's exposure rule
(docs/security.md, "The management API and secrets"): loopback, unless bearer tokens authenticate callers.
A report moves weights, so with tokens configured it needs the `admin` role (xds/server/management_auth.py:
a method it does not list needs admin).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from xds.addresses import host_of, is_loopback_host
from xds.load.v1 import load_pb2 as pb
from xds.load.v1 import load_pb2_grpc
from xds.server.management_auth import BearerAuthInterceptor, ManagementAuthConfig, TokenAuthenticator

# Reports are tens of bytes; a small cap keeps one client from making the server buffer megabytes.
MAX_MESSAGE_BYTES = 4096
# Concurrent streams per connection: an agent needs one; more is a misbehaving client.
MAX_CONCURRENT_STREAMS = 100

# (address, cpu, memory) -> None when taken, else the reason it was refused.
Submit = Callable[[str, float, float], "str | None"]


class LoadReportExposureError(ValueError):
    """The report API would listen beyond loopback with nothing to authenticate its callers."""


class LoadReportService:
    """Implements xds.load.v1.LoadReporting over a `submit` callable."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    def add_to_server(self, server: grpc.aio.Server) -> None:
        load_pb2_grpc.add_LoadReportingServicer_to_server(self, server)

    def _take(self, report: pb.LoadReport, reply: pb.ReportReply) -> None:
        reason = self._submit(report.address, report.cpu_utilization, report.memory_utilization)
        if reason is None:
            reply.accepted += 1
        else:
            reply.rejected += 1
            reply.last_rejection = reason

    async def Report(  # noqa: N802 (the generated handler table calls it by its proto name)
        self, request: pb.LoadReport, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ReportReply:
        reply = pb.ReportReply()
        self._take(request, reply)
        return reply

    async def StreamReports(  # noqa: N802 (the generated handler table calls it by its proto name)
        self, request_iterator: AsyncIterator[pb.LoadReport], context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ReportReply:
        # Every report goes through the same checks, the per-endpoint rate limit included, so a flood on one
        # stream costs a comparison per message and moves nothing.
        reply = pb.ReportReply()
        async for report in request_iterator:
            self._take(report, reply)
        return reply


def check_exposure(address: str, *, auth: ManagementAuthConfig | None) -> None:
    if is_loopback_host(host_of(address)) or (auth is not None and auth.configured):
        return
    raise LoadReportExposureError(
        f"--load-report-address {address} is not a loopback address and no management token is configured: "
        "anyone who can reach it could move endpoint weights. Give a token file (--management-admin-token-"
        "file PATH or XDS_MANAGEMENT_ADMIN_TOKEN_FILE) or listen on 127.0.0.1")


LOAD_REPORT_SERVICE: str = next(iter(pb.DESCRIPTOR.services_by_name.values())).full_name


def build_load_report_server(service: LoadReportService, *, address: str, auth: ManagementAuthConfig | None,
                             on_deny: Callable[[str], None],
                             extra: Sequence[Callable[[grpc.aio.Server], None]] = ()
                             ) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with only the report service, bound to `address`; returns it and the port."""
    check_exposure(address, auth=auth)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if auth is not None and auth.configured:
        interceptors.append(BearerAuthInterceptor(TokenAuthenticator(auth), on_deny=on_deny))
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS)])
    service.add_to_server(server)
    for add in extra:  # health (issue 11 item 3)
        add(server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the load report API to {address}")
    return server, port
