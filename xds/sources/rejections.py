"""Which policy document produced a quarantined resource, for status reporting (issue 11 item 4).

Sources that carry policies (Kubernetes TrafficPolicies, Consul KV keys) implement `RejectionSink`: the app
hands them every quarantined resource after each change, and each marks the objects that produced one
(docs/operations.md "Quarantined resources"). Pure: no I/O.

Resource names follow the translator's naming (xds/policy/apply.py): a listener and its route
configuration are named after the policy listener, a cluster after its service (`web`) or the service and a
subset (`web|version=v1`), and an endpoint assignment after its cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from xds.cache.quarantine import SERVING_WITHHELD, Rejection
from xds.policy.schema import Policy
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE


@runtime_checkable
class RejectionSink(Protocol):
    def report_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Every resource quarantined now (an empty sequence clears them). Called on the event loop."""


def produced_by(policy: Policy, rejection: Rejection) -> bool:
    """Whether `policy` (one object's policy) declares what `rejection` names."""
    if rejection.type_url in (LISTENER, ROUTE):
        return any(listener.name == rejection.name for listener in policy.listeners)
    if rejection.type_url in (CLUSTER, ENDPOINT):
        service = rejection.name.split("|", 1)[0]
        return (any(s.name == service for s in policy.services)
                or any(b.service == service for listener in policy.listeners for route in listener.routes
                       for b in route.backends))
    return False


def describe(rejections: Sequence[Rejection]) -> str:
    """One human line per rejection: what, by which nodes, Envoy's message, and what is served instead."""
    lines = []
    for r in rejections:
        instead = ("its last accepted version keeps serving" if r.serving != SERVING_WITHHELD
                   else "it is withheld (no version of it was ever accepted)")
        lines.append(f"{r.short_type} {r.name!r} rejected by {', '.join(r.node_ids)} (group {r.group}): "
                     f"{r.message.strip()}; {instead}")
    return "\n".join(lines)
