"""PolicyDocuments: the last valid version of each policy document a registry holds, and their merge
(issue 13 section 1). Pure: no I/O, no clock.

A registry that carries policies (Consul KV keys, Kubernetes TrafficPolicy objects, ...) validates its
documents one by one (docs/protocol.md R38): a document that becomes invalid keeps serving its previous
valid version, so one bad edit cannot take down the listeners of the others; the valid versions are merged
in key order with `merge_policies`, and when the merge fails (two documents claim one listener or port)
the previous merged policy keeps serving. Problems are reported once: `fresh()` returns only those not
returned before, while `errors()` lists every one that still stands (re-said after each publish).

How a document is read and how a problem is worded stay with the registry (kv.py, policies.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from xds.policy.errors import PolicyError
from xds.policy.schema import Policy, merge_policies

K = TypeVar("K", bound=Hashable)


class PolicyDocuments(Generic[K]):
    """Documents by key `K` (sortable): last valid Policy, current problem, and the merged Policy."""

    def __init__(self, *, origin: str) -> None:
        self._origin = origin
        self._valid: dict[K, Policy] = {}  # last valid policy per document
        self._errors: dict[K, str] = {}  # current problem per document
        self._policy = Policy(origin=origin)
        self._reported: set[str] = set()

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def policy(self) -> Policy:
        """The merged policy of the last valid versions (empty before any document was read)."""
        return self._policy

    def valid(self) -> dict[K, Policy]:
        return dict(self._valid)

    def has_valid(self, key: K) -> bool:
        return key in self._valid

    def valid_version(self, key: K) -> Policy | None:
        return self._valid.get(key)

    def accept(self, key: K, policy: Policy) -> None:
        """Document `key` is valid: this version serves."""
        self._valid[key] = policy
        self._errors.pop(key, None)

    def reject(self, key: K, problem: str) -> None:
        """Document `key` is invalid; its previous valid version, if any, keeps serving."""
        self._errors[key] = problem

    def error(self, key: K) -> str:
        return self._errors.get(key, "")

    def remove(self, key: K) -> None:
        self._valid.pop(key, None)
        self._errors.pop(key, None)

    def errors(self) -> tuple[str, ...]:
        """The problem of every invalid document, in key order."""
        return tuple(self._errors[k] for k in sorted(self._errors))  # type: ignore[type-var]

    def merge(self) -> PolicyError | None:
        """Merge the valid versions in key order; on a conflict the previous merged policy stays and the
        error is returned."""
        valid = [self._valid[k] for k in sorted(self._valid)]  # type: ignore[type-var]
        try:
            merged = merge_policies(valid) if valid else Policy()
        except PolicyError as e:
            return e
        self._policy = dataclasses.replace(merged, origin=self._origin)
        return None

    def fresh(self, problems: Iterable[str]) -> tuple[str, ...]:
        """Of `problems` (every one that stands now), those not returned by the previous call."""
        current = tuple(dict.fromkeys(problems))
        new = tuple(p for p in current if p not in self._reported)
        self._reported = set(current)
        return new

