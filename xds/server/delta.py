"""The delta (incremental) xDS protocol for one stream, as a pure state machine (issue 11, item 2).

Built on `protocol_core.ProtocolCore` like the SotW machine (`protocol.py`): the same per-type record of
what the client holds, the same ACK/NACK handling and the same make-before-break push order (R23, R46).
What is delta's own (docs/protocol.md R28-R30, xds_protocol.rst "Incremental xDS"):

* A request changes the subscription by difference: `resource_names_subscribe` adds names,
  `resource_names_unsubscribe` drops them; `"*"` subscribes to everything of the type (explicit wildcard),
  and the first request of CDS or LDS with no names at all is the legacy wildcard (R17, R30).
* Subscription changes are honoured even on a request with a stale nonce; only its ACK/NACK is ignored
  (R28). A request without a nonce after the first one is a spontaneous subscription change, no ACK.
* Every resource carries its own version, the content hash the snapshot already has (R14); a response
  carries the resources that changed for this client and `removed_resources` for what it holds that is
  gone (R28). `system_version_info` is the snapshot's version of the type, for debugging only.
* The first request of a type may list `initial_resource_versions`: what the client kept across a
  reconnect. Those count as held, so only what differs is sent, and whatever was deleted meanwhile is
  removed (R29; case P12).
* A subscribed name that does not exist is answered once in `removed_resources` and delivered when it
  appears; subscribing again to a name the client holds sends it again; unsubscribing a name never
  subscribed does nothing; dropping a name also covered by the wildcard answers it again (R30; case P13).
  An unknown EDS name still gets the empty ClusterLoadAssignment placeholder, as in SotW (R22): a cluster
  leaves warming only with an assignment.
* The first answer of each type is sent even when it holds nothing, so the client's initial fetch ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xds.cache.snapshot import Resource, ResourceMap, Snapshot, diff, names_of
from xds.server.protocol_core import (
    WILDCARD,
    Event,
    Ignored,
    Placeholder,
    ProtocolCore,
    Send,
    Shortcut,
    TypeState,
    no_placeholder,
    send_of,
)
from xds.typeurls import CLUSTER, FULL_STATE, LISTENER, TypeUrl

_MAX_NAMED_MAPS = 4  # whole mappings remembered by reference before folding the oldest into the set


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    """The fields of a DeltaDiscoveryRequest that the protocol reads."""

    type_url: str
    response_nonce: str = ""
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: Mapping[str, str] = field(default_factory=dict)
    node_id: str | None = None  # None: the request carried no node
    error_message: str | None = None  # None: no error_detail (an ACK or a plain request)


class DeltaProtocol(ProtocolCore):
    """Delta protocol state of one stream (DeltaAggregatedResources or a single-type Delta* method)."""

    def __init__(self, *, ads: bool, stream_type: TypeUrl | None = None,
                 placeholder: Placeholder = no_placeholder) -> None:
        super().__init__(ads=ads, stream_type=stream_type, placeholder=placeholder)
        # What the clusters and listeners sent on this stream name. A reconnecting client asks for their
        # endpoints and secrets after the CDS/LDS answer, saying it kept them; a changed cluster still needs
        # its ClusterLoadAssignment again (R21, R29; Istio TestDeltaReconnectRequests).
        self._named_by_sent: set[tuple[TypeUrl, str]] = set()
        # The same for whole snapshot mappings sent at once (a start-up's CDS): their refs, shared by every
        # stream, instead of a set of ~1000 pairs per stream (issue 12). A few at most, see _record.
        self._named_by_maps: list[ResourceMap] = []
        # Whether any held resource is still a stand-in from initial_resource_versions (see set_snapshot);
        # almost always False, so a snapshot costs no walk over what the client holds.
        self._stand_ins = False

    def on_request(self, request: DeltaRequest) -> Event | None:
        """Apply one client request; returns what it meant (ACK, NACK, stale) or None for a plain request.

        Raises ProtocolError for requests that must end the stream.
        """
        self._check_node(request.node_id)
        type_url = self._check_type(request.type_url)
        state = self._state(type_url)
        event: Event | None = None
        if not state.started:
            # A new stream knows nothing of the client but what it says it kept (R25, R29).
            self._restart(type_url, state)
            self._held_from(type_url, state, request.initial_versions)
            if type_url in FULL_STATE and not request.subscribe:
                state.wildcard = True  # legacy wildcard (R17)
        elif request.response_nonce:
            if request.response_nonce != state.nonce:
                # The ACK/NACK of an older response means nothing now, but the subscription change it
                # carries is honoured (R28: delta differs from SotW R12 here).
                event = Ignored(type_url=type_url, nonce=request.response_nonce, reason="stale_nonce")
            else:
                event = self._answer(type_url, state, nonce=request.response_nonce,
                                     client_version=state.version_acked, error_message=request.error_message)
        self._update_subscription(type_url, state, request.subscribe, request.unsubscribe,
                                  kept=request.initial_versions)
        return event

    def set_snapshot(self, snapshot: Snapshot) -> None:
        super().set_snapshot(snapshot)
        if not self._stand_ins:
            return
        self._stand_ins = False
        # Stand-ins recorded from initial_resource_versions before the group's first snapshot was built
        # become the snapshot's resources when the hashes match, so what they reference counts for the push
        # order (R23) like anything sent on this stream.
        for type_url, state in self._types.items():
            available = snapshot.of_type(type_url)
            shared = state.acked is state.sent
            state.sent = self._replace_stand_ins(type_url, state.sent, available)
            state.acked = state.sent if shared else self._replace_stand_ins(type_url, state.acked, available)

    def _replace_stand_ins(self, type_url: TypeUrl, held: Mapping[str, Resource],
                           available: Mapping[str, Resource]) -> Mapping[str, Resource]:
        """`held` with the stand-ins whose hash the snapshot has replaced by its resources (a copy: held
        mappings are never changed in place)."""
        replaced: dict[str, Resource] = {}
        for name, resource in held.items():
            if resource.encoded:
                continue
            current = available.get(name)
            if current is not None and current.hash == resource.hash:
                replaced[name] = current
            else:
                self._stand_ins = True
        if not replaced:
            return held
        self._sent_changed(type_url)
        return {**held, **replaced}

    # ----------------------------------------------------------------- helpers

    def _held_from(self, type_url: TypeUrl, state: TypeState, versions: Mapping[str, str]) -> None:
        """Record what a reconnecting client kept (`initial_resource_versions`, R29)."""
        if not versions:
            return
        self._sent_changed(type_url)
        available = self._snapshot.of_type(type_url) if self._snapshot is not None else {}
        sent, acked = dict(state.sent), dict(state.acked)
        for name, version in versions.items():
            current = available.get(name)
            # The same content hash is the same content (R14), references included; anything else is a
            # stand-in that only says which version the client has, so it compares unequal to every
            # resource the snapshot could hold.
            held = current if current is not None and current.hash == version else Resource(
                name=name, type_url=type_url, body=b"", hash=version, encoded=b"")
            self._stand_ins |= held is not current
            sent[name] = held
            acked[name] = held
        state.sent, state.acked = sent, acked

    def _update_subscription(self, type_url: TypeUrl, state: TypeState, subscribe: tuple[str, ...],
                             unsubscribe: tuple[str, ...], kept: Mapping[str, str]) -> None:
        names = set(state.names)
        forgotten: list[str] = []
        for name in unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
                continue
            if name not in names:
                continue  # never subscribed: nothing to do (R30)
            names.discard(name)
            if state.wildcard:
                # Still covered by the wildcard: the client must hear about it again, as a resource or as
                # removed (R30; case P13).
                state.due.add(name)
                state.absent.discard(name)
            else:
                forgotten.append(name)
        self._forget(state, forgotten)  # before subscribing: a name dropped and re-added is due again
        for name in subscribe:
            if name == WILDCARD:
                if not state.wildcard:
                    state.wildcard = True
                    state.full_due = True
                continue
            names.add(name)
            state.absent.discard(name)
            if name not in kept or self._named_by_sent_on_stream(type_url, name):
                # Subscribing to a name already held gets it again (R30), and a new one is answered (R15);
                # a name the reconnecting client says it kept is sent only if it differs (R29).
                state.due.add(name)
        requested = frozenset(names)
        if self._snapshot is not None and requested:
            # A subscription to every resource of the type holds the snapshot's own name set (issue 12).
            every = names_of(self._snapshot.of_type(type_url))
            if requested == every:
                requested = every
        state.names = requested
        if subscribe or unsubscribe:
            self._needed_cache.clear()

    def _desired(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> dict[str, Resource]:
        available = snapshot.of_type(type_url)
        desired: dict[str, Resource] = dict(available) if state.wildcard else {}
        for name in state.names:
            resource = available.get(name)
            if resource is None and type_url not in FULL_STATE:
                # As in SotW: a named resource gone from the snapshot keeps what the client holds while its
                # parent lives on; only EDS has a placeholder for a name never held (R22).
                resource = state.sent.get(name) or self._placeholder(type_url, name)
            if resource is not None:
                desired[name] = resource
        if type_url == CLUSTER and self._ads:
            desired.update(self._still_used_clusters(state, desired))
        return desired

    def _in_sync(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Shortcut:
        """The common case (nothing rejected or first, only names the snapshot has due; a wildcard without
        names, or every name of the snapshot): what changed since what the client holds, a diff shared by
        the streams holding the same mapping (issue 12). False: take the general path, which would give
        the same answer."""
        if state.rejected_version is not None or self._stand_ins or (state.full_due and state.sent):
            # A first answer (full_due, nothing held yet) stays here: it is the whole set, or what is due.
            return False
        available = snapshot.of_type(type_url)
        if not ((state.wildcard and not state.names)
                or (not state.wildcard and self._names_every(state, available))):
            return False
        due = state.due
        # Names due again (a changed cluster's ClusterLoadAssignment, R21) cost O(due) here as long as the
        # snapshot has them; one that is gone needs a removal, which the general path makes.
        if due and not due <= names_of(available):
            return False
        moved = diff(state.sent, available)
        if moved.removed:
            return False  # removals, and clusters kept for make-before-break (R23)
        if isinstance(available, ResourceMap) and (available.every(moved.changed) or available.every(due)):
            # Every name goes out (a first answer): the snapshot's ordered tuple and shared body (issue 12).
            return send_of(type_url, snapshot.version(type_url), self._next_nonce(), available.ordered,
                           available)
        if due:
            return Send(type_url=type_url, version=snapshot.version(type_url), nonce=self._next_nonce(),
                        resources=tuple(available[n] for n in sorted(moved.changed | due)))
        if state.full_due:
            return False  # nothing changed, yet a first answer must go out: the general path makes it
        if not moved.changed:
            if state.sent is not available and state.acked is state.sent:
                state.acked = available  # the same content by hash: share the snapshot's mapping
            if state.sent is not available:
                state.sent = available
                self._sent_changed(type_url)
            return None
        return Send(type_url=type_url, version=snapshot.version(type_url), nonce=self._next_nonce(),
                    resources=tuple(available[n] for n in sorted(moved.changed)))

    def _compute(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Send | None:
        fast = self._in_sync(type_url, state, snapshot)
        if fast is not False:
            return fast
        desired = self._desired(type_url, state, snapshot)
        sent = state.sent
        changed = sorted(n for n, r in desired.items()
                         if n in state.due or (held := sent.get(n)) is None or held.hash != r.hash)
        gone = {n for n in sent if n not in desired}
        # Subscribed names that do not exist are answered as removed once; asked again, again (R30).
        missing = {n for n in state.names if n not in desired and n not in sent and n not in state.absent}
        missing |= {n for n in state.due if n not in desired}
        removed = sorted(gone | missing)
        version = snapshot.version(type_url)
        if version == state.rejected_version:
            # The client rejected this content: stay quiet until it changes (R10), answering only names it
            # newly asked for (R15).
            changed = [n for n in changed if n in state.due]
            removed = [n for n in removed if n in state.due]
        # After a NACK the client runs what it last ACKed. When the content moves on, even back to exactly
        # that, a response goes out (empty if nothing differs) so that its ACK visibly ends the NACK (R10).
        recovered = state.rejected_version is not None and version != state.rejected_version
        if not changed and not removed and not state.full_due and not recovered:
            return None
        return send_of(type_url, version, self._next_nonce(), tuple(desired[n] for n in changed),
                       snapshot.of_type(type_url), tuple(removed))

    def _record(self, type_url: TypeUrl, state: TypeState, send: Send) -> None:
        self._recorded(type_url, state, send)
        state.full_due = False
        previous = state.sent
        assert self._snapshot is not None
        available = self._snapshot.of_type(type_url)
        if (send.whole is available and isinstance(available, ResourceMap) and not previous
                and not send.removed and not self._stand_ins
                and ((state.wildcard and not state.names) or self._names_every(state, available))):
            self._record_first(type_url, state, available)
            return
        sent = {r.name: r for r in send.resources}
        state.due.difference_update(sent)
        state.absent.difference_update(sent)
        for name in send.removed:
            state.due.discard(name)
            if name in state.names:
                state.absent.add(name)
        moved = diff(previous, available)
        if (((state.wildcard and not state.names) or self._names_every(state, available))
                and not self._stand_ins and all(n in send.removed for n in moved.removed)
                and all(n in sent and sent[n] is available[n] for n in moved.changed)):
            # What the client holds is now the snapshot's set: share it instead of a copy (issue 12).
            state.sent = available
        else:
            held = {**previous, **sent}
            for name in send.removed:
                held.pop(name, None)
            state.sent = held
        if not state.due:
            state.due = set()  # a set keeps its table when emptied: give back a start-up's names
        if type_url in (CLUSTER, LISTENER):
            changed = [r for r in send.resources
                       if (old := previous.get(r.name)) is None or old.hash != r.hash]
            if type_url == CLUSTER:
                self._clusters_changed(r.name for r in changed)
            self._secrets_due(changed)
            now = state.sent
            if isinstance(now, ResourceMap) and len(changed) == len(now):
                # Every resource of the mapping now held changed: what they name is the mapping's refs.
                if not any(m is now for m in self._named_by_maps):
                    self._named_by_maps.append(now)
                if len(self._named_by_maps) > _MAX_NAMED_MAPS:
                    oldest = self._named_by_maps.pop(0)
                    self._named_by_sent.update(ref for r in oldest.values() for ref in r.refs)
            else:
                self._named_by_sent.update(ref for r in changed for ref in r.refs)

    def _record_first(self, type_url: TypeUrl, state: TypeState, available: ResourceMap) -> None:
        """`_record` for a first answer that sent the whole of `available` to a stream holding nothing: the
        client now holds the snapshot's own mapping, and what its resources name are the mapping's shared
        facts, not per-name work (issue 12). The same outcome as the general record."""
        names = available.names
        state.due = set() if state.due <= names else state.due - names
        if state.absent:
            state.absent.difference_update(names)
        state.sent = available
        if type_url in (CLUSTER, LISTENER):
            self._whole_changed(type_url, available)
            if not any(m is available for m in self._named_by_maps):
                self._named_by_maps.append(available)
            if len(self._named_by_maps) > _MAX_NAMED_MAPS:
                oldest = self._named_by_maps.pop(0)
                self._named_by_sent.update(ref for r in oldest.values() for ref in r.refs)

    def _named_by_sent_on_stream(self, type_url: TypeUrl, name: str) -> bool:
        return (type_url, name) in self._named_by_sent or any(name in m.refs(type_url)
                                                              for m in self._named_by_maps)
