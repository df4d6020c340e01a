"""Policies stored in Consul KV: one policy document per key under a prefix. Pure: no I/O, no clock.

Each key under the prefix (`--consul-kv-prefix`, e.g. `xds/`) holds one YAML or JSON document in the
policy-only schema of docs/config.md (service settings and listeners, no endpoints), parsed with the same
loader as files so that problems name the key and line: `consul-kv:xds/web:7:5: ...`. Keys are validated
one by one: a key that becomes invalid keeps serving its previous valid version, so one bad `consul kv put`
cannot take down the listeners of the others (docs/protocol.md R38). The valid documents are merged in key
order with `merge_policies`; a conflict between keys (the same listener name twice, one port claimed twice) is
reported and the previous merged policy stays.

Keys ending in `.status` are not policies: the control plane writes them beside a policy key to report
what proxies rejected of it (`STATUS_SUFFIX`, issue 11 item 4), so they are skipped here.

Consul returns values base64-encoded in its KV JSON (api-docs/kv, "Read Key"), and a key stored with an
empty value as null; folder placeholders end with '/'. Both carry no document and are skipped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xds.policy.errors import PolicyError
from xds.policy.load import decode_document, parse_policy
from xds.policy.schema import Policy
from xds.sources.consul.parse import ConsulParseError
from xds.sources.registry.documents import PolicyDocuments

STATUS_SUFFIX = ".status"


def status_key(key: str) -> str:
    """Where the status of policy key `key` is written: beside it (`xds/web` -> `xds/web.status`)."""
    return key + STATUS_SUFFIX


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes | None  # decoded; None for a key stored without a value


def parse_kv_entries(body: object) -> tuple[KvEntry, ...]:
    """Entries of a `/v1/kv/<prefix>?recurse` answer (a JSON list), values base64-decoded.

    A value that is not valid base64 is kept as the raw text so the policy parser reports it with its key.
    """
    if body is None:
        return ()
    if not isinstance(body, list):
        raise ConsulParseError(f"expected a JSON list of KV entries, got {type(body).__name__}")
    entries: list[KvEntry] = []
    for item in body:
        fields = item if isinstance(item, Mapping) else {}
        key = fields.get("Key")
        if not isinstance(key, str) or not key:
            continue
        raw = fields.get("Value")
        value: bytes | None = None
        if isinstance(raw, str):
            try:
                value = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                value = raw.encode("utf-8", "replace")
        entries.append(KvEntry(key, value))
    return tuple(sorted(entries, key=lambda e: e.key))


@dataclass(frozen=True, slots=True)
class KvOutcome:
    changed: bool  # the merged policy differs from the one before, or a problem no longer stands
    problems: tuple[str, ...]  # problems not reported before: a key rejected, or the merge refused


class KvPolicies:
    """The policy documents under one prefix, and their merge: the last good version of each
    (sources/registry/documents.py)."""

    def __init__(self, *, prefix: str) -> None:
        self._prefix = prefix
        self._raw: dict[str, bytes] = {}  # last value seen per key, valid or not
        self._documents: PolicyDocuments[str] = PolicyDocuments(origin=self.origin)
        self._merge_error = ""

    @property
    def origin(self) -> str:
        return f"consul-kv:{self._prefix}"

    @property
    def policy(self) -> Policy:
        """The merged policy of the last valid versions (empty before any key was read)."""
        return self._documents.policy

    def problems(self) -> tuple[str, ...]:
        """Every problem that still stands, for re-reporting."""
        return self._documents.errors() + ((self._merge_error,) if self._merge_error else ())

    def valid_policies(self) -> dict[str, Policy]:
        """The last valid policy of each key, for finding which key produced a rejected resource."""
        return self._documents.valid()

    def update(self, entries: Sequence[KvEntry], *, keep_removed: bool = False) -> KvOutcome:
        """Take a full listing of the prefix. `keep_removed` holds the last valid version of keys that are
        missing from it (used during the watcher's resync grace, when an empty KV store is more likely a
        restarted Consul than an operator deleting every policy)."""
        documents = self._documents
        problems_before = self.problems()
        present = {e.key for e in entries if e.value is not None and not e.key.endswith("/")
                   and not e.key.endswith(STATUS_SUFFIX)}
        for entry in entries:
            if entry.key not in present or entry.value is None:
                continue
            if self._raw.get(entry.key) == entry.value:
                continue
            self._raw[entry.key] = entry.value
            where = f"consul-kv:{entry.key}"
            try:
                documents.accept(entry.key, parse_policy(decode_document(entry.value, where=where),
                                                         where=where))
            except PolicyError as e:
                # The key's previous valid version, if any, keeps serving.
                documents.reject(entry.key, f"{e}\n(the previous valid version of {entry.key!r} keeps "
                                            "serving)" if documents.has_valid(entry.key) else str(e))
        if not keep_removed:
            for key in set(self._raw) - present:
                del self._raw[key]
                documents.remove(key)
        before = documents.policy
        error = documents.merge()
        self._merge_error = ("" if error is None
                             else f"{error}\n(the previous policy from {self.origin} keeps serving)")
        # A problem that went away is a change too: only a publish clears the source's error (issue 14
        # item 6: deleting a never-valid key changes no policy, yet must clear xds_source_stale at once).
        # A new problem is not; it is reported below, and the policy it came with is not served.
        resolved = not set(problems_before).issubset(self.problems())
        changed = documents.policy != before or resolved
        return KvOutcome(changed=changed, problems=documents.fresh(self.problems()))
