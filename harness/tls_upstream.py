"""A real HTTPS upstream on loopback: Python's `ssl` around http.server, with a certificate from a test CA.

Every request is answered 200 with body = the server's name and the header `x-upstream`, like the plaintext
upstreams of harness/upstream.py, so a test behind Envoy sees that TLS origination reached it.
"""

from __future__ import annotations

import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.pki_edge import Issued
from harness.ports import LOOPBACK
from harness.upstream import UPSTREAM_HEADER


class TlsUpstream:
    def __init__(self, name: str, issued: Issued) -> None:
        self.name = name
        self._issued = issued
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"TLS upstream {self.name} is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain reads files only; the temporary directory lives just as long as the call.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self._issued.cert_pem)
            key.write_bytes(self._issued.key_pem)
            context.load_cert_chain(cert, key)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.requests += 1
                body = upstream.name.encode()
                self.send_response(200)
                self.send_header(UPSTREAM_HEADER, upstream.name)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"tls-upstream-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
