"""Status keys of Consul KV policies: what proxies rejected of each key (issue 11 item 4, closed NACK loop).

For each policy key that produced a resource a proxy rejected, the source writes a JSON document to the key
beside it (`xds/web` -> `xds/web.status`, kv.py `status_key`) and deletes it once nothing the key produced
is quarantined, so an absent status key means "accepted by every proxy" (docs/consul.md "Status keys").
Pure: `wanted_statuses` decides, the watcher writes; the token needs key:write on those keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from xds.cache.quarantine import Rejection
from xds.policy.schema import Policy
from xds.sources.consul.kv import status_key
from xds.sources.rejections import describe, produced_by


def wanted_statuses(policies: Mapping[str, Policy], rejections: Sequence[Rejection]) -> dict[str, bytes]:
    """Status key -> document, for every policy key that produced a quarantined resource."""
    out: dict[str, bytes] = {}
    for key in sorted(policies):
        mine = [r for r in rejections if produced_by(policies[key], r)]
        if not mine:
            continue
        document = {
            "programmed": False,
            "message": describe(mine),
            "rejected": [{"type": r.short_type, "name": r.name, "group": r.group,
                          "node_ids": list(r.node_ids), "message": r.message,
                          "serving": r.serving, "nacked_at": r.nacked_at}
                         for r in mine],
        }
        out[status_key(key)] = json.dumps(document, sort_keys=True).encode()
    return out
