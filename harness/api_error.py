"""The error a test server's HTTP API helper raises on an unexpected status (Consul, Eureka): one class for
the shape every such helper had written (issue 13 clean-up); each helper subclasses it so a test can still
catch its own server's errors alone."""

from __future__ import annotations

# Enough of a body to see the server's reason in a failed test, not a whole HTML error page.
_MAX_BODY_SHOWN = 300


class ApiError(RuntimeError):
    """`method path` got `status`; `body` is the whole answer, the message shows its start."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:_MAX_BODY_SHOWN]}")
        self.status = status
        self.body = body
