"""What the state-of-the-world and the delta xDS protocols share: events, per-type state, ordering.

A stream's protocol machine (`protocol.StreamProtocol` for SotW, `delta.DeltaProtocol` for delta) feeds
client requests and snapshots into the per-type state kept here, and asks `next_sends()` for the responses
to write now. The two variants differ only in how a request changes a subscription and in what a response
holds; everything else lives once, in `ProtocolCore` (issue 11, item 1):

* node and type checks of a request (R1, R2);
* ACK and NACK of the outstanding response, matched by nonce (R8-R10);
* the per-type record of what the client holds (`sent`, `acked`) and what it must get again (`due`);
* the ADS push order CDS -> EDS -> SDS -> LDS -> RDS with its exceptions, and clusters kept until the
  listeners and routes that use them have moved on (make-before-break, R23, R46);
* what a changed cluster, listener or route makes due again (R21, R46).

Rule numbers are those of docs/protocol.md. No I/O, clocks or randomness live here (tests/protocol/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from xds.cache.snapshot import Resource, ResourceMap, Snapshot, names_of, refs_of
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
class Send:
    """A response to write: the glue encodes it from the cached resource bytes.

    `removed` is delta only (`removed_resources`, R28); a SotW response never has any."""

    type_url: TypeUrl
    version: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...] = ()
    # Set when `resources` is a snapshot mapping's whole set: the encoded body is then made once for every
    # stream (ResourceMap.body; issue 12). Not part of what the response means.
    whole: ResourceMap | None = field(default=None, compare=False, repr=False)


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
# What a variant's shortcut for a stream in sync with its snapshot gives: a Send, None (nothing to send), or
# False: not the common case, take the general path (issue 12).
Shortcut = Send | Literal[False] | None

# Makes the stand-in for a requested resource the snapshot lacks, or None to send nothing for it.
Placeholder = Callable[[TypeUrl, str], Resource | None]


def send_of(type_url: TypeUrl, version: str, nonce: str, resources: tuple[Resource, ...],
            available: Mapping[str, Resource], removed: tuple[str, ...] = ()) -> Send:
    """A Send, marked as the whole set of `available` when it is, so its body is encoded once."""
    if isinstance(available, ResourceMap) and available.whole(resources):
        return Send(type_url=type_url, version=version, nonce=nonce, resources=available.ordered,
                    removed=removed, whole=available)
    return Send(type_url=type_url, version=version, nonce=nonce, resources=resources, removed=removed)


def no_placeholder(type_url: TypeUrl, name: str) -> Resource | None:
    return None


@dataclass(slots=True)
class TypeState:
    started: bool = False
    wildcard: bool = False
    ever_named: bool = False
    names: frozenset[str] = frozenset()
    nonce: str = ""  # latest nonce sent for this type
    version_sent: str = ""
    outstanding: bool = False
    version_acked: str = ""
    rejected_version: str | None = None
    # Copy-on-write, never changed in place: a stream in sync with its snapshot holds the snapshot's own
    # ResourceMap here, and `acked` is often the very mapping `sent` is (issue 12: < 100 KiB per stream).
    sent: Mapping[str, Resource] = field(default_factory=dict)
    acked: Mapping[str, Resource] = field(default_factory=dict)
    # Named resources the client must get again even if unchanged (new subscriptions, R15; R21).
    due: set[str] = field(default_factory=set)
    # The next response must go out even if the content looks unchanged (SotW full state; the first
    # answer of a delta type).
    full_due: bool = False
    # Delta: subscribed names already answered as removed because they do not exist (R30).
    absent: set[str] = field(default_factory=set)


class ProtocolCore:
    """Per-type state, ACK/NACK and push ordering of one stream; subclasses add a protocol variant."""

    def __init__(self, *, ads: bool, stream_type: TypeUrl | None = None,
                 placeholder: Placeholder = no_placeholder) -> None:
        if not ads and stream_type is None:
            raise ValueError("a single-type stream needs its stream_type")
        self._ads = ads
        self._stream_type = stream_type
        self._placeholder = placeholder
        self._node_id: str | None = None
        self._snapshot: Snapshot | None = None
        self._types: dict[TypeUrl, TypeState] = {}
        self._nonce_counter = 0
        # _needed() per type, valid until what the client holds changes (requests and sends change it).
        self._needed_cache: dict[TypeUrl, frozenset[str]] = {}

    # ------------------------------------------------------------------ inputs

    @property
    def node_id(self) -> str | None:
        return self._node_id

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

    def status(self) -> Mapping[TypeUrl, tuple[str, str, bool]]:
        """Per type: (version sent, version acked, outstanding) for observability."""
        return {t: (s.version_sent, s.version_acked, s.outstanding) for t, s in self._types.items()}

    def subscribed(self, type_url: TypeUrl) -> tuple[bool, frozenset[str]]:
        """(wildcard, names) of the current subscription to `type_url`."""
        state = self._types.get(type_url)
        if state is None:
            return (False, frozenset())
        return (state.wildcard, state.names)

    # ------------------------------------------------------- for the variants

    def _compute(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Send | None:
        raise NotImplementedError

    def _record(self, type_url: TypeUrl, state: TypeState, send: Send) -> None:
        raise NotImplementedError

    def _next_nonce(self) -> str:
        self._nonce_counter += 1
        return str(self._nonce_counter)

    def _check_node(self, node_id: str | None) -> None:
        if self._node_id is None:
            if not node_id:
                raise ProtocolError("the first request on a stream must carry node.id (xDS: node identity)")
            self._node_id = node_id
        elif node_id is not None and node_id != self._node_id:
            raise ProtocolError(
                f"node.id changed on a live stream from {self._node_id!r} to {node_id!r}; "
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

    def _state(self, type_url: TypeUrl) -> TypeState:
        return self._types.setdefault(type_url, TypeState())

    def _answer(self, type_url: TypeUrl, state: TypeState, *, nonce: str, client_version: str,
                error_message: str | None) -> Event | None:
        """Apply the ACK or NACK a request carrying the latest `nonce` of its type says (R8, R9)."""
        event: Event | None = None
        if error_message is not None:
            message = error_message.encode()[:MAX_ERROR_DETAIL].decode(errors="ignore")
            event = Nacked(type_url=type_url, version=client_version, nonce=nonce,
                           rejected_version=state.version_sent, message=message)
            state.outstanding = False
            state.rejected_version = state.version_sent
            self._sent_changed(type_url)
            state.sent = state.acked  # the client kept its previous resources (R8)
        else:
            if state.outstanding:
                event = Acked(type_url=type_url, version=state.version_sent, nonce=nonce)
                state.version_acked = state.version_sent
                state.acked = state.sent
                if state.version_sent != state.rejected_version:
                    # An ACK of the rejected version only accepted the names newly asked for (R15); the
                    # rest of that content is still rejected (R10; tests/protocol/test_protocol_stateful.py).
                    state.rejected_version = None
            state.outstanding = False
        return event

    def _restart(self, type_url: TypeUrl, state: TypeState) -> None:
        """The client (re)starts a type: whatever it asks for is due (R25)."""
        state.started = True
        state.outstanding = False
        self._sent_changed(type_url)
        state.sent = {}
        state.acked = {}
        state.rejected_version = None
        state.full_due = True

    def _forget(self, state: TypeState, names: Iterable[str]) -> None:
        # Forget what the client held, so a later re-subscription is answered (R15; P5).
        names = [n for n in names
                 if n in state.sent or n in state.acked or n in state.due or n in state.absent]
        if not names:
            return
        shared = state.acked is state.sent
        state.sent = _without(state.sent, names)
        state.acked = state.sent if shared else _without(state.acked, names)
        state.due.difference_update(names)
        state.absent.difference_update(names)

    def _recorded(self, type_url: TypeUrl, state: TypeState, send: Send) -> None:
        """Bookkeeping every variant does when `send` goes out."""
        self._sent_changed(type_url)
        state.nonce = send.nonce
        state.version_sent = send.version
        state.outstanding = True

    # ----------------------------------------------------------------- ordering

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

    def _order(self) -> Iterable[TypeUrl]:
        if self._ads:
            return PUSH_ORDER
        assert self._stream_type is not None
        return (self._stream_type,)

    def _still_used_clusters(self, state: TypeState, chosen: Mapping[str, Resource]) -> dict[str, Resource]:
        """Clusters gone from the snapshot that the client's listeners or routes still send traffic to.

        They stay in CDS until the LDS/RDS update that stops using them has been delivered, so a route is
        never left pointing at a cluster Envoy already deleted (make-before-break, R23; case P9).
        """
        in_use: set[str] = set()
        for type_url in (LISTENER, ROUTE):
            other = self._types.get(type_url)
            if other is None:
                continue
            in_use.update(refs_of(other.sent, CLUSTER))
            if other.acked is not other.sent:
                in_use.update(refs_of(other.acked, CLUSTER))
        return {name: res for name, res in state.sent.items() if name in in_use and name not in chosen}

    def _clusters_changed(self, names: Iterable[str]) -> None:
        # Envoy re-initialises a changed cluster and needs its ClusterLoadAssignment again, even when the
        # endpoints are the same (R21; envoy #13009, go-control-plane #245). It is due right after the CDS
        # response, not after its ACK: Envoy holds the CDS ACK until the new clusters have warmed, which
        # takes exactly this EDS response.
        eds = self._types.get(ENDPOINT)
        if eds is None:
            return
        # One C-level intersection: a stream's first CDS answer names every cluster (issue 12).
        eds.due.update(eds.names.intersection(names))

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

    def _whole_changed(self, type_url: TypeUrl, available: ResourceMap) -> None:
        """`_clusters_changed` and `_secrets_due` for a send in which every resource of `available` changed
        (a stream's first CDS/LDS answer): the mapping's memoized name set and refs, shared by every stream,
        instead of a walk over its resources (issue 12)."""
        if type_url == CLUSTER:
            self._clusters_changed(available.names)
        sds = self._types.get(SECRET)
        if sds is not None:
            sds.due.update(sds.names.intersection(available.refs(SECRET)))

    def _needed(self, type_url: TypeUrl) -> frozenset[str]:
        """Names of `type_url` (EDS, SDS or RDS) that the client's clusters or listeners, as sent, depend
        on."""
        cached = self._needed_cache.get(type_url)
        if cached is not None:
            return cached
        # The names a snapshot's mapping refers to are computed once for all streams holding it (issue 12).
        parts = [refs_of(parent.sent, type_url) for referrer in _REFERRERS[type_url]
                 if (parent := self._types.get(referrer)) is not None]
        result = parts[0] if len(parts) == 1 else frozenset().union(*parts)
        self._needed_cache[type_url] = result
        return result

    def _names_every(self, state: TypeState, available: Mapping[str, Resource]) -> bool:
        """Does the subscription name exactly the resources `available` has? If so it now holds that very
        name set, so the next snapshot with the same names answers by identity (issue 12)."""
        every = names_of(available)
        if state.names is every:
            return True
        if not every or len(state.names) != len(every) or state.names != every:
            return False
        state.names = every
        return True

    def _sent_changed(self, type_url: TypeUrl) -> None:
        if type_url in (CLUSTER, LISTENER):
            self._needed_cache.clear()

    def _covered(self, type_url: TypeUrl, state: TypeState) -> bool:
        """Has the client subscribed to every EDS/RDS name the resources it was sent depend on?"""
        if type_url in FULL_STATE or state.wildcard:
            return True
        needed = self._needed(type_url)
        return needed is state.names or needed <= state.names

    def _settled_unstarted(self, type_url: TypeUrl) -> bool:
        """A type the client has not asked for yet holds back later types only if the client will need it."""
        if type_url in FULL_STATE:
            return True
        return not self._needed(type_url)


def _without(held: Mapping[str, Resource], names: Iterable[str]) -> Mapping[str, Resource]:
    """A copy of `held` without `names`: held mappings may be shared and are never changed in place."""
    gone = set(names)
    if not any(n in held for n in gone):
        return held
    return {n: r for n, r in held.items() if n not in gone}
