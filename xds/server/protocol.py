"""The state-of-the-world xDS protocol for one stream, as a pure state machine.

Theory of operation
-------------------
A stream (ADS, or a single-type stream such as StreamClusters) feeds two kinds of events into
`StreamProtocol`: requests from the client (`on_request`) and new snapshots of the stream's node group
(`set_snapshot`). After each event the glue asks `next_sends()` for the responses to write now. No I/O,
clocks or randomness live here, so every rule below is tested by feeding events directly
(tests/protocol/).

Per resource type the machine tracks:

* the subscription: legacy or explicit wildcard (CDS/LDS only) and the requested names (R15-R17);
* the latest nonce sent and whether its response is still *outstanding* (neither ACKed nor NACKed);
* `sent`: what the client holds if it accepts the outstanding response, resource by resource, and
  `acked`: what it held at its last ACK. After a NACK the client keeps `acked` (R8), so `sent` falls back.

Rules, with their numbers in docs/protocol.md (xds_protocol.rst sections in brackets):

* The first request must carry a node with an id (R1); a later request naming a different node is refused
  rather than used to switch tenants (P1e). ADS requests must carry a type URL (R2).
* A request whose nonce is not the latest one sent for its type is stale and ignored entirely (R12,
  ["Resource updates"]); the client restates its subscription with its next ACK.
* ACK vs NACK is decided by `error_detail` alone (R9). A NACK is recorded and never answered with the same
  content again: the type stays quiet until the content it would send changes or the subscription does (R10).
* An ACK that changes nothing gets no response (R13). A request that adds names is answered with the new
  names even when they did not change (R15); names that do not exist yet are remembered and sent once they
  appear (R16). For EDS an unknown name is answered with an empty ClusterLoadAssignment so the cluster
  can leave warming (R22).
* CDS and LDS responses carry the complete state; EDS and RDS responses carry the changed named resources
  only (R18 ["Grouping resources into responses"]).
* Only one response per type is outstanding at a time; on ADS a type is sent only once every type before it
  in CDS -> EDS -> SDS -> LDS -> RDS has settled (its response ACKed or NACKed, nothing left to send, and, for
  EDS/RDS, the client subscribed to every name the earlier type made it need) (R23). The exception is a
  type's own parent: EDS and SDS do not wait for the CDS ACK nor RDS for the LDS ACK, because Envoy holds
  those ACKs until the children arrive (cluster and listener warming); SDS, named by listeners too, comes
  before LDS and so never waits for it (R46). So routes go out only once the clusters
  they use have their endpoints, and listeners only once every cluster is warm. A cluster that the
  client's listeners or routes still use is kept in CDS until they stop using it, so removals come last.
* A changed cluster makes its ClusterLoadAssignment due again even if the endpoints did not change (R21).
* A new stream knows nothing about the client, so its first request for each type is always answered (R25).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from xds.cache.snapshot import Resource, Snapshot, version_of
from xds.typeurls import CLUSTER, ENDPOINT, FULL_STATE, KNOWN, LISTENER, PUSH_ORDER, ROUTE, SECRET, TypeUrl

WILDCARD = "*"

# A named type answers what its parent made the client ask for. It does not wait for the parent's ACK:
# Envoy pauses CDS (and its ACK) while new clusters warm, and warming needs the EDS answer (envoy PRs
# #5887, #7236), so waiting would deadlock until initial_fetch_timeout.
# The earlier types a type does not wait for: its parent, and for SDS also EDS, its sibling under CDS (both
# are what a warming cluster waits for; R46).
_NOT_AWAITED: dict[TypeUrl, frozenset[TypeUrl]] = {
    ENDPOINT: frozenset({CLUSTER}), ROUTE: frozenset({LISTENER}), SECRET: frozenset({CLUSTER, ENDPOINT})}
# The types whose resources name resources of a named type: secrets are named by clusters (client
# certificates, trust bundles) and by listeners (server certificates) alike (R46). SDS comes before LDS in
# PUSH_ORDER, so answering a listener's secrets never waits for the LDS ACK either.
_REFERRERS: dict[TypeUrl, tuple[TypeUrl, ...]] = {ENDPOINT: (CLUSTER,), ROUTE: (LISTENER,),
                                                  SECRET: (CLUSTER, LISTENER)}
MAX_ERROR_DETAIL = 1024  # bytes of a NACK message kept for logs and status (R11)


class ProtocolError(Exception):
    """The client broke the protocol; the stream must end with INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class Request:
    """The fields of a DiscoveryRequest that the protocol reads."""

    type_url: str
    version_info: str = ""
    response_nonce: str = ""
    resource_names: tuple[str, ...] = ()
    node_id: str | None = None  # None: the request carried no node
    error_message: str | None = None  # None: no error_detail (an ACK or a plain request)


@dataclass(frozen=True, slots=True)
class Send:
    """A response to write: the glue encodes it from the cached resource bytes."""

    type_url: TypeUrl
    version: str
    nonce: str
    resources: tuple[Resource, ...]


@dataclass(frozen=True, slots=True)
class Acked:
    type_url: TypeUrl
    version: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Nacked:
    type_url: TypeUrl
    version: str  # the version the client keeps
    rejected_version: str
    nonce: str
    message: str


@dataclass(frozen=True, slots=True)
class Ignored:
    type_url: TypeUrl
    nonce: str
    reason: str  # "stale_nonce"


Event = Acked | Nacked | Ignored

# Makes the stand-in for a requested resource the snapshot lacks, or None to send nothing for it.
Placeholder = Callable[[TypeUrl, str], Resource | None]


def no_placeholder(type_url: TypeUrl, name: str) -> Resource | None:
    return None


@dataclass(slots=True)
class _TypeState:
    started: bool = False
    wildcard: bool = False
    ever_named: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""  # latest nonce sent for this type
    version_sent: str = ""
    outstanding: bool = False
    version_acked: str = ""
    rejected_version: str | None = None
    sent: dict[str, Resource] = field(default_factory=dict)
    acked: dict[str, Resource] = field(default_factory=dict)
    # Named resources the client must get again even if unchanged (new subscriptions, R15; R21).
    due: set[str] = field(default_factory=set)
    # Full-state types: the next response must go out even if the content looks unchanged.
    full_due: bool = False


class StreamProtocol:
    """SotW protocol state of one stream. `types` are the types this stream may carry."""

    def __init__(self, *, ads: bool, stream_type: TypeUrl | None = None,
                 placeholder: Placeholder = no_placeholder) -> None:
        if not ads and stream_type is None:
            raise ValueError("a single-type stream needs its stream_type")
        self._ads = ads
        self._stream_type = stream_type
        self._placeholder = placeholder
        self._node_id: str | None = None
        self._snapshot: Snapshot | None = None
        self._types: dict[TypeUrl, _TypeState] = {}
        self._nonce_counter = 0
        # _needed() per type, valid until what the client holds changes (requests and sends change it).
        self._needed_cache: dict[TypeUrl, frozenset[str]] = {}

    # ------------------------------------------------------------------ inputs

    @property
    def node_id(self) -> str | None:
        return self._node_id

    def on_request(self, request: Request) -> Event | None:
        """Apply one client request; returns what it meant (ACK, NACK, stale) or None for a plain request.

        Raises ProtocolError for requests that must end the stream.
        """
        self._check_node(request)
        type_url = self._check_type(request.type_url)
        state = self._types.setdefault(type_url, _TypeState())

        if state.started and request.response_nonce and request.response_nonce != state.nonce:
            # Stale or foreign nonce: a newer response is in flight, the client will restate (R12).
            return Ignored(type_url=type_url, nonce=request.response_nonce, reason="stale_nonce")

        event: Event | None = None
        if not state.started or not request.response_nonce:
            # First request for this type on this stream, or a client restarting it: we know nothing of
            # what the client holds, so everything it asks for is due. A nonce from an earlier stream
            # means a reconnect, which is answered too (R25; case P11a).
            state.started = True
            state.outstanding = False
            self._sent_changed(type_url)
            state.sent = {}
            state.acked = {}
            state.rejected_version = None
            state.full_due = True
        elif request.error_message is not None:
            message = request.error_message.encode()[:MAX_ERROR_DETAIL].decode(errors="ignore")
            event = Nacked(type_url=type_url, version=request.version_info, nonce=request.response_nonce,
                           rejected_version=state.version_sent, message=message)
            state.outstanding = False
            state.rejected_version = state.version_sent
            self._sent_changed(type_url)
            state.sent = dict(state.acked)  # the client kept its previous resources (R8)
        else:
            if state.outstanding:
                event = Acked(type_url=type_url, version=state.version_sent, nonce=request.response_nonce)
                state.version_acked = state.version_sent
                state.acked = dict(state.sent)
                if state.version_sent != state.rejected_version:
                    # An ACK of the rejected version only accepted the names newly asked for (R15); the
                    # rest of that content is still rejected (R10; tests/protocol/test_protocol_stateful.py).
                    state.rejected_version = None
            state.outstanding = False
        self._update_subscription(type_url, state, request.resource_names)
        return event

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    # ----------------------------------------------------------------- outputs

    def next_sends(self) -> list[Send]:
        """The responses to write now, in push order; each is recorded as sent."""
        snapshot = self._snapshot
        if snapshot is None:
            return []
        # A send can make an earlier type due again: routes sent that use a cluster again keep it in
        # CDS, which was computed before them. So passes repeat until one sends nothing; a type sends at
        # most once, as it is then outstanding (found by tests/protocol/test_protocol_stateful.py).
        sends: list[Send] = []
        while batch := self._push_pass(snapshot):
            sends.extend(batch)
        return sends

    def _push_pass(self, snapshot: Snapshot) -> list[Send]:
        sends: list[Send] = []
        unsettled: set[TypeUrl] = set()
        for type_url in self._order():
            if self._ads and (unsettled - _NOT_AWAITED.get(type_url, frozenset())):
                unsettled.add(type_url)
                continue
            state = self._types.get(type_url)
            if state is None or not state.started:
                if not self._settled_unstarted(type_url):
                    unsettled.add(type_url)
                continue
            if state.outstanding:
                unsettled.add(type_url)
                continue
            send = self._compute(type_url, state, snapshot)
            if send is not None:
                self._record(type_url, state, send)
                sends.append(send)
                unsettled.add(type_url)
            elif not self._covered(type_url, state):
                unsettled.add(type_url)
        return sends

    def status(self) -> Mapping[TypeUrl, tuple[str, str, bool]]:
        """Per type: (version sent, version acked, outstanding) for observability."""
        return {t: (s.version_sent, s.version_acked, s.outstanding) for t, s in self._types.items()}

    def subscribed(self, type_url: TypeUrl) -> tuple[bool, frozenset[str]]:
        """(wildcard, names) of the current subscription to `type_url`."""
        state = self._types.get(type_url)
        if state is None:
            return (False, frozenset())
        return (state.wildcard, state.names)

    # ----------------------------------------------------------------- helpers

    def _check_node(self, request: Request) -> None:
        if self._node_id is None:
            if not request.node_id:
                raise ProtocolError("the first request on a stream must carry node.id (xDS: node identity)")
            self._node_id = request.node_id
        elif request.node_id is not None and request.node_id != self._node_id:
            raise ProtocolError(
                f"node.id changed on a live stream from {self._node_id!r} to {request.node_id!r}; "
                "open a new stream for a different node")

    def _check_type(self, type_url: str) -> TypeUrl:
        if not self._ads:
            assert self._stream_type is not None
            if type_url and type_url != self._stream_type:
                raise ProtocolError(f"type_url {type_url!r} on a stream for {self._stream_type!r}")
            return self._stream_type
        if not type_url:
            raise ProtocolError("type_url is required on the aggregated (ADS) stream")
        if type_url not in KNOWN:
            raise ProtocolError(f"unsupported type_url {type_url!r}; this server serves "
                                + ", ".join(sorted(KNOWN)))
        return TypeUrl(type_url)

    def _update_subscription(self, type_url: TypeUrl, state: _TypeState, names: Sequence[str]) -> None:
        requested = frozenset(names)
        if type_url in FULL_STATE:
            # Legacy wildcard: an empty list means "everything" until the client first names a resource;
            # after that it means "nothing". "*" is always the explicit wildcard (R17).
            if not requested and not state.ever_named:
                wildcard, explicit = True, frozenset[str]()
            else:
                state.ever_named = True
                wildcard, explicit = WILDCARD in requested, requested - {WILDCARD}
            if (wildcard, explicit) != (state.wildcard, state.names):
                state.full_due = True
            state.wildcard, state.names = wildcard, explicit
            return
        added = requested - state.names
        for name in state.names - requested:
            # Forget what the client held, so a later re-subscription is answered (R15; P5).
            state.sent.pop(name, None)
            state.acked.pop(name, None)
            state.due.discard(name)
        state.due |= added
        state.names = requested

    def _order(self) -> Iterable[TypeUrl]:
        if self._ads:
            return PUSH_ORDER
        assert self._stream_type is not None
        return (self._stream_type,)

    def _desired(self, type_url: TypeUrl, state: _TypeState, snapshot: Snapshot) -> dict[str, Resource]:
        available = snapshot.of_type(type_url)
        if type_url in FULL_STATE:
            chosen = dict(available) if state.wildcard else {
                n: available[n] for n in state.names if n in available}
            if type_url == CLUSTER and self._ads:
                chosen.update(self._still_used_clusters(state, chosen))
            return chosen
        desired: dict[str, Resource] = {}
        for name in state.names:
            # A name gone from the snapshot keeps what the client holds: its parent (a cluster kept in
            # CDS until routes stop using it) is still live. Only a name the client holds nothing for
            # gets the placeholder (an empty ClusterLoadAssignment, R22).
            resource = available.get(name) or state.sent.get(name) or self._placeholder(type_url, name)
            if resource is not None:
                desired[name] = resource
        return desired

    def _still_used_clusters(self, state: _TypeState, chosen: Mapping[str, Resource]) -> dict[str, Resource]:
        """Clusters gone from the snapshot that the client's listeners or routes still send traffic to.

        They stay in CDS until the LDS/RDS update that stops using them has been delivered, so a route is
        never left pointing at a cluster Envoy already deleted (make-before-break, R23; case P9).
        """
        in_use: set[str] = set()
        for type_url in (LISTENER, ROUTE):
            other = self._types.get(type_url)
            if other is None:
                continue
            for held in (other.sent, other.acked):
                for resource in held.values():
                    in_use.update(name for ref_type, name in resource.refs if ref_type == CLUSTER)
        return {name: res for name, res in state.sent.items() if name in in_use and name not in chosen}

    def _compute(self, type_url: TypeUrl, state: _TypeState, snapshot: Snapshot) -> Send | None:
        desired = self._desired(type_url, state, snapshot)
        # After a NACK the client runs what it last ACKed. When the desired content moves on (even back to
        # exactly what the client runs) it is sent, so that sent == ACKed == desired again and the NACK is
        # visibly over; an unchanged desired state stays quiet (R10).
        recovering = state.rejected_version is not None
        if type_url in FULL_STATE:
            sent = state.sent
            unchanged = desired.keys() == sent.keys() and all(
                sent[n] is r or sent[n].hash == r.hash for n, r in desired.items())
            if unchanged and not state.full_due and not recovering:
                return None
            resources = tuple(desired[n] for n in sorted(desired))
            available = snapshot.of_type(type_url)
            # The common case sends exactly the snapshot's set, whose version is already computed.
            exact = len(desired) == len(available) and all(available.get(n) is r for n, r in desired.items())
            version = snapshot.version(type_url) if exact else version_of(resources)
            forced = state.full_due
        else:
            changed = sorted(n for n, r in desired.items()
                             if n in state.due or state.sent.get(n, None) is None
                             or state.sent[n].hash != r.hash)
            version = snapshot.version(type_url)
            if not changed and recovering and version != state.rejected_version:
                changed = sorted(desired)
            if not changed:
                return None
            resources = tuple(desired[n] for n in changed)
            forced = bool(state.due & set(changed))
        if version == state.rejected_version:
            # The client rejected exactly this content: stay quiet until it changes (R10). Only names it
            # newly asked for are answered meanwhile (R15).
            if not forced or type_url in FULL_STATE:
                return None
            resources = tuple(r for r in resources if r.name in state.due)
        self._nonce_counter += 1
        return Send(type_url=type_url, version=version, nonce=str(self._nonce_counter), resources=resources)

    def _record(self, type_url: TypeUrl, state: _TypeState, send: Send) -> None:
        self._sent_changed(type_url)
        state.nonce = send.nonce
        state.version_sent = send.version
        state.outstanding = True
        if type_url in FULL_STATE:
            previous = state.sent
            state.sent = {r.name: r for r in send.resources}
            state.full_due = False
            changed = [r for r in send.resources
                       if (old := previous.get(r.name)) is None or old.hash != r.hash]
            if type_url == CLUSTER:
                self._clusters_changed(r.name for r in changed)
            self._secrets_due(changed)
        else:
            for resource in send.resources:
                state.sent[resource.name] = resource
                state.due.discard(resource.name)

    def _clusters_changed(self, names: Iterable[str]) -> None:
        # Envoy re-initialises a changed cluster and needs its ClusterLoadAssignment again, even when the
        # endpoints are the same (R21; envoy #13009, go-control-plane #245). It is due right after the CDS
        # response, not after its ACK: Envoy holds the CDS ACK until the new clusters have warmed, which
        # takes exactly this EDS response.
        eds = self._types.get(ENDPOINT)
        if eds is None:
            return
        for name in names:
            if name in eds.names:
                eds.due.add(name)

    def _secrets_due(self, changed: Iterable[Resource]) -> None:
        # A changed cluster or listener gets the secrets it names again, even unchanged (R46, as R21 does
        # for endpoints): Envoy builds the new resource's TLS context while it warms and must not wait for
        # initial_fetch_timeout should it have dropped its copy of the secret with the old resource.
        sds = self._types.get(SECRET)
        if sds is None:
            return
        for resource in changed:
            for ref_type, name in resource.refs:
                if ref_type == SECRET and name in sds.names:
                    sds.due.add(name)

    def _needed(self, type_url: TypeUrl) -> frozenset[str]:
        """Names of `type_url` (EDS, SDS or RDS) that the client's clusters or listeners, as sent, depend
        on."""
        cached = self._needed_cache.get(type_url)
        if cached is not None:
            return cached
        needed: set[str] = set()
        for referrer in _REFERRERS[type_url]:
            parent = self._types.get(referrer)
            if parent is None:
                continue
            for resource in parent.sent.values():
                for ref_type, name in resource.refs:
                    if ref_type == type_url:
                        needed.add(name)
        result = self._needed_cache[type_url] = frozenset(needed)
        return result

    def _sent_changed(self, type_url: TypeUrl) -> None:
        if type_url in (CLUSTER, LISTENER):
            self._needed_cache.clear()

    def _covered(self, type_url: TypeUrl, state: _TypeState) -> bool:
        """Has the client subscribed to every EDS/RDS name the resources it was sent depend on?"""
        if type_url in FULL_STATE or state.wildcard:
            return True
        return self._needed(type_url) <= state.names

    def _settled_unstarted(self, type_url: TypeUrl) -> bool:
        """A type the client has not asked for yet holds back later types only if the client will need it."""
        if type_url in FULL_STATE:
            return True
        return not self._needed(type_url)
