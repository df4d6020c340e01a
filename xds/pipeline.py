"""Pipeline: the latest state of every source -> one SnapshotBuilder for the store.

Pure and synchronous: it keeps the last good update per source, merges catalogs and policies, and makes
the builder that turns (catalog, policy) into a node group's snapshot. The app calls it from the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from xds.cache.node import split_client, split_key
from xds.cache.snapshot import Snapshot, make_snapshot
from xds.cache.store import SnapshotBuilder
from xds.model.catalog import merge_catalogs
from xds.model.service import Catalog, Locality
from xds.model.spiffe import DEFAULT_TRUST_DOMAIN, group_identity
from xds.pki.workload import WorkloadIdentities
from xds.policy.apply import apply_policy
from xds.policy.desired import (
    TRUST_BUNDLE_SECRET,
    WORKLOAD_CERT_SECRET,
    DesiredState,
    SecretSpec,
    TlsCertificateSpec,
    ValidationContextSpec,
)
from xds.policy.load_weights import NO_LOADS, LoadFactors
from xds.policy.schema import Policy, merge_policies
from xds.policy.tls_material import NO_MATERIAL, TlsMaterial, tls_inputs
from xds.sources.base import SourceUpdate
from xds.sources.tls_files import TlsFiles
from xds.translate.build import plan
from xds.translate.delivery import DEFAULT_XDS_CLUSTER, ClientKind, Delivery, delivery_for, for_client
from xds.translate.resource import Deferred
from xds.translate.stats_listener import StatsListenerSpec, stats_listener_item

log = logging.getLogger("xds.pipeline")


@dataclass(frozen=True, slots=True)
class World:
    """Everything a snapshot is built from."""

    catalog: Catalog
    policy: Policy
    # The TLS files the policy names, as last read and checked (issue 9 item 7).
    material: TlsMaterial = NO_MATERIAL
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    # The workload CA's certificates (issue 9); None: no group may use sidecar mTLS (a snapshot naming the
    # workload secrets then fails to build, with a message saying so).
    workload: WorkloadIdentities | None = None
    # Factors of load-aware endpoint weights (issue 10, docs/load-aware.md), replaced by the load engine at
    # most once per --load-interval.
    loads: LoadFactors = NO_LOADS
    # The bootstrap cluster of single-type Envoys that reaches this server (translate/delivery.py, issue 11).
    xds_cluster: str = DEFAULT_XDS_CLUSTER
    # The opt-in Prometheus stats listener every Envoy gets (issue 14, translate/stats_listener.py).
    stats_listener: StatsListenerSpec | None = None


def _plan(world: World, desired: DesiredState, kind: ClientKind, delivery: Delivery) -> list[Deferred]:
    """plan(), plus the stats listener for Envoys when it is on; proxyless gRPC clients only take
    api_listeners (docs/protocol.md C2), so they never get it."""
    items = plan(desired, delivery)
    if world.stats_listener is not None and kind is not ClientKind.GRPC:
        items.append(stats_listener_item(world.stats_listener))
    return items


def with_tls_material(world: World, files: TlsFiles) -> World:
    """`world` with the TLS files its policy names. Blocking (reads files); raises PolicyError naming each
    file that has no good content yet, so the last good world keeps serving (docs/protocol.md R38)."""
    return replace(world, material=files.resolve(tls_inputs(world.policy)))


class NoWorkloadCaError(ValueError):
    """A node group needs a workload certificate and the pipeline has no CA."""


def with_workload_secrets(desired: DesiredState, group: str, world: World) -> DesiredState:
    """`desired` with the group's workload certificate and the trust bundle, if its clusters or listeners
    name them (sidecar mTLS, issue 9). The certificate is the group's current one: a rebuild after it is
    due carries a new one, which is a new SDS version (docs/protocol.md R46)."""
    needed = desired.secret_names() & {WORKLOAD_CERT_SECRET, TRUST_BUNDLE_SECRET}
    if not needed:
        return desired
    if world.workload is None:
        raise NoWorkloadCaError(f"node group {group!r} needs a workload certificate (sidecar mTLS) and no "
                                "workload CA is configured")
    added: list[SecretSpec] = []
    if WORKLOAD_CERT_SECRET in needed:
        issued = world.workload.certificate(group_identity(world.trust_domain, group))
        added.append(SecretSpec(WORKLOAD_CERT_SECRET, tls_certificate=TlsCertificateSpec(
            certificate_chain_pem=issued.certificate_pem, private_key_pem=issued.private_key_pem)))
    if TRUST_BUNDLE_SECRET in needed:
        added.append(SecretSpec(TRUST_BUNDLE_SECRET, validation_context=ValidationContextSpec(
            trusted_ca_pem=world.workload.trust_bundle_pem())))
    secrets = sorted([*desired.secrets, *added], key=lambda spec: spec.name)
    return replace(desired, secrets=tuple(secrets))


# apply_policy's result per (which listeners serve the group, locality), within one World (issue 12).
AppliedMemo = dict[tuple[tuple[bool, ...], Locality], DesiredState]
# plan()'s result per (DesiredState object, delivery), within one World; the state is kept alongside so
# that its id is never reused while the entry lives.
PlannedMemo = dict[tuple[int, Delivery, bool], tuple[DesiredState, list[Deferred]]]
# The snapshot made from each plan()'s result, by the id of the item list (kept alongside, as above), within
# one World: groups that share a plan share its snapshot's mappings and versions (issue 12).
BuiltMemo = dict[int, tuple[list[Deferred], Snapshot]]
# The builder lives as long as its World is current; with a node group per sidecar (an inbound listener
# each) every group differs, so the memos keep only the first few results rather than one per group.
MEMO_LIMIT = 16


def _applied(world: World, group: str, locality: Locality, memo: AppliedMemo | None) -> DesiredState:
    """apply_policy for `group`. It depends on the group only through which listeners serve it
    (ListenerPolicy.serves), so node groups served the same listeners share one result: a change then
    costs one walk over the catalog, not one per node group (issue 12)."""
    if memo is None:
        return apply_policy(world.catalog, world.policy, group=group, locality=locality,
                            material=world.material, trust_domain=world.trust_domain, loads=world.loads)
    key = (tuple(listener.serves(group) for listener in world.policy.listeners), locality)
    found = memo.get(key)
    if found is None:
        found = _applied(world, group, locality, None)
        if len(memo) < MEMO_LIMIT:
            memo[key] = found
    return found


def build_snapshot(world: World, key: str, previous: Snapshot | None = None, *,
                   donor: Snapshot | None = None, applied: AppliedMemo | None = None,
                   planned: PlannedMemo | None = None, built: BuiltMemo | None = None) -> Snapshot:
    # `key` is a node group, or a group seen from a locality (cache/node.py located_key, issue 8): the
    # listeners follow the group, the failover priorities the locality.
    # The kind of client picks the snapshot variant (cache/node.py client_key, issue 11).
    group, locality = split_key(key)
    group, kind = split_client(group)
    desired = _applied(world, group, locality, applied)
    desired = with_workload_secrets(for_client(desired, kind), group, world)
    # plan(), not translate(): only resources whose spec the previous (or donor) snapshot lacks get
    # translated, so the snapshots of one group in several localities share every resource but the
    # failover services' ClusterLoadAssignments.
    delivery = delivery_for(kind, world.xds_cluster)
    if planned is None:
        return make_snapshot(key, _plan(world, desired, kind, delivery), previous, donor=donor)
    # Groups that share a DesiredState (the same listeners, no per-group workload certificate) share its
    # plan too: the Deferred items are immutable and only read by make_snapshot.
    # An ADS Envoy and a gRPC client share a delivery but not the stats listener, hence the third part.
    memo_key = (id(desired), delivery, kind is ClientKind.GRPC)
    entry = planned.get(memo_key)
    if entry is None or entry[0] is not desired:
        entry = (desired, _plan(world, desired, kind, delivery))
        if len(planned) < MEMO_LIMIT:
            planned[memo_key] = entry
    items = entry[1]
    if built is None:
        return make_snapshot(key, items, previous, donor=donor)
    # The same items make the same content, whichever group asks: one make_snapshot per change instead of
    # one per node group. Only the group's name differs; the versions are equal as content hashes must be
    # (docs/protocol.md R14), and the streams of every such group share one set of mappings and their diffs.
    made = built.get(id(items))
    if made is not None and made[0] is items:
        shared = made[1]
        return shared if shared.group == key else Snapshot(group=key, resources=shared.resources,
                                                           versions=shared.versions)
    snapshot = make_snapshot(key, items, previous, donor=donor)
    if len(built) < MEMO_LIMIT:
        built[id(items)] = (items, snapshot)
    return snapshot


def builder_for(world: World) -> SnapshotBuilder:
    # The snapshot this builder made last for each client kind, of whichever group. The next build shares
    # the resources it has in common with the last one of its own kind, or else with one whose Clusters
    # point at the same source (an ADS Envoy's and a gRPC client's do, docs/protocol.md C2), or else with
    # any. One reference per kind, replaced at every build, so it holds at most three snapshots that no
    # group uses any more.
    last: dict[ClientKind, Snapshot] = {}
    # Shared by every group this builder builds; the builder (and the memo with it) is replaced at the next
    # publish, so the memo never outlives its World. The store may call the builder from several threads
    # (a publish and a new stream's get): two racing groups at worst both compute an equal result.
    applied: AppliedMemo = {}
    planned: PlannedMemo = {}
    built: BuiltMemo = {}

    def build(group: str, previous: Snapshot | None) -> Snapshot:
        kind = split_client(split_key(group)[0])[1]
        delivery = delivery_for(kind, world.xds_cluster)
        alike = [s for k, s in last.items() if delivery_for(k, world.xds_cluster) == delivery]
        donor = last.get(kind) or next(iter(alike), None) or next(iter(last.values()), None)
        snapshot = build_snapshot(world, group, previous, donor=donor, applied=applied,
                                  planned=planned, built=built)
        last[kind] = snapshot
        return snapshot

    return build


class Pipeline:
    """Collects source updates; `world()` is None until every expected source has synced once (F2)."""

    def __init__(self, expected_sources: Sequence[str], *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 workload: WorkloadIdentities | None = None, xds_cluster: str = DEFAULT_XDS_CLUSTER,
                 stats_listener: StatsListenerSpec | None = None) -> None:
        self._expected = tuple(expected_sources)
        self._stats_listener = stats_listener
        self._xds_cluster = xds_cluster
        self._latest: dict[str, SourceUpdate] = {}
        self._trust_domain = trust_domain
        self._workload = workload

    def accept(self, update: SourceUpdate) -> None:
        self._latest[update.source] = update

    @property
    def synced(self) -> bool:
        return all(name in self._latest for name in self._expected)

    def missing(self) -> list[str]:
        return [name for name in self._expected if name not in self._latest]

    def world(self) -> World:
        """Merge the latest updates, in the configured source order. Raises PolicyError on conflicts."""
        ordered = [self._latest[n] for n in self._expected if n in self._latest]
        ordered += [u for n, u in sorted(self._latest.items()) if n not in self._expected]
        catalog = merge_catalogs([u.catalog for u in ordered]) if ordered else Catalog()
        policies = [u.policy for u in ordered if u.policy is not None]
        policy = merge_policies(policies) if policies else Policy(services=(), listeners=())
        return World(catalog=catalog, policy=policy, trust_domain=self._trust_domain, workload=self._workload,
                     xds_cluster=self._xds_cluster, stats_listener=self._stats_listener)
