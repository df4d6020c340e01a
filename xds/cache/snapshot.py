"""Snapshot: the resources one node group should hold, serialized once, with content-hash versions.

Each resource is serialized deterministically exactly once per snapshot, and its `DiscoveryResponse`
`resources` field entry is pre-encoded, so a response to any number of streams is a concatenation of cached
bytes plus a three-field header (benchmarks/README.md: serialize once, fan the bytes out).

Versions are content hashes (docs/protocol.md R14, case F3): identical content gives an identical version
across restarts and replicas, and a restart can never reuse a version for different content.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, NoReturn

from xds.translate.resource import Deferred, Translated
from xds.typeurls import ENDPOINT, PUSH_ORDER, TypeUrl, short_name


class InconsistentSnapshotError(ValueError):
    """The resources do not form a config Envoy can apply (dangling reference or duplicate name)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def encode_any(type_url: str, body: bytes) -> bytes:
    """Wire form of google.protobuf.Any{type_url, value}."""
    return length_delimited(1, type_url.encode()) + length_delimited(2, body)


# DiscoveryResponse.resources is field 2 (envoy/service/discovery/v3/discovery.proto).
DISCOVERY_RESPONSE_RESOURCES_FIELD = 2


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    type_url: TypeUrl
    body: bytes
    hash: str
    # The DiscoveryResponse `resources` entry (tag + length + Any) for this resource.
    encoded: bytes = field(repr=False)
    refs: tuple[tuple[TypeUrl, str], ...] = ()
    # The spec it was translated from (Translated.key), to recognise an unchanged resource unserialized.
    key: Hashable = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, item: Translated | Deferred) -> Resource:
        message = item.message if isinstance(item, Translated) else item.make()
        body = message.SerializeToString(deterministic=True)
        encoded = length_delimited(DISCOVERY_RESPONSE_RESOURCES_FIELD, encode_any(item.type_url, body))
        return cls(name=item.name, type_url=item.type_url, body=body, hash=digest(encoded), encoded=encoded,
                   refs=item.refs, key=item.key)


def version_of(resources: Iterable[Resource]) -> str:
    """Content hash of a set of resources, independent of their order."""
    h = hashlib.blake2b(digest_size=8)
    for name, res_hash in sorted((r.name, r.hash) for r in resources):
        h.update(name.encode())
        h.update(b"\0")
        h.update(res_hash.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Diff:
    """What moved from one set of resources of a type to another, by name."""

    changed: frozenset[str]  # in the new set and absent from the old one, or there with another hash
    removed: frozenset[str]  # in the old set only


NO_DIFF = Diff(frozenset(), frozenset())
_MAX_DIFFS = 8  # diffs memoized per ResourceMap: streams hold the previous snapshot or two, rarely more


class ResourceMap(dict[str, Resource]):
    """One type's resources in a snapshot, never changed once built, with facts every stream shares.

    Streams of a group hold the very mapping the snapshot has as what they were sent and ACKed when they are
    in sync with it, instead of copies (issue 12: "a stream's state should share the snapshot's structures"),
    so it must never change: the mutators raise. The facts are computed once per snapshot and type, for all
    streams: the name set, the names the resources refer to, and the diff from an earlier mapping.
    """

    __slots__ = ("__weakref__", "_bodies", "_diffs", "_like", "_names", "_ordered", "_ordered_names", "_refs")

    def __init__(self, items: Mapping[str, Resource], *, like: ResourceMap | None = None) -> None:
        super().__init__(items)
        # Facts are computed on first use: a group no stream asks for costs no more than its dictionary.
        self._names: frozenset[str] | None = None
        # The previous snapshot's mapping, weakly: an equal name set is then the same object, so a stream's
        # subscription naming every resource is recognised by identity (protocol_core._names_every).
        self._like = weakref.ref(like) if like is not None else None
        self._ordered: tuple[Resource, ...] | None = None
        self._ordered_names: tuple[str, ...] | None = None
        self._refs: dict[TypeUrl, frozenset[str]] | None = None
        self._diffs: dict[int, tuple[weakref.ref[ResourceMap], Diff]] = {}
        self._bodies: dict[str, bytes] | None = None

    @property
    def names(self) -> frozenset[str]:
        if self._names is None:
            like = self._like() if self._like is not None else None
            if like is not None and like._names is not None and like.keys() == self.keys():
                self._names = like._names
            else:
                self._names = frozenset(self)
            self._like = None
        return self._names

    @property
    def ordered(self) -> tuple[Resource, ...]:
        """The resources sorted by name: a full-state response, one tuple for every stream."""
        if self._ordered is None:
            self._ordered = tuple(self[n] for n in sorted(self))
        return self._ordered

    @property
    def ordered_names(self) -> tuple[str, ...]:
        """The names of `ordered`, one tuple for every stream that records what it was sent (issue 12: a
        per-stream copy of 1000 names is 8 KiB held per idle stream and type)."""
        if self._ordered_names is None:
            self._ordered_names = tuple(r.name for r in self.ordered)
        return self._ordered_names

    def _frozen(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a snapshot's ResourceMap is shared by streams and never changes; copy it instead")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = _frozen

    def __reduce__(self) -> tuple[Any, ...]:
        return (ResourceMap, (dict(self),))

    def refs(self, ref_type: TypeUrl) -> frozenset[str]:
        """Names of `ref_type` that these resources refer to."""
        if self._refs is None:
            by_type: dict[TypeUrl, set[str]] = {}
            for resource in self.values():
                for t, name in resource.refs:
                    by_type.setdefault(t, set()).add(name)
            self._refs = {t: frozenset(names) for t, names in by_type.items()}
        return self._refs.get(ref_type, frozenset())

    def body(self, encoding: str, make: Callable[[tuple[Resource, ...]], bytes]) -> bytes:
        """The response body carrying `ordered` in `encoding` ("sotw", "delta"), made once for every
        stream that is sent the whole set (server/encode.py)."""
        if self._bodies is None:
            self._bodies = {}
        made = self._bodies.get(encoding)
        if made is None:
            made = self._bodies[encoding] = make(self.ordered)
        return made

    def whole(self, resources: tuple[Resource, ...]) -> bool:
        """Are `resources` exactly `ordered` (compared by identity first, in C)?"""
        return len(resources) == len(self) and (resources is self.ordered or resources == self.ordered)

    def every(self, names: AbstractSet[str]) -> bool:
        """Does `names`, a subset of these names, hold every one of them? A length check (issue 12)."""
        return bool(names) and (names is self._names or len(names) == len(self))

    def diff_from(self, old: Mapping[str, Resource]) -> Diff:
        if old is self:
            return NO_DIFF
        if not old:
            return Diff(self.names, frozenset())
        hit = self._diffs.get(id(old))
        if hit is not None and hit[0]() is old:
            return hit[1]
        result = _diff(old, self)
        if isinstance(old, ResourceMap):
            # Held weakly: a snapshot must not keep every earlier one alive through its memo.
            if len(self._diffs) >= _MAX_DIFFS:
                self._diffs.clear()
            self._diffs[id(old)] = (weakref.ref(old), result)
        return result


def _diff(old: Mapping[str, Resource], new: Mapping[str, Resource]) -> Diff:
    changed = frozenset(n for n, r in new.items()
                        if (o := old.get(n)) is None or (o is not r and o.hash != r.hash))
    removed = frozenset(n for n in old if n not in new)
    return Diff(changed, removed) if changed or removed else NO_DIFF


def diff(old: Mapping[str, Resource], new: Mapping[str, Resource]) -> Diff:
    """Names whose resource is new or different in `new`, and names gone; memoized when `new` is a snapshot's
    ResourceMap, so the streams of a group compute one diff per snapshot, not one each (issue 12)."""
    if isinstance(new, ResourceMap):
        return new.diff_from(old)
    return _diff(old, new) if old is not new else NO_DIFF


def names_of(resources: Mapping[str, Resource]) -> frozenset[str]:
    return resources.names if isinstance(resources, ResourceMap) else frozenset(resources)


def refs_of(resources: Mapping[str, Resource], ref_type: TypeUrl) -> frozenset[str]:
    """Names of `ref_type` the resources refer to; shared by all streams for a snapshot's mapping."""
    if isinstance(resources, ResourceMap):
        return resources.refs(ref_type)
    return frozenset(name for r in resources.values() for t, name in r.refs if t == ref_type)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Resources by type and name for one node group, with a version per type."""

    group: str
    resources: Mapping[TypeUrl, Mapping[str, Resource]]
    versions: Mapping[TypeUrl, str]

    def __post_init__(self) -> None:
        # Every type's mapping is a ResourceMap, whoever built the snapshot (make_snapshot, quarantine).
        if not all(isinstance(m, ResourceMap) for m in self.resources.values()):
            wrapped = {t: m if isinstance(m, ResourceMap) else ResourceMap(m)
                       for t, m in self.resources.items()}
            object.__setattr__(self, "resources", wrapped)

    def get(self, type_url: TypeUrl, name: str) -> Resource | None:
        return self.resources.get(type_url, {}).get(name)

    def of_type(self, type_url: TypeUrl) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})

    def version(self, type_url: TypeUrl) -> str:
        return self.versions.get(type_url, "")

    def without(self, type_url: TypeUrl) -> Snapshot:
        """This snapshot with no resource of `type_url`: what a stream that may not have them sees (workload
        secrets on an unauthenticated stream, docs/protocol.md R47). Versions stay, so logs still match."""
        if not self.resources.get(type_url):
            return self
        return Snapshot(group=self.group, resources={**self.resources, type_url: {}}, versions=self.versions)

    @property
    def key(self) -> str:
        """One string naming the whole content, for logs and `xds status`."""
        return digest("|".join(f"{t}={v}" for t, v in sorted(self.versions.items())).encode())


def make_snapshot(group: str, items: Iterable[Translated | Deferred],
                  previous: Snapshot | None = None, *, donor: Snapshot | None = None) -> Snapshot:
    """Serialize, hash and check `items`; raise InconsistentSnapshotError rather than publish a bad one.

    Resource objects whose bytes are unchanged since `previous` are reused, so memory for unchanged
    resources is shared between consecutive snapshots. An item whose key equals the previous resource's is
    neither serialized nor, for a Deferred, translated: `previous` is the only memory of earlier builds, so
    what a build can reuse is bounded by what the current snapshot holds (issue 7).

    `donor` is another group's current snapshot: a resource it holds under an equal key is reused too, so
    node groups that receive the same clusters share one copy of each instead of one per group (a group
    costs its own dictionaries, not its own resources; issue 7).

    A type whose resources are all the very objects `previous` holds, under the same names, keeps
    `previous`'s mapping and version: equal content, equal version (docs/protocol.md R14), without sorting
    and hashing the type again; only the types that changed cost their size (issue 12).
    """
    by_type: dict[TypeUrl, dict[str, Resource]] = {t: {} for t in PUSH_ORDER}
    # Types with a resource that is not the very object `previous` holds under its name. Any other type's
    # mapping and version are the previous ones (issue 12: a change costs what changed).
    fresh: set[TypeUrl] = set()
    empty: Mapping[str, Resource] = {}
    current: TypeUrl | None = None
    bucket: dict[str, Resource] = {}
    old_map = shared_map = empty
    for item in items:
        if item.type_url != current:
            # Items come grouped by type (plan() order); the maps are looked up once per run of a type.
            if item.type_url not in by_type:
                raise InconsistentSnapshotError(f"unknown resource type {item.type_url!r} for {item.name!r}")
            current = item.type_url
            bucket = by_type[current]
            old_map = previous.of_type(current) if previous is not None else empty
            shared_map = donor.of_type(current) if donor is not None else empty
        if item.name in bucket:
            # Envoy NACKs a response that names a resource twice (docs/protocol.md R19, case P8).
            raise InconsistentSnapshotError(
                f"two {short_name(item.type_url)} resources are both named {item.name!r}")
        old = old_map.get(item.name)
        if old is not None and item.key is not None and old.key == item.key and old.refs == item.refs:
            resource = old  # translated from an equal spec: the same bytes, without serializing again
        elif ((shared := shared_map.get(item.name)) is not None and item.key is not None
              and shared.key == item.key and shared.refs == item.refs):
            resource = shared  # the same spec in another group: share its resource
        else:
            resource = Resource.of(item)
            if old is not None and old.hash == resource.hash and old.refs == resource.refs:
                resource = old
        if resource is not old:
            fresh.add(current)
        bucket[item.name] = resource
    problems = [
        f"{short_name(res.type_url)} {res.name!r} refers to missing {short_name(ref_type)} {ref_name!r}"
        for resources in by_type.values()
        for res in resources.values()
        for ref_type, ref_name in res.refs
        if ref_name not in by_type.get(ref_type, {})
    ]
    if problems:
        raise InconsistentSnapshotError("; ".join(sorted(problems)))
    resources: dict[TypeUrl, ResourceMap] = {}
    versions: dict[TypeUrl, str] = {}
    for t, res in by_type.items():
        before = _previous_map(previous, t)
        if (res and previous is not None and before is not None and t not in fresh
                and len(before) == len(res) and t in previous.versions):
            # The same objects under the same names: the same content, so the same version (R14) and the
            # very mapping, which streams holding it then compare by identity (no diff, no rebinding).
            resources[t], versions[t] = before, previous.versions[t]
        else:
            resources[t] = ResourceMap(res, like=before)
            versions[t] = version_of(res.values())
    return Snapshot(group=group, resources=resources, versions=versions)


def _previous_map(previous: Snapshot | None, type_url: TypeUrl) -> ResourceMap | None:
    if previous is None:
        return None
    resources = previous.of_type(type_url)
    return resources if isinstance(resources, ResourceMap) else None


def empty_endpoints(type_url: TypeUrl, name: str) -> Resource | None:
    """Stand-in for a requested resource the snapshot lacks: an empty ClusterLoadAssignment for EDS.

    Envoy keeps a cluster warming until it receives the cluster's assignment, so an EDS name the server
    does not know (a cluster left over from an earlier server, F4) is answered with an explicit empty one
    (docs/protocol.md R22). Other types get nothing: the client's own "does not exist" timeout applies.
    """
    if type_url != ENDPOINT:
        return None
    from envoy.config.endpoint.v3 import endpoint_pb2

    return Resource.of(Translated(type_url=ENDPOINT, name=name,
                                  message=endpoint_pb2.ClusterLoadAssignment(cluster_name=name)))
