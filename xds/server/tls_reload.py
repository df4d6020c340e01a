"""Serving the xDS port over mutual TLS, with the certificate, key and client CA reloaded from disk.

gRPC asks `_fetch` for the certificate configuration at every new handshake (dynamic SSL server
credentials), so a reload is just swapping what `_fetch` returns: established connections and their
streams are untouched, new handshakes present the new certificate (issue 9, item 1). The files are polled
(every 2 s by default): each poll reads them, and a new content hash is validated (tls_material.py) before
it is served. A bad set of files is reported once -- log, /status, metric -- and the last good material
keeps serving until the files change again.

Secret rotation tools replace the three files one at a time unless they swap a directory (Kubernetes
Secret volumes flip a `..data` symlink); a poll that lands between the certificate and the key sees a
mismatched pair, reports it, and the next poll serves the complete new set (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc

from xds.server.tls_material import (
    TlsMaterial,
    TlsMaterialError,
    TlsPaths,
    check_material,
    fingerprint,
    read_files,
)

log = logging.getLogger("xds.tls")

DEFAULT_RELOAD_INTERVAL_S = 2.0


def _ignore(_: TlsMaterial | TlsMaterialError) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ReloadProblem:
    """The files on disk that were rejected; the last good material is still served."""

    path: str
    message: str
    since: float  # Unix time of the first poll that saw it


class TlsReloader:
    """Holds the serving TLS material and polls its files. `on_change` sees every accepted material and
    every newly rejected one (metrics); it runs on the event loop."""

    def __init__(self, paths: TlsPaths, *, interval_s: float = DEFAULT_RELOAD_INTERVAL_S,
                 on_change: Callable[[TlsMaterial | TlsMaterialError], None] = _ignore) -> None:
        self.paths = paths
        # A zero interval would spin the event loop re-reading the files.
        self._interval_s = max(0.05, interval_s)
        self._on_change = on_change
        self._current: TlsMaterial | None = None
        self._handed_out = ""  # fingerprint of the configuration gRPC last got from _fetch
        self._rejected = ""  # fingerprint (or error text, for unreadable files) last reported as bad
        self.problem: ReloadProblem | None = None
        self.reloads = 0

    @property
    def current(self) -> TlsMaterial:
        if self._current is None:
            raise RuntimeError("TlsReloader.load() was not called")
        return self._current

    def load(self) -> TlsMaterial:
        """The first load, at startup: a TlsMaterialError here is fatal (the caller exits with it)."""
        cert, key, ca = read_files(self.paths)
        material = check_material(self.paths, cert, key, ca)
        self._current = material
        self._on_change(material)
        log.info("tls_loaded", extra=self._facts(material))
        return material

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate signed by the client CA: a client without
        one, with one from another CA, or with an expired one fails the handshake."""
        material = self.current
        self._handed_out = material.fingerprint
        # gRPC takes None from the fetcher as "unchanged" (grpc.dynamic_ssl_server_credentials); the type
        # stubs leave that out.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(_configuration(material), fetch,
                                                   require_client_authentication=True)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC for every handshake, on one of its threads: only read one attribute (an atomic
        # reference under the GIL) and return None, meaning "unchanged", in the common case.
        material = self._current
        if material is None or material.fingerprint == self._handed_out:
            return None
        self._handed_out = material.fingerprint
        return _configuration(material)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.poll()

    def poll(self) -> bool:
        """Read the files once; True when new material was accepted."""
        try:
            cert, key, ca = read_files(self.paths)
        except TlsMaterialError as exc:
            self._reject(str(exc), exc)
            return False
        material = self.current
        seen = fingerprint(cert, key, ca)
        if seen == material.fingerprint:
            self._clear()
            return False
        if seen == self._rejected:
            return False
        try:
            accepted = check_material(self.paths, cert, key, ca)
        except TlsMaterialError as exc:
            self._reject(seen, exc)
            return False
        self._current = accepted
        self._rejected = ""
        self.problem = None
        self.reloads += 1
        self._on_change(accepted)
        log.info("tls_reloaded", extra=self._facts(accepted))
        return True

    def status(self) -> dict[str, object]:
        """For /status: what is served, and the rejected files if any. Never key material."""
        problem = None if self.problem is None else {"file": self.problem.path, "error": self.problem.message,
                                                      "since_unix": self.problem.since}
        serving = None if self._current is None else self._current.summary()
        return {"serving": serving, "reloads": self.reloads, "problem": problem}

    def _reject(self, key: str, exc: TlsMaterialError) -> None:
        if key == self._rejected:
            return
        self._rejected = key
        self.problem = ReloadProblem(path=str(exc.path), message=str(exc), since=time.time())
        self._on_change(exc)
        log.error("tls_rejected", extra={"file": str(exc.path), "error": str(exc),
                                         "serving_serial": format(self.current.serial, "x")})

    def _clear(self) -> None:
        # The files went back to what is served (an operator reverted a bad edit): nothing is wrong now.
        if self.problem is not None:
            log.info("tls_problem_cleared", extra={"file": self.problem.path})
        self.problem = None
        self._rejected = ""

    def _facts(self, material: TlsMaterial) -> dict[str, object]:
        return {"cert": str(self.paths.cert), "client_ca": str(self.paths.client_ca),
                "serial": format(material.serial, "x"), "not_after": material.not_after.isoformat(),
                "server_names": list(material.server_names)}


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_chain_pem)], root_certificates=material.client_ca_pem)


