"""The HTTP pieces the registry clients share (Consul, Eureka, Kubernetes; issue 13 clean-up: each client had
written them once): the TLS context, the aiohttp session, what an unreachable server is called, and the
part of an error body that may go into a message.

Each client keeps its own error classes, hints and status handling: only the wording of "could not reach
the server" and the redaction of bodies are the same everywhere, so that an operator reads one vocabulary in
`xds status` and the logs whichever registry failed (docs/protocol.md R36: an outage is reported, the last
state keeps serving).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from xds.secrets import redact

# How much of an error body a message quotes: enough for a registry's one-line reason, not a whole page.
MAX_ERROR_BODY = 200


def load_ssl_context(ca_file: Path | None, *, cert_file: Path | None = None,
                     key_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context trusting `ca_file` (or the system CAs), with a client certificate when
    `cert_file` is given. Reads files: run it in a thread. OSError or ssl.SSLError for the caller to name."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context


def json_session(headers: Mapping[str, str], *, ssl_context: ssl.SSLContext | bool,
                 max_connections: int = 100) -> aiohttp.ClientSession:
    """A session sending `headers` with every request, through a pool of `max_connections` (aiohttp's own
    default is 100). `trust_env=False`: an HTTP(S)_PROXY meant for the operator's shell must not divert the
    control plane's registry reads."""
    connector = aiohttp.TCPConnector(limit=max_connections, ssl=ssl_context)
    return aiohttp.ClientSession(headers=dict(headers), connector=connector, trust_env=False)


def unreachable(error: TimeoutError | aiohttp.ClientError, *, peer: str, timeout_s: float | None) -> str:
    """Why `peer` ("Consul at URL", "the API server") gave no usable answer, for a transport `error`:
    a timeout (`timeout_s`, None when the caller does not know it), a TLS failure, a refused or unroutable
    connection (the errno's text, not aiohttp's long repr) or a connection closed mid-request."""
    if isinstance(error, TimeoutError):
        within = "the timeout" if timeout_s is None else f"{timeout_s:g} s"
        return f"no answer from {peer} within {within}"
    if isinstance(error, aiohttp.ClientSSLError):
        # Before ClientConnectorError, its base: the errno of a certificate error means nothing, and
        # retrying will not fix a certificate mismatch.
        return f"TLS failure talking to {peer}: {error}"
    if isinstance(error, aiohttp.ClientConnectorError):
        reason = os.strerror(error.os_error.errno) if error.os_error.errno else str(error.os_error)
        return f"cannot connect to {peer}: {reason}"
    return f"connection to {peer} failed: {type(error).__name__}: {error}"


def error_detail(payload: bytes) -> str:
    """The start of an error body, for a message. Redacted before it is cut: a cut through a secret would
    leave a prefix that no longer matches the registered value (xds/secrets.py)."""
    return redact(payload.decode("utf-8", "replace"))[:MAX_ERROR_BODY].strip()
