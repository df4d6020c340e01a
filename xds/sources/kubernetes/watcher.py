"""KubernetesSource: watches Services, EndpointSlices and TrafficPolicies, and publishes the whole.

Theory of operation.

Reflectors. One list-then-watch loop (a "reflector", as client-go calls it) per resource type and scope:
Services and EndpointSlices in every namespace or in each `--kube-namespace`, TrafficPolicies in every
namespace or in each `--kube-policy-namespace`. All of them are tasks of one TaskGroup, with the publisher
and the status writer, so cancelling `run()` stops everything and nothing outlives it. Each loop follows
docs/protocol.md R34 (Kubernetes API concepts, "Efficient detection of changes"):

- List (paginated, a consistent read), replace everything the reflector knew with the answer, then watch
  from the list's resourceVersion with `allowWatchBookmarks=true` and a server `timeoutSeconds` drawn from
  [watch_timeout_s, 2 x watch_timeout_s) as client-go does, so that many watches do not restart together.
- ADDED/MODIFIED/DELETED change the stored objects and advance the stored resourceVersion; a BOOKMARK
  advances the resourceVersion and changes nothing else (KEP-956; case F7).
- The server ending the watch (its timeout) is normal: watch again from the stored resourceVersion.
- `410 Gone`, as the watch's HTTP status or as an ERROR event ("too old resource version": etcd keeps about
  5 minutes of history): forget the resourceVersion and list again. The new list replaces the stored
  objects whole, so objects deleted while this client was away disappear, and objects added appear: no
  ghost endpoint survives a missed watch (Istio #54997, case F7).
- Nothing (no event, no bookmark) for `inactivity_timeout_s`: the connection is presumed dead and the
  watch restarts from the stored resourceVersion (a 410 then leads to a re-list).
- Errors (connection refused, timeouts, 5xx, 429, 403) back off with full jitter, honouring Retry-After,
  and the loop then watches again from the stored resourceVersion, re-listing only on a 410. A token bucket
  bounds how often a reflector may call the API whatever it answers.
- A missing TrafficPolicy CRD (404) counts as "no policies", is reported once, and is looked for again
  every `crd_retry_s`; Services and EndpointSlices serve regardless.

Publishing, outages and the resync grace are the registry engine's (sources/registry/engine.py, issue 13):
this class implements its `Registry` interface (`watch`, `candidate`) and keeps what is Kubernetes' own.

Publishing. Reflectors only store what they read (parsed once, on arrival, by parse.py) and mark the
Services whose result may have changed; one publisher task maps the marked Services again, assembles the
full Catalog (and the merged TrafficPolicy) and publishes it when it differs from the last publish. A
change waits `debounce_s` first, so a burst (a Deployment rolling 50 pods) is a few publishes, not 50
(R37). Nothing is published before every reflector has listed once.

Outages (R36, F8). A failing reflector keeps the objects it had, so while the API server is unreachable
nothing changes and nothing is published; the outage is reported to the sink once (per kind of error),
again when it outlasts `max_stale_s`, and the last published state keeps serving. The first answer after
a failure wakes every other failing reflector to retry at once, and the publisher waits up to `SETTLE_S`
for them, so a recovery is published once, whole; it is published even if nothing changed, so the sink
learns the source recovered.

Resync grace. After an outage the API server may answer with a world in flux: the node lifecycle
controller marks nodes that missed heartbeats during the outage unreachable and their pods not ready, so
endpoints vanish and come back within seconds; a control plane restored from an etcd backup lists an
older state. So for `resync_grace_s` after a reflector recovers from an error, the publisher holds back
whatever would take traffic away from the last publish: Services and endpoints that disappeared stay as
they were, and TrafficPolicies that disappeared keep serving their last valid version. Additions and
other changes (new endpoints, draining endpoints, policy edits) go out at once; when the grace ends the
truth is published, removals included. A plain 410 re-list does not start the grace: it is the API
server's normal "you were away too long" answer from the same consistent storage, and its removals are
real (F7).
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from xds.cache.quarantine import Rejection
from xds.model.service import Catalog
from xds.sources.backoff import Backoff
from xds.sources.base import SourceSink
from xds.sources.kubernetes.client import (
    ENDPOINT_SLICES,
    SERVICES,
    TRAFFIC_POLICIES,
    KubeClient,
    KubeConfig,
    KubeError,
    KubeGone,
    KubeNotFound,
    KubeUnavailable,
    KubeWatchInactive,
    ListResult,
    ResourceKind,
    WatchEvent,
)
from xds.sources.kubernetes.parse import (
    KubeParseError,
    KubeService,
    KubeSlice,
    ServiceResult,
    assemble_catalog,
    object_key,
    parse_service,
    parse_slice,
    resource_version,
    service_endpoints,
)
from xds.sources.kubernetes.policies import (
    PolicyObject,
    StatusPatch,
    TrafficPolicies,
    TrafficPolicyParseError,
    parse_traffic_policy,
)
from xds.sources.outage import hold_removals as _hold_removals
from xds.sources.registry import Candidate, EngineConfig, RegistryEngine, SourceStatus

_log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
_T = TypeVar("_T")
_T_contra = TypeVar("_T_contra", contravariant=True)

# Per reflector: at most a burst of 5 list/watch calls, then one per second, whatever the server answers
# (a server that ends every watch at once must not turn the loop into a busy one).
_CALLS_PER_S = 1.0
_CALLS_BURST = 5
# How long a status write of ours is trusted to be on its way before the object's own status is believed.
_STATUS_ECHO_S = 30.0
_CRD_MISSING = ("the TrafficPolicy CRD is not installed (kubectl apply -f deploy/crd-trafficpolicy.yaml, or "
                "--no-kube-policies); serving without Kubernetes policies")


@dataclass(frozen=True, slots=True)
class Staleness:
    """How current the source's view of the cluster is, for metrics and `xds status`."""

    outage_s: float  # how long some reflector has been failing; 0 while all answer
    seconds_since_answer: float | None  # since the last list, watch event or bookmark of any reflector
    failing_watches: int
    resync_grace_remaining_s: float
    resource_versions: Mapping[str, str]  # per reflector: where its watch resumes


def hold_removals(previous: Catalog, candidate: Catalog) -> Catalog:
    """`candidate`, with the services and endpoints it lacks compared with `previous` put back (other
    changes, health included, go through)."""
    return _hold_removals(previous, candidate, keep_routable_health=False)


class _ChangeHandler(Protocol[_T_contra]):
    def __call__(self, key: Key, *, old: _T_contra | None, new: _T_contra | None) -> None:
        """The object `key` changed from `old` to `new` (None: absent)."""


class _Reflector(Generic[_T]):
    """The objects of one resource type in one scope, and where the watch resumes."""

    def __init__(self, kind: ResourceKind, *, namespace: str | None, label_selector: str,
                 parse: Callable[[Mapping[str, Any]], _T],
                 on_change: _ChangeHandler[_T]) -> None:
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = f"{kind.plural}:{namespace or '*'}"
        self.items: dict[Key, _T] = {}
        self.resource_version = ""  # "" = list next
        self.listed = False
        self.recovering = False  # failed since the last answer: its next answer starts the resync grace
        self._parse = parse
        self._on_change = on_change
        self._versions: dict[Key, str] = {}
        self.skipped: dict[Key, str] = {}

    def _set(self, key: Key, obj: Mapping[str, Any]) -> None:
        version = resource_version(obj)
        if version and self._versions.get(key) == version:
            return
        old = self.items.get(key)
        try:
            new = self._parse(obj)
        except (KubeParseError, TrafficPolicyParseError) as e:
            self.skipped[key] = str(e)
            _log.warning("kube_object_skipped", extra={"watch": self.name, "object": "/".join(key),
                                                       "reason": str(e)})
            self._delete(key)
            return
        self.skipped.pop(key, None)
        self.items[key] = new
        self._versions[key] = version
        self._on_change(key, old=old, new=new)

    def _delete(self, key: Key) -> None:
        old = self.items.pop(key, None)
        self._versions.pop(key, None)
        if old is not None:
            self._on_change(key, old=old, new=None)

    def replace(self, result: ListResult) -> None:
        """A list: the new truth, replacing everything known (docs/protocol.md R34)."""
        seen: set[Key] = set()
        for obj in result.items:
            try:
                key = object_key(obj)
            except KubeParseError:
                continue
            seen.add(key)
            self._set(key, obj)
        for key in [k for k in self.items if k not in seen]:
            self._delete(key)
        for key in [k for k in self.skipped if k not in seen]:
            del self.skipped[key]
        self.resource_version = result.resource_version
        self.listed = True

    def apply(self, event: WatchEvent) -> None:
        if event.type != "BOOKMARK":
            try:
                key = object_key(event.object)
            except KubeParseError:
                key = None
            if key is not None:
                if event.type == "DELETED":
                    self._delete(key)
                    self.skipped.pop(key, None)
                else:
                    self._set(key, event.object)
        # Every event, bookmarks included, moves the resume point forward (a bookmark only carries
        # metadata.resourceVersion).
        if event.resource_version:
            self.resource_version = event.resource_version

    def forget(self) -> None:
        """After a missing CRD: no objects, and list again next time."""
        for key in list(self.items):
            self._delete(key)
        self.resource_version = ""


class KubernetesSource:
    """A Source publishing the Services of one Kubernetes cluster, with policies from TrafficPolicy objects.
    Construction does no I/O; `run()` watches until cancelled."""

    def __init__(self, config: KubeConfig, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, random: Callable[[], float] = _random.random,
                 env: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random
        self._env = env
        self._rejections: tuple[Rejection, ...] = ()  # survives restarts of run(): proxies outlive watches
        self._reset_state()

    def _reset_state(self) -> None:
        config = self._config
        namespaces: tuple[str | None, ...] = config.namespaces or (None,)
        self._service_reflectors = [
            _Reflector(SERVICES, namespace=ns, label_selector=config.label_selector, parse=parse_service,
                       on_change=self._service_changed) for ns in namespaces]
        # The label selector applies to Services only: slices of a selected Service need not carry the
        # Service's labels, and a slice whose Service is not selected is simply never used.
        self._slice_reflectors = [
            _Reflector(ENDPOINT_SLICES, namespace=ns, label_selector="", parse=parse_slice,
                       on_change=self._slice_changed) for ns in namespaces]
        policy_namespaces: tuple[str | None, ...] = config.policy_namespaces or (None,)
        self._policy_reflectors = [
            _Reflector(TRAFFIC_POLICIES, namespace=ns, label_selector="", parse=parse_traffic_policy,
                       on_change=self._policy_changed) for ns in policy_namespaces] if config.policies else []
        self._reflectors: list[_Reflector[Any]] = [*self._service_reflectors, *self._slice_reflectors,
                                                   *self._policy_reflectors]
        # Indexes kept up to date by the reflectors' change callbacks.
        self._services: dict[Key, KubeService] = {}
        self._slices: dict[Key, dict[str, KubeSlice]] = {}  # (namespace, service) -> slice name -> slice
        self._results: dict[Key, ServiceResult] = {}
        self._dirty_services: set[Key] = set()
        self._policy_objects: dict[Key, PolicyObject] = {}
        self._traffic = TrafficPolicies(source=self.name, clock=self._wall_clock) if config.policies else None
        if self._traffic is not None:
            self._traffic.set_rejections(self._rejections)
        self._policies_dirty = bool(config.policies)
        self._crd_missing = False
        # Status writes.
        self._status_wake = asyncio.Event()
        self._written: dict[Key, tuple[StatusPatch, float]] = {}
        self._status_retry: asyncio.TimerHandle | None = None
        # The shared registry engine (sources/registry): outages (kube_watch_failed, kube_unavailable,
        # kube_recovered), the resync grace (kube_removals_held) and publishing (kube_published).
        self._engine = RegistryEngine(EngineConfig.tuned_by(
            config, source=self.name, kind="kubernetes", label="Kubernetes",
            server="the Kubernetes API server", event_prefix="kube", hold_removals=hold_removals, log=_log),
            clock=self._clock, random=self._random)
        self._policies_held = False

    @property
    def name(self) -> str:
        return self._config.source_name

    def report_rejections(self, rejections: Sequence[Rejection]) -> None:
        """RejectionSink (sources/rejections.py): quarantined resources become Programmed=False conditions
        of the TrafficPolicies that produced them (issue 11 item 4)."""
        self._rejections = tuple(rejections)
        if self._traffic is not None:
            self._traffic.set_rejections(self._rejections)
            self._status_wake.set()

    @property
    def config(self) -> KubeConfig:
        return self._config

    def status(self) -> SourceStatus:
        """The common SourceStatus (sources/registry/status.py), with the reflectors as details."""
        return self._engine.status(details={
            "reflectors": len(self._reflectors), "crd_missing": self._crd_missing,
            "services": len(self._services)})

    def staleness(self) -> Staleness:
        status = self._engine.status()
        return Staleness(
            outage_s=status.outage_s, seconds_since_answer=status.seconds_since_answer,
            failing_watches=status.failing_watches,
            resync_grace_remaining_s=status.resync_grace_remaining_s,
            resource_versions={r.name: r.resource_version for r in self._reflectors})

    # ------------------------------------------------------------------------------------------ run

    async def run(self, sink: SourceSink) -> None:
        self._reset_state()
        try:
            await self._engine.run(sink, self)
        finally:
            if self._status_retry is not None:
                self._status_retry.cancel()
                self._status_retry = None

    async def watch(self, engine: RegistryEngine, tasks: asyncio.TaskGroup) -> None:
        """Registry (sources/registry/engine.py): one client at a time, every reflector on it; a client
        that cannot be set up (an unreadable kubeconfig or service account) fails watch "client" until it
        can."""
        await engine.with_each_client(lambda: KubeClient(self._config, env=self._env), self._reflect_all,
                                      setup_errors=KubeError)

    async def _reflect_all(self, client: KubeClient) -> None:
        self._engine.forget("client")
        async with asyncio.TaskGroup() as reflectors:
            for reflector in self._reflectors:
                reflectors.create_task(self._reflect(client, reflector), name=f"kube-{reflector.name}")
            if self._traffic is not None:
                reflectors.create_task(self._status_loop(client), name="kube-status")

    # -------------------------------------------------------------------------------- one reflector

    async def _reflect(self, client: KubeClient, reflector: _Reflector[Any]) -> None:
        bucket = self._engine.bucket(rate_per_s=_CALLS_PER_S, burst=_CALLS_BURST)
        backoff = self._engine.backoff()
        while True:
            pause_s = bucket.reserve_s()
            if pause_s > 0:
                await asyncio.sleep(pause_s)
            try:
                if not reflector.resource_version:
                    result = await client.list(reflector.kind, namespace=reflector.namespace,
                                               label_selector=reflector.label_selector)
                    self._answered(reflector)
                    reflector.replace(result)
                    self._after_list(reflector)
                    backoff.reset()
                timeout_s = self._config.watch_timeout_s * (1.0 + self._random())
                async with client.watch(reflector.kind, namespace=reflector.namespace,
                                        resource_version=reflector.resource_version,
                                        label_selector=reflector.label_selector,
                                        timeout_s=timeout_s) as stream:
                    self._answered(reflector)
                    backoff.reset()
                    async for event in stream:
                        self._engine.answered(reflector.name)
                        reflector.apply(event)
            except KubeGone as e:
                _log.info("kube_watch_expired", extra={"source": self.name, "watch": reflector.name,
                                                       "resource_version": reflector.resource_version,
                                                       "error": str(e)})
                reflector.resource_version = ""  # list again: the list is the new truth
            except KubeWatchInactive as e:
                _log.info("kube_watch_inactive", extra={"source": self.name, "watch": reflector.name,
                                                        "error": str(e)})
            except KubeNotFound as e:
                if reflector.kind is not TRAFFIC_POLICIES:
                    await self._failed(reflector, e, backoff=backoff)
                    continue
                self._answered(reflector)
                self._crd_is_missing(reflector, e)
                await asyncio.sleep(self._config.crd_retry_s)
            except KubeError as e:
                await self._failed(reflector, e, backoff=backoff)

    def _after_list(self, reflector: _Reflector[Any]) -> None:
        _log.info("kube_listed", extra={"source": self.name, "watch": reflector.name,
                                        "objects": len(reflector.items),
                                        "resource_version": reflector.resource_version})
        if reflector.kind is TRAFFIC_POLICIES and self._crd_missing and \
                all(r.listed and r.resource_version for r in self._policy_reflectors):
            self._crd_missing = False
            _log.info("kube_crd_found", extra={"source": self.name})
        self._mark_dirty()

    def _crd_is_missing(self, reflector: _Reflector[Any], error: KubeError) -> None:
        if not self._crd_missing:
            self._crd_missing = True
            _log.warning("kube_crd_missing", extra={"source": self.name, "error": str(error)})
            self._report(_CRD_MISSING)
        reflector.forget()
        reflector.listed = True
        self._policies_dirty = True
        self._mark_dirty()

    async def _failed(self, reflector: _Reflector[Any], error: KubeError, *, backoff: Backoff) -> None:
        self._engine.failed(reflector.name, error)
        reflector.recovering = True
        delay = backoff.next_delay_s()
        if isinstance(error, KubeUnavailable) and error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
        await self._engine.pause(delay)

    def _answered(self, reflector: _Reflector[Any]) -> None:
        resync = "recovered" if reflector.recovering else None
        reflector.recovering = False
        self._engine.answered(reflector.name, resync=resync)  # logs kube_resync_grace when it starts

    # ------------------------------------------------------------------------------- change indexes

    def _service_changed(self, key: Key, *, old: KubeService | None, new: KubeService | None) -> None:
        if new is None:
            self._services.pop(key, None)
        else:
            self._services[key] = new
        self._dirty_services.add(key)
        self._mark_dirty()

    def _slice_changed(self, key: Key, *, old: KubeSlice | None, new: KubeSlice | None) -> None:
        namespace, name = key
        if old is not None and old.service_name:
            owner = (namespace, old.service_name)
            slices = self._slices.get(owner, {})
            slices.pop(name, None)
            if not slices:
                self._slices.pop(owner, None)
            self._dirty_services.add(owner)
        if new is not None and new.service_name:
            owner = (namespace, new.service_name)
            self._slices.setdefault(owner, {})[name] = new
            self._dirty_services.add(owner)
        # A slice without the kubernetes.io/service-name label belongs to no Service (R35).
        self._mark_dirty()

    def _policy_changed(self, key: Key, *, old: PolicyObject | None, new: PolicyObject | None) -> None:
        if new is None:
            self._policy_objects.pop(key, None)
            self._written.pop(key, None)
        else:
            self._policy_objects[key] = new
            written = self._written.get(key)
            if written is not None and written[0].shown_by(new):
                del self._written[key]  # our write is visible now; the object's status speaks for itself
        self._policies_dirty = True
        self._mark_dirty()

    # ----------------------------------------------------------------------------- health of the source

    def _report(self, message: str) -> None:
        self._engine.report(message)

    # ---------------------------------------------------------------------------------- publishing

    def _mark_dirty(self) -> None:
        self._engine.mark_dirty()

    def _synced(self) -> bool:
        return all(r.listed for r in self._reflectors)

    def _catalog(self) -> Catalog:
        for key in self._dirty_services:
            service = self._services.get(key)
            if service is None:
                self._results.pop(key, None)
                continue
            result = service_endpoints(service, self._slices.get(key, {}).values())
            previous = self._results.get(key)
            if previous is None or previous.skipped != result.skipped:
                for note in result.skipped:
                    _log.warning("kube_endpoint_skipped", extra={"source": self.name,
                                                                 "service": "/".join(key), "reason": note})
            self._results[key] = result
        self._dirty_services.clear()
        return assemble_catalog([self._results[k] for k in sorted(self._results)])

    def _refresh_policies(self, *, in_grace: bool) -> None:
        if self._traffic is None:
            return
        if not (self._policies_dirty or (self._policies_held and not in_grace)):
            return
        if not all(r.listed for r in self._policy_reflectors):
            return
        self._policies_dirty = False
        self._policies_held = in_grace
        outcome = self._traffic.update(self._policy_objects, keep_removed=in_grace)
        for problem in outcome.problems:
            self._report(problem)
        self._status_wake.set()

    def candidate(self, *, in_grace: bool) -> Candidate | None:
        """Registry: the whole Catalog (and merged TrafficPolicy); None until every reflector listed."""
        self._refresh_policies(in_grace=in_grace)
        if self._engine.published is None and not self._synced():
            return None
        standing = tuple(self._traffic.problems()) if self._traffic is not None else ()
        if self._crd_missing:
            standing += (_CRD_MISSING,)
        policy = self._traffic.policy if self._traffic is not None else None
        return Candidate(self._catalog(), policy, policy_held=self._policies_held, standing_problems=standing)

    # --------------------------------------------------------------------------------- status writes

    def _pending_patches(self) -> list[StatusPatch]:
        assert self._traffic is not None
        now = self._clock()
        pending: list[StatusPatch] = []
        for patch in self._traffic.status_patches():
            written = self._written.get(patch.key)
            if written is not None and written[0].same_state(patch) and \
                    now - written[1] < _STATUS_ECHO_S:
                continue  # written already; the watch has not shown it yet
            pending.append(patch)
        return pending

    async def _status_loop(self, client: KubeClient) -> None:
        """Writes the Accepted condition of TrafficPolicies whose wanted condition changed (policies.py):
        only then, so there are no write loops, and with backoff after failures."""
        backoff = self._engine.backoff()
        while True:
            await self._status_wake.wait()
            self._status_wake.clear()
            for patch in self._pending_patches():
                try:
                    await client.patch_status(TRAFFIC_POLICIES, namespace=patch.namespace, name=patch.name,
                                              status=patch.body())
                except KubeNotFound:
                    continue  # deleted meanwhile; its DELETED event is on its way
                except KubeError as e:
                    delay = backoff.next_delay_s()
                    _log.warning("kube_policy_status_failed", extra={
                        "source": self.name, "policy": f"{patch.namespace}/{patch.name}", "error": str(e),
                        "retry_in_s": round(delay, 3)})
                    if backoff.failures == 1:
                        self._report(f"cannot write the status of TrafficPolicy {patch.namespace}/"
                                     f"{patch.name}: {e}")
                    if self._status_retry is not None:
                        self._status_retry.cancel()
                    self._status_retry = asyncio.get_running_loop().call_later(delay, self._status_wake.set)
                    break
                self._written[patch.key] = (patch, self._clock())
                _log.info("kube_policy_status", extra={
                    "source": self.name, "policy": f"{patch.namespace}/{patch.name}",
                    "status": patch.condition.status, "reason": patch.condition.reason})
            else:
                backoff.reset()
