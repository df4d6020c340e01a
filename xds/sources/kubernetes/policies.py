"""TrafficPolicy objects (xds.dev/v1alpha1) -> one Policy, and the status conditions that report on each.

Pure: no I/O; the clock is passed in. The watcher feeds every TrafficPolicy it knows to `update()` and
writes the `status_patches()` back through the status subresource.

Each object's `spec` is one policy-only document, the schema of files and Consul KV (docs/config.md),
validated by the same loader (`policy_from_data`); deploy/crd-trafficpolicy.yaml publishes that schema as
the CRD's OpenAPI schema (policy/openapi.py), so most mistakes are refused by `kubectl apply` already, and
what OpenAPI cannot express (weights summing to 100, a backend naming an undeclared service, two listeners
on one port) is caught here. Problems name the object and the path inside `spec`:
`trafficpolicy:shop/edge: listeners[0].routes[0].backends: backend weights ... must sum to 100`.

Like the Consul KV keys (sources/consul/kv.py), objects are validated one by one (docs/protocol.md R38):

- a valid object is condition `Accepted=True` (reason Accepted) and serves;
- an invalid one is `Accepted=False` (reason Invalid, the loader's message) and its previous valid version
  keeps serving; one that was never valid contributes nothing;
- the valid versions are merged in (namespace, name) order with `merge_policies`; a conflict between
  objects (one listener name twice, one port claimed twice) marks every object involved Invalid with the
  conflict, and the previous merged policy keeps serving.

A second condition, `Programmed`, says whether the proxies accepted what the object produced (issue 11
item 4, closed NACK loop): `Programmed=False` (reason Rejected) names each resource a proxy rejected, the
node ids and Envoy's message, while the last accepted version of that resource keeps serving; it turns
`Programmed=True` once nothing the object produced is quarantined. Objects never rejected carry no
Programmed condition. Like Accepted, it is judged from shared state, but what proxies reject can differ per
replica (each replica sees only its own proxies).

Status writes (Kubernetes API conventions, "Typical status properties"): one condition of type Accepted,
with `observedGeneration` (the generation that was judged), `reason`, `message` and `lastTransitionTime`
(kept while the status does not change). A patch is produced only when the wanted condition differs from the
one the object already carries, so the control plane's own status write, seen again through the watch,
never causes another write; two replicas judging the same objects want the same conditions, so they do
not fight either.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from xds.cache.quarantine import Rejection
from xds.policy.errors import PolicyError
from xds.policy.load import policy_from_data
from xds.policy.schema import Policy
from xds.sources.registry.documents import PolicyDocuments
from xds.sources.rejections import describe, produced_by

CONDITION_ACCEPTED = "Accepted"
CONDITION_PROGRAMMED = "Programmed"
REASON_PROGRAMMED = "Programmed"
REASON_REJECTED = "Rejected"
REASON_ACCEPTED = "Accepted"
REASON_INVALID = "Invalid"
# metav1.Condition limits its message to 32768 characters.
MAX_MESSAGE = 32768
_ORIGIN_PREFIX = "trafficpolicy:"

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Condition:
    """A metav1.Condition of a TrafficPolicy."""

    type: str
    status: str  # "True" | "False"
    _: KW_ONLY
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str = ""  # RFC 3339, UTC

    def same_state(self, other: Condition) -> bool:
        """Equal but for lastTransitionTime: whether a write would change anything."""
        return (self.type, self.status, self.reason, self.message, self.observed_generation) == \
            (other.type, other.status, other.reason, other.message, other.observed_generation)

    def to_json(self) -> dict[str, object]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message,
                "observedGeneration": self.observed_generation,
                "lastTransitionTime": self.last_transition_time}


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """What this source keeps of one TrafficPolicy object."""

    namespace: str
    name: str
    _: KW_ONLY
    generation: int
    spec: Any  # the raw `spec`, validated by the policy loader
    conditions: tuple[Condition, ...] = ()  # as last seen on the object

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def accepted(self) -> Condition | None:
        return next((c for c in self.conditions if c.type == CONDITION_ACCEPTED), None)

    @property
    def programmed(self) -> Condition | None:
        return next((c for c in self.conditions if c.type == CONDITION_PROGRAMMED), None)


@dataclass(frozen=True, slots=True)
class StatusPatch:
    namespace: str
    name: str
    _: KW_ONLY
    condition: Condition
    programmed: Condition | None = None  # the Programmed condition, once the object has one

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def body(self) -> dict[str, object]:
        """The `status` to merge-patch: the whole conditions list (this control plane owns it)."""
        conditions = [self.condition] + ([self.programmed] if self.programmed is not None else [])
        return {"conditions": [c.to_json() for c in conditions]}

    def same_state(self, other: StatusPatch) -> bool:
        return self.condition.same_state(other.condition) and _same(self.programmed, other.programmed)

    def shown_by(self, obj: PolicyObject) -> bool:
        """Whether `obj`'s status already says what this patch writes."""
        return (obj.accepted is not None and obj.accepted.same_state(self.condition)
                and _same(obj.programmed, self.programmed))


def _same(a: Condition | None, b: Condition | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.same_state(b))


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    changed: bool  # the merged policy differs from the one before
    problems: tuple[str, ...]  # problems not reported before (for the sink's error report)


class TrafficPolicyParseError(ValueError):
    pass


def origin(namespace: str, name: str) -> str:
    """How problems and conflicts name one object: `trafficpolicy:<namespace>/<name>`."""
    return f"{_ORIGIN_PREFIX}{namespace}/{name}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_traffic_policy(obj: Mapping[str, Any]) -> PolicyObject:
    """A TrafficPolicy object as the API returns it. TrafficPolicyParseError without a name or namespace."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = _text(metadata.get("namespace")), _text(metadata.get("name"))
    if not namespace or not name:
        raise TrafficPolicyParseError("a TrafficPolicy without metadata.namespace and metadata.name")
    status = obj.get("status")
    raw_conditions = status.get("conditions") if isinstance(status, Mapping) else None
    conditions = tuple(
        Condition(_text(c.get("type")), _text(c.get("status")), reason=_text(c.get("reason")),
                  message=_text(c.get("message")), observed_generation=_int(c.get("observedGeneration")),
                  last_transition_time=_text(c.get("lastTransitionTime")))
        for c in (raw_conditions if isinstance(raw_conditions, list) else ()) if isinstance(c, Mapping))
    return PolicyObject(namespace, name, generation=_int(metadata.get("generation")), spec=obj.get("spec"),
                        conditions=conditions)


def rfc3339(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


@dataclass(slots=True)
class _Judgement:
    spec: Any  # the spec this judgement is about
    _: KW_ONLY
    generation: int
    valid_generation: int | None  # the generation of the version that serves, if any


class TrafficPolicies:
    """Every TrafficPolicy, the last valid version of each and their merge (sources/registry/documents.py),
    and the wanted conditions."""

    def __init__(self, *, source: str, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock
        self._objects: dict[Key, PolicyObject] = {}
        self._documents: PolicyDocuments[Key] = PolicyDocuments(origin=self.origin)
        self._judged: dict[Key, _Judgement] = {}
        self._conflicts: dict[Key, str] = {}  # objects in a merge conflict -> the conflict
        self._blocked = ""  # set while a conflict holds the previous merged policy
        self._rejections: tuple[Rejection, ...] = ()

    def set_rejections(self, rejections: Sequence[Rejection]) -> None:
        """The resources proxies rejected now (closed NACK loop): the Programmed conditions follow them."""
        self._rejections = tuple(rejections)

    @property
    def origin(self) -> str:
        return f"TrafficPolicies of {self._source}"

    @property
    def policy(self) -> Policy:
        """The merged policy of the last valid versions (empty before any object was read)."""
        return self._documents.policy

    def problems(self) -> tuple[str, ...]:
        """Every problem that still stands, for re-reporting."""
        out = list(self._documents.errors())
        out += [self._conflicts[k] for k in sorted(self._conflicts)]
        return tuple(dict.fromkeys(out))

    def update(self, objects: Mapping[Key, PolicyObject], *, keep_removed: bool = False) -> PolicyOutcome:
        """Take the full set of objects. `keep_removed` holds the last valid version of objects missing from
        it (the watcher's resync grace after an outage)."""
        for key, obj in objects.items():
            self._objects[key] = obj
            judged = self._judged.get(key)
            if judged is not None and judged.spec == obj.spec:
                judged.generation = obj.generation
                continue
            where = origin(*key)
            try:
                policy = policy_from_data(obj.spec, where=where)
            except PolicyError as e:
                previous = self._judged.get(key)
                valid_generation = previous.valid_generation if previous is not None else None
                self._documents.reject(key, str(e))
                self._judged[key] = _Judgement(obj.spec, generation=obj.generation,
                                               valid_generation=valid_generation)
            else:
                self._documents.accept(key, dataclasses.replace(policy, origin=where))
                self._judged[key] = _Judgement(obj.spec, generation=obj.generation,
                                               valid_generation=obj.generation)
        if not keep_removed:
            for key in set(self._objects) - set(objects):
                del self._objects[key]
                self._documents.remove(key)
                self._judged.pop(key, None)
        before = self._documents.policy
        self._merge()
        return PolicyOutcome(changed=self._documents.policy != before,
                             problems=self._documents.fresh(self.problems()))

    def _merge(self) -> None:
        e = self._documents.merge()
        if e is not None:
            involved = _involved(e, {origin(*k): k for k in self._documents.valid()})
            # No replica-specific text (such as the source's name): replicas must want identical conditions.
            text = f"{e}\n(conflicting TrafficPolicies; the previous merged policy keeps serving)"
            self._conflicts = dict.fromkeys(involved, text)
            self._blocked = ", ".join(f"{ns}/{name}" for ns, name in sorted(involved))
            return
        self._conflicts = {}
        self._blocked = ""

    def wanted(self, key: Key) -> Condition | None:
        """The condition object `key` should carry now (lastTransitionTime not yet filled in)."""
        obj = self._objects.get(key)
        judged = self._judged.get(key)
        if obj is None or judged is None:
            return None
        if error := self._documents.error(key):
            message = error
            if judged.valid_generation is not None:
                message += (f"\n(the previous valid version, generation {judged.valid_generation}, keeps "
                            "serving)")
            return _condition(False, REASON_INVALID, message=message, generation=obj.generation)
        if key in self._conflicts:
            return _condition(False, REASON_INVALID, message=self._conflicts[key], generation=obj.generation)
        if self._blocked:
            return _condition(True, REASON_ACCEPTED,
                              message=f"Valid, but not served yet: TrafficPolicies {self._blocked} conflict, "
                                      "so the previous policy keeps serving until that is fixed",
                              generation=obj.generation)
        return _condition(True, REASON_ACCEPTED, message="Valid and served", generation=obj.generation)

    def wanted_programmed(self, key: Key) -> Condition | None:
        """The Programmed condition `key` should carry now: False while a resource it produced is
        quarantined, True after one was (None for an object that was never rejected)."""
        obj = self._objects.get(key)
        valid = self._documents.valid_version(key)
        if obj is None:
            return None
        mine = [r for r in self._rejections if valid is not None and produced_by(valid, r)]
        if mine:
            return _programmed(False, REASON_REJECTED, generation=obj.generation,
                               message="Rejected by proxies:\n" + describe(mine))
        if obj.programmed is not None:
            return _programmed(True, REASON_PROGRAMMED, generation=obj.generation,
                               message="Accepted by the proxies it was sent to")
        return None

    def status_patches(self) -> tuple[StatusPatch, ...]:
        """Patches for every object whose Accepted or Programmed condition differs from the wanted one, in
        key order."""
        patches: list[StatusPatch] = []
        for key in sorted(self._objects):
            obj = self._objects[key]
            want = self.wanted(key)
            if want is None:
                continue
            programmed = self.wanted_programmed(key)
            if programmed is not None:
                programmed = dataclasses.replace(
                    programmed, last_transition_time=_since(obj.programmed, programmed, self._clock))
            patch = StatusPatch(obj.namespace, obj.name,
                                condition=dataclasses.replace(
                                    want, last_transition_time=_since(obj.accepted, want, self._clock)),
                                programmed=programmed)
            if patch.shown_by(obj):
                continue
            patches.append(patch)
        return tuple(patches)


def _since(have: Condition | None, want: Condition, clock: Callable[[], float]) -> str:
    """lastTransitionTime: kept while the status stays, now when it changes."""
    return (have.last_transition_time if have is not None and have.status == want.status
            and have.last_transition_time else rfc3339(clock()))


def _programmed(programmed: bool, reason: str, *, message: str, generation: int) -> Condition:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return Condition(CONDITION_PROGRAMMED, "True" if programmed else "False", reason=reason, message=message,
                     observed_generation=generation)


def _condition(accepted: bool, reason: str, *, message: str, generation: int) -> Condition:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return Condition(CONDITION_ACCEPTED, "True" if accepted else "False", reason=reason, message=message,
                     observed_generation=generation)


def _involved(error: PolicyError, origins: Mapping[str, Key]) -> set[Key]:
    """The objects a merge conflict names: each problem is located at the later object (its `where`) and
    names the earlier one in its message (policy/schema.py `merge_policies`)."""
    involved: set[Key] = set()
    for problem in error.problems:
        if problem.where in origins:
            involved.add(origins[problem.where])
        for text, key in origins.items():
            # Origins contain no spaces; match whole words so "ns/web" does not match inside "ns/web2".
            if re.search(re.escape(text) + r"(?=\s|$|[),.;:])", problem.message):
                involved.add(key)
    return involved
