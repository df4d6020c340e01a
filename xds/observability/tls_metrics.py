"""Prometheus series of the xDS port's mTLS (issue 9, item 1), on the app's Metrics registry.

Kept apart from metrics.py so the transport's series live with the feature. No series carries a
certificate's content or a key; labels are fixed enums.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from xds.server.identity import DenyReason
from xds.server.tls_material import TlsMaterial, TlsMaterialError


class TlsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._denied = Counter("xds_identity_denied_total",
                               "Streams ended with PERMISSION_DENIED: the client certificate may not claim "
                               "the node id or node group (docs/security.md).", ["reason"],
                               registry=registry)
        self._reloads = Counter("xds_tls_reloads_total",
                                "TLS file sets of the xDS port read, at startup and after each change: ok "
                                "(now served) or error (rejected; the last good material keeps serving).",
                                ["result"], registry=registry)
        self._rejected = Gauge("xds_tls_material_rejected",
                               "1 while the TLS files on disk are rejected and older material is served.",
                               registry=registry)
        self._not_after = Gauge("xds_tls_server_cert_not_after_timestamp_seconds",
                                "Expiry (Unix time) of the server certificate the xDS port presents.",
                                registry=registry)
        for reason in DenyReason:
            self._denied.labels(reason.value)
        for result in ("ok", "error"):
            self._reloads.labels(result)

    def identity_denied(self, reason: DenyReason) -> None:
        self._denied.labels(reason.value).inc()

    def on_change(self, change: TlsMaterial | TlsMaterialError) -> None:
        """Pass as `TlsReloader(on_change=...)`: the first load and each accepted or rejected reload."""
        if isinstance(change, TlsMaterialError):
            self._reloads.labels("error").inc()
            self._rejected.set(1)
            return
        self._reloads.labels("ok").inc()
        self._rejected.set(0)
        self._not_after.set(change.not_after.timestamp())
