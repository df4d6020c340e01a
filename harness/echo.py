"""An HTTP server on loopback that answers every request with an error whose body echoes the request: the
request line, every header (so an `X-Consul-Token` or `Authorization` comes back verbatim), the same headers
as a JSON object, and a PEM private key block. It stands in for a misbehaving registry or proxy in the
redaction tests of issue 9 (docs/security.md, "The management API and secrets").
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.ports import LOOPBACK

# Not a usable key: the shape of one, which is what the redaction has to recognise.
FAKE_PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\n"
                    "MIIEowIBAAKCAQEAsecretkeymaterialsecretkeymaterialsecretkeymaterial\n"
                    "-----END RSA PRIVATE KEY-----\n")


class EchoErrorServer:
    """`with EchoErrorServer(status=500) as echo:` then point a client at `echo.url`."""

    def __init__(self, *, status: int = 500) -> None:
        self.status = status
        self.requests: list[dict[str, str]] = []  # the headers of every request seen
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = dict(self.headers.items())
                with owner._lock:
                    owner.requests.append(headers)
                lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
                body = (f"upstream failure, request was:\n{self.requestline}\n{lines}\n"
                        f"headers={json.dumps(headers)}\n{FAKE_PRIVATE_KEY}").encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-error-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def seen(self, header: str) -> list[str]:
        """Every value of `header` received so far (case-insensitive name)."""
        with self._lock:
            return [v for h in self.requests for k, v in h.items() if k.lower() == header.lower()]

    def __enter__(self) -> EchoErrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
