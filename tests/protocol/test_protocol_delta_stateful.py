"""A stateful hypothesis test of DeltaProtocol: an Envoy-like delta client against the state machine.

Random interleavings of config changes, ACKs, NACKs, reconnects with `initial_resource_versions` and EDS/RDS
subscriptions that follow what the client holds (as Envoy's do). Every response is checked as it arrives
(docs/protocol.md R28-R30), and `settle` checks liveness: an ACKing client ends up holding exactly the
snapshot's content, and then hears nothing more.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from xds.cache.snapshot import Snapshot, empty_endpoints
from xds.server.protocol_core import Send
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TypeUrl

from .delta_world import DeltaClient
from .test_protocol_stateful import EDITS, configs, edited
from .world import Config, config_snapshot

ORDER: tuple[TypeUrl, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SETTLE_ROUNDS = 12


class DeltaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = DeltaClient()
        self.config: Config | None = None
        self.snap: Snapshot | None = None
        self.pending: dict[TypeUrl, Send] = {}
        self.subscribed: dict[TypeUrl, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        # Type -> the version the client last rejected, until it ACKs another one (R10 keeps it quiet).
        self.rejected: dict[TypeUrl, str] = {}

    # ------------------------------------------------------------------ helpers

    def _take(self, sends: list[Send]) -> None:
        for send in sends:
            names = [r.name for r in send.resources]
            assert len(names) == len(set(names)), f"duplicate names in {send}"
            assert not set(names) & set(send.removed), f"a name both sent and removed: {send}"
            assert send.type_url not in self.pending, "two responses of one type outstanding"
            for r in send.resources:
                assert r.type_url == send.type_url and r.hash
            self.pending[send.type_url] = send

    def _wanted(self, t: TypeUrl) -> set[str]:
        """The names Envoy asks for: endpoints of the clusters it holds, routes of its listeners."""
        parent = CLUSTER if t == ENDPOINT else LISTENER
        held = self.client.held.get(parent, {})
        if t == ENDPOINT:
            return set(held)
        assert self.snap is not None
        # A held listener's route config: from the snapshot's resource of the held version, else unknown.
        wanted: set[str] = set()
        for name, version in held.items():
            known = self.client.protocol._types[LISTENER].acked.get(name)
            for res in (self.snap.of_type(LISTENER).get(name), known):
                if res is not None and res.hash == version:
                    wanted |= {n for ref, n in res.refs if ref == ROUTE}
                    break
        return wanted

    def _follow(self, t: TypeUrl) -> None:
        """Change the EDS/RDS subscription to what the client holds needs, if the type started."""
        wanted = self._wanted(t)
        current = self.subscribed[t]
        if wanted == current or t in self.pending:
            return
        self.subscribed[t] = wanted
        nonce = self.client.nonces.get(t)
        if nonce is None:
            _, sends = self.client.request(t, sorted(wanted))
        else:
            _, sends = self.client.request(t, sorted(wanted - current), sorted(current - wanted))
        self._take(sends)

    def _start(self) -> None:
        for t in (CLUSTER, LISTENER):
            if t not in self.client.nonces and t not in self.pending:
                _, sends = self.client.request(t, initial=self.client.held.get(t, {}))
                self._take(sends)

    # -------------------------------------------------------------------- rules

    @initialize(config=configs())
    def boot(self, config: Config) -> None:
        self.config = config
        self.snap = config_snapshot(config)
        self.client.protocol.set_snapshot(self.snap)
        self._start()

    @rule(kind=st.sampled_from(EDITS), i=st.integers(0, 5), knob=st.integers(0, 5))
    def edit(self, kind: str, i: int, knob: int) -> None:
        assert self.config is not None
        self.config = edited(self.config, kind, i, knob)
        self.snap = config_snapshot(self.config, self.snap)
        self._take(self.client.push(self.snap))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(sorted(self.pending)))
        self._ack(self.pending.pop(t))
        for child in (ENDPOINT, ROUTE):
            self._follow(child)

    def _ack(self, send: Send) -> None:
        if self.rejected.get(send.type_url) != send.version:
            self.rejected.pop(send.type_url, None)
        _, sends = self.client.ack(send)
        self._take(sends)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(sorted(self.pending)))
        send = self.pending.pop(t)
        self.rejected[t] = send.version
        _, sends = self.client.nack(send)
        self._take(sends)

    @rule()
    def reconnect(self) -> None:
        held = {t: dict(v) for t, v in self.client.held.items()}
        self.client = DeltaClient(held=held)
        self.pending.clear()
        self.rejected.clear()  # a new stream answers in full (R25)
        self.subscribed = {ENDPOINT: set(), ROUTE: set()}
        assert self.snap is not None
        self.client.protocol.set_snapshot(self.snap)
        for t in (CLUSTER, LISTENER):
            _, sends = self.client.request(t, initial=held.get(t, {}))
            for send in sends:
                # R29: nothing the client already holds in this version is sent again.
                kept = held.get(t, {})
                assert all(kept.get(r.name) != r.hash for r in send.resources), send
            self._take(sends)

    @rule()
    def settle(self) -> None:
        assert self.snap is not None
        for _ in range(SETTLE_ROUNDS):
            if not self.pending:
                self._start()
                for child in (ENDPOINT, ROUTE):
                    self._follow(child)
                if not self.pending:
                    break
            for t in [t for t in ORDER if t in self.pending]:
                self._ack(self.pending.pop(t))
            for child in (ENDPOINT, ROUTE):
                self._follow(child)
        assert not self.pending, f"still sending after {SETTLE_ROUNDS} rounds: {self.pending}"
        held = self.client.held
        snap = self.snap
        # A type whose current content the client rejected stays as the client had it (R10).
        quiet = {t for t, v in self.rejected.items() if v == snap.version(t)}
        if quiet & {LISTENER, ROUTE}:
            # Routes the client still runs keep the clusters they use in CDS (make-before-break, R23).
            quiet.add(CLUSTER)
        for t in (CLUSTER, LISTENER):
            if t in quiet:
                continue
            expected = {n: r.hash for n, r in snap.of_type(t).items()}
            assert held.get(t, {}) == expected, f"{t}: {held.get(t)} != {expected}"
        for t in (ENDPOINT, ROUTE):
            if t in quiet:
                continue
            available = snap.of_type(t)
            expected = {}
            kept = held.get(t, {})
            for n in self.subscribed[t]:
                if n not in available and n in kept:
                    # Gone from the snapshot while its parent lives on in the client: kept as held.
                    expected[n] = kept[n]
                    continue
                resource = available.get(n) or (empty_endpoints(t, n) if t == ENDPOINT else None)
                if resource is not None:
                    expected[n] = resource.hash
            got = {n: v for n, v in held.get(t, {}).items() if n in self.subscribed[t]}
            assert got == expected, f"{t}: {got} != {expected}"
        assert self.client.flush() == []


DeltaMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.filter_too_much])
TestDeltaStream = DeltaMachine.TestCase
