"""The state-of-the-world xDS protocol for one stream, as a pure state machine.

Built on `protocol_core.ProtocolCore`, which it shares with the delta variant (`delta.py`): this module
holds only what is SotW's own, how a request sets a subscription and what a response holds.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xds.cache.snapshot import Resource, ResourceMap, Snapshot, diff, names_of, version_of
from xds.server.protocol_core import (
    MAX_ERROR_DETAIL,
    WILDCARD,
    Acked,
    Event,
    Ignored,
    Nacked,
    Placeholder,
    ProtocolCore,
    ProtocolError,
    Send,
    Shortcut,
    TypeState,
    no_placeholder,
    send_of,
)
from xds.typeurls import CLUSTER, FULL_STATE, TypeUrl

__all__ = ["MAX_ERROR_DETAIL", "WILDCARD", "Acked", "Event", "Ignored", "Nacked", "Placeholder",
           "ProtocolError", "Request", "Send", "StreamProtocol", "no_placeholder"]


@dataclass(frozen=True, slots=True)
class Request:
    """The fields of a DiscoveryRequest that the protocol reads."""

    type_url: str
    version_info: str = ""
    response_nonce: str = ""
    resource_names: tuple[str, ...] = ()
    node_id: str | None = None  # None: the request carried no node
    error_message: str | None = None  # None: no error_detail (an ACK or a plain request)


class StreamProtocol(ProtocolCore):
    """SotW protocol state of one stream."""

    def on_request(self, request: Request) -> Event | None:
        """Apply one client request; returns what it meant (ACK, NACK, stale) or None for a plain request.

        Raises ProtocolError for requests that must end the stream.
        """
        self._check_node(request.node_id)
        type_url = self._check_type(request.type_url)
        state = self._state(type_url)

        if state.started and request.response_nonce and request.response_nonce != state.nonce:
            # Stale or foreign nonce: a newer response is in flight, the client will restate (R12).
            return Ignored(type_url=type_url, nonce=request.response_nonce, reason="stale_nonce")

        event: Event | None = None
        if not state.started or not request.response_nonce:
            # First request for this type on this stream, or a client restarting it: we know nothing of
            # what the client holds, so everything it asks for is due. A nonce from an earlier stream
            # means a reconnect, which is answered too (R25; case P11a).
            self._restart(type_url, state)
        else:
            event = self._answer(type_url, state, nonce=request.response_nonce,
                                 client_version=request.version_info, error_message=request.error_message)
        self._update_subscription(type_url, state, request.resource_names)
        return event

    # ----------------------------------------------------------------- helpers

    def _update_subscription(self, type_url: TypeUrl, state: TypeState, names: Sequence[str]) -> None:
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
        if requested == state.names:
            return  # an ACK restating the subscription (C-level compare; the fresh set is dropped)
        if self._snapshot is not None:
            # A subscription to every resource of the type holds the snapshot's own name set (issue 12).
            every = names_of(self._snapshot.of_type(type_url))
            if requested == every:
                requested = every
        if state.names:
            added = requested - state.names
            self._forget(state, state.names - requested)
            state.due |= added
        else:
            state.due |= requested  # a first subscription: every name is new (R15), no set difference
        state.names = requested

    def _desired(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> dict[str, Resource]:
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

    def _compute(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Send | None:
        if state.rejected_version is None:
            # The common case, nothing rejected: the work is proportional to what changed since what the
            # client holds, a diff shared by every stream holding the same mapping, plus the names due again
            # (a changed cluster's ClusterLoadAssignment, R21; issue 12). Same results as the general path
            # below.
            fast = (self._full_in_sync(type_url, state, snapshot) if type_url in FULL_STATE
                    else self._named_in_sync(type_url, state, snapshot))
            if fast is not False:
                return fast
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
        return send_of(type_url, version, self._next_nonce(), resources, snapshot.of_type(type_url))

    def _full_in_sync(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Shortcut:
        """A wildcard CDS/LDS subscription: None when unchanged, the whole set when not, False to take the
        general path (a named subscription, or clusters kept for make-before-break)."""
        if not state.wildcard or state.due:
            return False
        available = snapshot.of_type(type_url)
        moved = diff(state.sent, available)
        if moved.removed:
            return False  # maybe a cluster still in use (R23): the general path decides
        if not moved.changed and not state.full_due:
            self._rebind(type_url, state, available)
            return None
        resources = available.ordered if isinstance(available, ResourceMap) else tuple(
            available[n] for n in sorted(available))
        return send_of(type_url, snapshot.version(type_url), self._next_nonce(), resources, available)

    def _named_in_sync(self, type_url: TypeUrl, state: TypeState, snapshot: Snapshot) -> Shortcut:
        """EDS/RDS/SDS: the subscribed names whose resource moved on, and those due again (R15, R21), when
        every due name is in the snapshot. False when a name needs the placeholder (R22) or is due while gone
        from the snapshot: the general path decides those."""
        available = snapshot.of_type(type_url)
        moved = diff(state.sent, available)
        names = state.names
        due = state.due
        every = names_of(available)
        # Set comparisons in C: a first answer has all ~1000 names due (issue 12).
        if due and not (due <= names and due <= every):
            return False
        if self._names_every(state, available):
            if isinstance(available, ResourceMap) and (available.every(moved.changed)
                                                       or available.every(due)):
                # Every name is sent (a first answer, or everything changed): the snapshot's own ordered
                # tuple, whose encoded body all streams share (issue 12).
                return send_of(type_url, snapshot.version(type_url), self._next_nonce(), available.ordered,
                               available)
            changed = sorted(moved.changed | due) if due else sorted(moved.changed)
        else:
            held = state.sent
            extra = [n for n in names if n not in available and n not in held]
            if extra:
                return False  # placeholders: the general path makes them
            changed = sorted({n for n in moved.changed if n in names} | due)
        if not changed:
            return None
        return send_of(type_url, snapshot.version(type_url), self._next_nonce(),
                       tuple(available[n] for n in changed), available)

    def _rebind(self, type_url: TypeUrl, state: TypeState, available: Mapping[str, Resource]) -> None:
        """The client holds exactly `available` (by hash): share the snapshot's mapping instead of a copy."""
        if state.sent is available:
            return
        if state.acked is state.sent:
            state.acked = available
        state.sent = available
        self._sent_changed(type_url)

    def _record(self, type_url: TypeUrl, state: TypeState, send: Send) -> None:
        self._recorded(type_url, state, send)
        snapshot = self._snapshot
        assert snapshot is not None
        available = snapshot.of_type(type_url)
        previous = state.sent
        if type_url in FULL_STATE:
            if len(send.resources) == len(available) and send.version == snapshot.version(type_url):
                state.sent = available  # exactly the snapshot's set (same content hash, R14): share it
            else:
                state.sent = {r.name: r for r in send.resources}
            state.full_due = False
            moved = diff(previous, state.sent)
            if (isinstance(available, ResourceMap) and state.sent is available
                    and available.every(moved.changed)):
                self._whole_changed(type_url, available)  # what every resource names: shared facts
                return
            changed = [state.sent[n] for n in sorted(moved.changed)]
            if type_url == CLUSTER:
                self._clusters_changed(r.name for r in changed)
            self._secrets_due(changed)
            return
        if send.whole is available and isinstance(available, ResourceMap):
            # The whole set went out (a first answer): every resource is the snapshot's own, so no
            # per-name dictionary or check is needed to know what the client now holds (issue 12).
            moved = diff(previous, available)
            if not moved.removed and self._names_every(state, available):
                state.sent = available
            else:
                state.sent = {**previous, **available}
            if state.due and state.due <= available.names:
                state.due = set()
            else:
                state.due.difference_update(available.names)
                if not state.due:
                    state.due = set()
            return
        sent = {r.name: r for r in send.resources}
        moved = diff(previous, available)
        if (not moved.removed and self._names_every(state, available)
                and all(n in sent and sent[n] is available[n] for n in moved.changed)):
            # What the client holds is now the snapshot's set: share it instead of a copy (issue 12).
            state.sent = available
        else:
            state.sent = {**previous, **sent}
        state.due.difference_update(sent)
        if not state.due:
            state.due = set()  # a set keeps its table when emptied: give back a start-up's 1000 names
