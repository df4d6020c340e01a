"""The one place where sources, pipeline, cache, server and observability are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import grpc

from xds.addresses import is_loopback_host
from xds.cache.history import SnapshotHistory, recorded
from xds.cache.node import NodeGrouper
from xds.cache.quarantine import Quarantine, Rejection, quarantined
from xds.cache.store import SnapshotStore
from xds.console.view import ConsoleData
from xds.console.web import Authorize, ConsoleRoutes
from xds.load_engine import LoadEngine
from xds.observability.admin import AdminServer
from xds.observability.load_metrics import LoadCollector
from xds.observability.metrics import Metrics
from xds.observability.quarantine_metrics import QuarantineCollector
from xds.observability.ready_metrics import ReadyCollector
from xds.observability.source_metrics import SourceStatusCollector
from xds.observability.tls_metrics import TlsMetrics
from xds.observability.workload_metrics import WorkloadCaCollector
from xds.pipeline import Pipeline, builder_for, with_tls_material
from xds.policy.errors import PolicyError
from xds.secrets import redact, redact_mapping, register_secret
from xds.server.admission import Admission, AdmissionSettings
from xds.server.callbacks import MultiCallbacks
from xds.server.grpc_server import HealthReporter, ServerOptions, build_server
from xds.server.identity import IdentityRule
from xds.server.limits import StreamLimits
from xds.server.load_report import LOAD_REPORT_SERVICE, LoadReportService, build_load_report_server
from xds.server.management import (
    MANAGEMENT_SERVICE,
    ManagementService,
    RegistryState,
    SourceState,
    resource_json,
)
from xds.server.management_auth import TokenAuthenticator
from xds.server.management_server import build_management_server
from xds.server.nack_loop import NackLoop
from xds.server.peer_auth import PeerAuthorizer
from xds.server.registry import ProxyRegistry
from xds.server.stream import StreamHandler
from xds.server.tls_material import TlsPaths
from xds.server.tls_reload import TlsReloader
from xds.settings import Settings, split_address
from xds.source_kinds import KINDS
from xds.sources.base import Source, SourceUpdate
from xds.sources.files import FileSource
from xds.sources.registry.status import ReportsStatus, SourceStatus
from xds.sources.rejections import RejectionSink
from xds.sources.tls_files import TlsFiles
from xds.translate.stats_listener import StatsListenerSpec
from xds.workload_ca import CaFileWatcher, ca_files, open_identities, rotate_forever
from xds.workload_ca import describe as describe_ca

log = logging.getLogger("xds.app")


class App:
    """The control plane process. Construct (no I/O), then `await run()` until cancelled."""

    def __init__(self, settings: Settings, *, sources: Sequence[Source] | None = None,
                 server_options: ServerOptions | None = None) -> None:
        self.settings = settings
        self.sources: tuple[Source, ...] = tuple(sources) if sources is not None else _sources_from(settings)
        if not self.sources:
            raise ValueError("no source configured: give at least one --config file, --consul-address or "
                             "--kube")
        self.metrics = Metrics()
        self.registry = ProxyRegistry()
        self.store = SnapshotStore(on_build=self.metrics.on_build, max_groups=settings.max_node_groups,
                                   idle_grace_s=settings.node_group_grace_s)
        self.metrics.watch_groups(self.store.counts)
        # The closed NACK loop (issue 11 item 4): what proxies rejected is held back per node group.
        self.quarantine = Quarantine()
        self.metrics.registry.register(QuarantineCollector(self.quarantine))
        # Every registry source's SourceStatus, read at scrape time (issue 13).
        self.metrics.registry.register(SourceStatusCollector(self.source_statuses))
        self._rejections_reported = 0
        # The last configuration changes with diffs, for the web console (issue 14 item 1, docs/console.md).
        self.history = SnapshotHistory(render=resource_json)
        # The workload CA (issue 9): loaded or created before anything serves; a bad CA file is fatal here.
        files = ca_files(settings.ca_cert, settings.ca_key)
        self.workload = open_identities(files, trust_domain=settings.trust_domain,
                                        lifetime_s=settings.workload_cert_ttl_s)
        self._ca_watcher = CaFileWatcher(files, self.workload) if files is not None else None
        self.pipeline = Pipeline([s.name for s in self.sources], trust_domain=settings.trust_domain,
                                 workload=self.workload, xds_cluster=settings.xds_cluster_name,
                                 stats_listener=(StatsListenerSpec(settings.envoy_stats_port,
                                                                   settings.envoy_stats_address)
                                                 if settings.envoy_stats_port else None))
        watcher = self._ca_watcher
        self.metrics.registry.register(WorkloadCaCollector(
            issued=lambda: self.workload.issued_total,
            ca_expiry_unix=lambda: self.workload.ca.not_after.timestamp(),
            reload_errors=lambda: watcher.reload_errors if watcher is not None else 0))
        # Readiness as a series, for the "no ready replica" alert (issue 14, deploy/prometheus/alerts.yaml).
        self.metrics.registry.register(ReadyCollector(lambda: self.ready))
        # Load-aware weights (issue 10, docs/load-aware.md): reports in, factors into every build's World.
        self.load = LoadEngine(settings.load, on_change=self._schedule_rebuild)
        self.metrics.registry.register(LoadCollector(rows=self.load.rows, accepted=self.load.accepted,
                                                     rejected=self.load.rejected, updates=self.load.updates))
        self.load_report_port: int | None = None
        self.health = HealthReporter()
        self.tls_files = TlsFiles()  # the TLS files policies name, last good of each (issue 9 item 7)
        self.source_errors: dict[str, str] = {}
        self.source_synced_at: dict[str, float] = {}
        self.policy_error: str = ""
        self.xds_port: int | None = None
        self.admin_port: int | None = None
        self.management_port: int | None = None
        self.started = asyncio.Event()
        self._server_options = server_options or ServerOptions(
            max_receive_message_bytes=settings.max_request_bytes)
        self._limits = StreamLimits(max_streams=settings.max_streams,
                                    write_timeout_s=settings.write_timeout_s)
        # Connect-storm admission (issue 12; docs/operations.md "Connect storms").
        self.admission = Admission(AdmissionSettings(starts_per_s=settings.max_stream_starts_per_s,
                                                     max_initial_syncs=settings.max_initial_syncs))
        self._rebuild_handle: asyncio.TimerHandle | None = None
        self._build_task: asyncio.Task[None] | None = None
        self._rebuild_pending = False
        self._first_publish = asyncio.Event()
        # mTLS on the xDS port (issue 9, docs/security.md): all three files or none.
        self.tls_metrics = TlsMetrics(self.metrics.registry)
        self.tls = _tls_reloader(settings, self.tls_metrics)
        self._identity_rule = IdentityRule(settings.identity_rule)
        # Secrets known from the configuration are redacted from every error, log line and status page
        # (docs/security.md, "The management API and secrets"); management tokens register when read.
        for kind in KINDS:
            if (config := settings.registry_config(kind.name)) is not None:
                for secret in kind.secrets(config):
                    register_secret(secret)

    # ---------------------------------------------------------------- SourceSink

    def publish(self, update: SourceUpdate) -> None:
        self.pipeline.accept(update)
        self.source_errors.pop(update.source, None)
        self.source_synced_at[update.source] = time.time()
        self.metrics.source_synced(update.source)
        log.info("source_updated", extra={"source": update.source, "services": len(update.catalog)})
        self._schedule_rebuild()

    def report_error(self, source: str, message: str) -> None:
        # Sources redact where errors enter; this is the net for any path that did not (issue 9).
        message = redact(message)
        self.source_errors[source] = message
        self.metrics.source_error(source, message)
        log.error("source_error", extra={"source": source, "error": message})

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """Every source has synced once and a snapshot builder is published (docs/protocol.md R26)."""
        return self.store.ready

    def _schedule_rebuild(self) -> None:
        if self._rebuild_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._rebuild_handle = loop.call_later(self.settings.debounce_s, self._rebuild)

    def _rebuild(self) -> None:
        self._rebuild_handle = None
        if self._build_task is not None and not self._build_task.done():
            # One build at a time; the one running picks up this change when it is done.
            self._rebuild_pending = True
            return
        self._build_task = asyncio.get_running_loop().create_task(self._build(), name="snapshot-build")

    async def _build(self) -> None:
        self._rebuild_pending = False
        if not self.pipeline.synced:
            log.info("waiting_for_sources", extra={"missing": self.pipeline.missing()})
            return
        try:
            world = self.pipeline.world()
            world = await asyncio.to_thread(with_tls_material, world, self.tls_files)
        except PolicyError as exc:
            # Conflicting policies from two sources: keep serving the last good world (R38).
            self.policy_error = str(exc)
            log.error("policy_rejected", extra={"error": str(exc)})
            return
        self.policy_error = ""
        self.load.set_world(world.catalog, world.policy)
        world = replace(world, loads=self.load.factors())
        # Translation and serialization are CPU work proportional to the catalog (36 ms at 1000 services,
        # benchmarks/README.md): a worker thread keeps streams' ACKs and keepalives moving meanwhile. The
        # store is thread-safe and wakes streams through call_soon_threadsafe.
        # Recorded outermost: the history shows what groups are served, quarantine included (issue 14).
        await asyncio.to_thread(self.store.publish,
                                recorded(quarantined(builder_for(world), self.quarantine), self.history))
        self._report_rejections()
        if not self._first_publish.is_set():
            self._first_publish.set()
            await self.health.set_serving(True)
            log.info("serving", extra={"groups": self.store.groups()})
        if self._rebuild_pending:
            self._schedule_rebuild()

    def _on_rejected(self, changed: Sequence[Rejection]) -> None:
        """A proxy rejected resources: rebuild (the snapshots hold them back) and tell their sources."""
        self._schedule_rebuild()
        self._report_rejections()

    def _report_rejections(self) -> None:
        """Hand the quarantined resources to every source that reports status, when they changed."""
        generation = self.quarantine.generation
        if generation == self._rejections_reported:
            return
        self._rejections_reported = generation
        rejections = self.quarantine.rejections()
        for source in self.sources:
            if isinstance(source, RejectionSink):
                source.report_rejections(rejections)

    # -------------------------------------------------------------------- run

    async def run(self) -> None:
        credentials, authorizer = None, None
        if self.tls is not None:
            self.tls.load()  # a TlsMaterialError here is fatal: the caller reports it and exits
            credentials = self.tls.credentials()
            authorizer = PeerAuthorizer(trust_domain=self.settings.trust_domain, rule=self._identity_rule,
                                        on_denied=self.tls_metrics.identity_denied)
        elif not is_loopback_host(split_address(self.settings.xds_address)[0]):
            log.warning("plaintext_xds_port", extra={
                "address": self.settings.xds_address,
                "hint": "any client that reaches this address can claim any node and read its group's "
                        "config; give --tls-cert, --tls-key and --client-ca (docs/security.md)"})
        nack_loop = NackLoop(self.quarantine, on_change=self._on_rejected)
        handler = StreamHandler(self.store, grouper=NodeGrouper(self.settings.node_group_key),
                                callbacks=MultiCallbacks(self.registry, self.metrics, nack_loop),
                                limits=self._limits,
                                on_limit=self.metrics.limit_exceeded, authorizer=authorizer,
                                admission=self.admission)
        management = ManagementService(self.registry, self.store, sources=self.source_states,
                                       loads=self.load.rows, quarantined=self.quarantine.rejections)
        server, self.xds_port = build_server(
            handler, address=self.settings.xds_address, options=self._server_options,
            extra=(self.health.add_to,), credentials=credentials,
            on_unimplemented=self.metrics.unimplemented_call, reflection=self.settings.grpc_reflection)
        # Health on every port, for the services each one serves (issue 11 item 3): these serve at once.
        management_health, load_health = HealthReporter(), HealthReporter()
        # Its own listener, never the xDS port (issue 9, docs/security.md).
        management_server, self.management_port = build_management_server(
            management, address=self.settings.management_address, auth=self.settings.management_auth,
            on_deny=self.metrics.management_denied, extra=(management_health.add_to,))
        load_server, self.load_report_port = build_load_report_server(
            LoadReportService(self.load.submit), address=self.settings.load.report_address,
            auth=self.settings.management_auth, on_deny=self.metrics.management_denied,
            extra=(load_health.add_to,))
        admin = AdminServer(self.settings.admin_address, metrics=self.metrics, ready=lambda: self.ready,
                            status=self.status,
                            console=ConsoleRoutes(self.console_data(), authorize=self._console_authorizer()))
        await self.health.set_serving(False)
        await management_health.set_serving(True, ("", MANAGEMENT_SERVICE))
        await load_health.set_serving(True, ("", LOAD_REPORT_SERVICE))
        await server.start()
        await management_server.start()
        await load_server.start()
        try:
            await admin.start()
            self.admin_port = admin.port
            log.info("started", extra={"xds_port": self.xds_port, "admin_port": self.admin_port,
                                       "management_port": self.management_port,
                                       "load_report_port": self.load_report_port,
                                       "management_auth": bool(self.settings.management_auth
                                                               and self.settings.management_auth.configured),
                                       "sources": [s.name for s in self.sources]})
            self.started.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._sweep_groups(), name="node-group-sweep")
                tasks.create_task(self.load.run(), name="load-weights")
                if self.tls is not None:
                    tasks.create_task(self.tls.run(), name="tls-reload")
                tasks.create_task(self.tls_files.watch(self._schedule_rebuild,
                                                       interval_s=self.settings.file_poll_interval_s),
                                  name="tls-files")
                tasks.create_task(rotate_forever(self.workload, self._ca_watcher, self._schedule_rebuild),
                                  name="workload-cert-rotation")
                for source in self.sources:
                    tasks.create_task(source.run(self), name=f"source:{source.name}")
        finally:
            # Graceful shutdown (issue 14 item 6; docs/operations.md "Rolling restarts"): health says
            # NOT_SERVING first, the streams end with status OK (Envoy keeps its config and reconnects to
            # another replica, docs/protocol.md R27), then the servers stop within the grace; nothing of
            # this is an error.
            log.info("shutting_down", extra={"proxies": len(self.registry.list()),
                                             "grace_s": SHUTDOWN_GRACE_S})
            if self._rebuild_handle is not None:
                self._rebuild_handle.cancel()
            if self._build_task is not None:
                self._build_task.cancel()
            for reporter in (self.health, management_health, load_health):
                with contextlib.suppress(Exception):
                    await reporter.shut_down()
            handler.end_streams()
            # The xDS server stops right away, with no await in between, so an Envoy that reconnects at
            # once is refused by the server rather than opening a stream the grace would then cancel.
            await _stop_server(server)
            with contextlib.suppress(Exception):
                await admin.stop()
            await _stop_server(load_server)
            await _stop_server(management_server)
            handler.close()
            log.info("stopped")

    async def _sweep_groups(self) -> None:
        """Forget node groups whose last proxy left more than the grace ago (cache/store.py)."""
        interval_s = min(5.0, max(0.05, self.settings.node_group_grace_s / 2))
        while True:
            await asyncio.sleep(interval_s)
            self.store.sweep()

    def source_states(self) -> list[SourceState]:
        return [SourceState(name=s.name, synced=s.name in self.source_synced_at,
                            stale=s.name in self.source_errors, error=self.source_errors.get(s.name, ""),
                            last_sync_unix=self.source_synced_at.get(s.name),
                            registry=_registry_state(s.status()) if isinstance(s, ReportsStatus) else None)
                for s in self.sources]

    def console_data(self) -> ConsoleData:
        """What the web console reads (docs/console.md); every view is read-only."""
        return ConsoleData(ready=lambda: self.ready, proxies=self.registry.list, sources=self.source_states,
                           groups=self.store.groups, snapshot=self.store.current,
                           group_error=self.store.error, history=self.history.entries,
                           quarantined=self.quarantine.rejections)

    def _console_authorizer(self) -> Authorize | None:
        """The management API's tokens guard the console's API too (docs/console.md, docs/security.md)."""
        auth = self.settings.management_auth
        if auth is None or not auth.configured:
            return None
        tokens = TokenAuthenticator(auth)
        return lambda token: token is not None and tokens.role_of(token) is not None

    def source_statuses(self) -> list[SourceStatus]:
        """The SourceStatus of every source that reports one (the registry sources; issue 13)."""
        return [s.status() for s in self.sources if isinstance(s, ReportsStatus)]

    def status(self) -> dict[str, object]:
        """A JSON-able summary for the admin /status page; every string redacted (issue 9)."""
        status: dict[str, object] = {
            "ready": self.ready,
            "sources": {s.name: {"synced": s.name not in self.pipeline.missing(),
                                 "error": self.source_errors.get(s.name, ""),
                                 # The registry's own view (issue 13): outage, failing watches, grace.
                                 **({"registry": s.status().as_json()} if isinstance(s, ReportsStatus)
                                    else {})}
                        for s in self.sources},
            "policy_error": self.policy_error,
            "tls_files": self.tls_files.errors(),  # paths and problems only, never content
            "groups": {g: {"error": self.store.error(g)} for g in self.store.groups()},
            "proxies": [p.node_id for p in self.registry.list()],
            "quarantined": [{"group": r.group, "type": r.short_type, "name": r.name,
                             "node_ids": list(r.node_ids), "message": r.message, "serving": r.serving,
                             "nacked_at": r.nacked_at, "quarantined_at": r.quarantined_at}
                            for r in self.quarantine.rejections()],
            **({"tls": self.tls.status()} if self.tls is not None else {}),
            "workload_ca": {**describe_ca(self.workload.ca),
                            "reload_error": self._ca_watcher.error if self._ca_watcher else ""},
        }
        return redact_mapping(status)


def _registry_state(status: SourceStatus) -> RegistryState:
    """What `xds status` shows of a registry source's SourceStatus (issue 13)."""
    return RegistryState(kind=status.kind, outage_s=status.outage_s, failing_watches=status.failing_watches,
                         resync_grace_remaining_s=status.resync_grace_remaining_s,
                         seconds_since_answer=status.seconds_since_answer)


def _tls_reloader(settings: Settings, metrics: TlsMetrics) -> TlsReloader | None:
    cert, key, ca = settings.tls_cert, settings.tls_key, settings.client_ca
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None or ca is None:
        missing = [name for name, path in (("tls_cert", cert), ("tls_key", key), ("client_ca", ca))
                   if path is None]
        raise ValueError(f"mTLS on the xDS port needs tls_cert, tls_key and client_ca; missing: "
                         f"{', '.join(missing)}")
    paths = TlsPaths(cert=cert, key=key, client_ca=ca)
    return TlsReloader(paths, interval_s=settings.tls_reload_interval_s, on_change=metrics.on_change)


def _sources_from(settings: Settings) -> tuple[Source, ...]:
    """The configured sources in merge order: files first (in the order given), then the registries in
    the order of xds/source_kinds.py (Consul, then Kubernetes, ...). On the same service the pipeline
    unions endpoints and the earlier source wins a duplicate host:port; policies merge in the same order
    (docs/consul.md, "Merging with files"; docs/kubernetes.md, "Merging with Consul and files")."""
    sources: list[Source] = [FileSource(path, poll_interval_s=settings.file_poll_interval_s,
                                        max_bytes=settings.max_catalog_bytes)
                             for path in settings.config_files]
    for kind in KINDS:
        if (config := settings.registry_config(kind.name)) is not None:
            sources.append(kind.source(config))
    return tuple(sources)


# How long the gRPC servers wait at shutdown for calls to end before cancelling them (docs/operations.md
# "Rolling restarts"); streams are ended first, so this only bounds writes still in flight.
SHUTDOWN_GRACE_S = 2.0


async def _stop_server(server: grpc.aio.Server) -> None:
    # Envoy keeps its config and reconnects (R27).
    await server.stop(grace=SHUTDOWN_GRACE_S)
