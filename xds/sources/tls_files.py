"""The TLS files a policy names, read and checked by the control plane, with the last good content of each.

Theory of operation (issue 9 item 7; docs/security.md, "Edge TLS"): before each snapshot build the app
calls `resolve` (in a worker thread) with the files the merged policy names. Every file is read with the
same safe reader as the catalog (regular files only, bounded size; policy/reader.py) and checked with
`cryptography` (tls_pem.py). A file that passes replaces that file's last good content; one that fails is
reported, located at the file, and its last good content keeps serving. A file with no good content yet
(a CA file that is missing from the start) cannot be served at all: `resolve` raises PolicyError and the
app keeps the last good world (docs/protocol.md R38), exactly as for an invalid document.

Rotation: `watch` stats the named files every poll interval, as the file source does (sources/files.py:
by path, so an atomic rename or a ConfigMap symlink swap is seen), and asks for a rebuild when one's
content changed; the rebuild's `resolve` then serves the new content, over SDS for listener certificates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xds.policy.errors import PolicyError, Problem
from xds.policy.reader import read_document_file
from xds.policy.schema import Policy
from xds.policy.tls_material import KeyPair, KeyPairFiles, TlsInputs, TlsMaterial, tls_inputs
from xds.sources.tls_pem import CertificateError, PemError, check_ca_bundle, check_key_pair

_log = logging.getLogger(__name__)

# PEM files are kilobytes; a public CA bundle is about 200 KiB. Anything near this is not a PEM file.
MAX_PEM_BYTES = 1024 * 1024
# As in sources/files.py: a file rewritten within one timestamp tick keeps its stamp, so while its mtime is
# this recent its content is hashed on every poll.
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int
    device: int


def _stamp(path: str) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _read(path: str) -> bytes | str:
    """The file's bytes, or why it cannot be read."""
    try:
        return read_document_file(Path(path), max_bytes=MAX_PEM_BYTES, where=path).data
    except PolicyError as e:
        return e.problems[0].message


def _digest(content: bytes | str) -> bytes:
    data = content if isinstance(content, bytes) else b"error:" + content.encode()
    return hashlib.sha256(data).digest()


class TlsFiles:
    """Last good TLS material by file. `resolve` and `changed` block (run them in a worker thread); they
    may run concurrently, guarded by one lock."""

    def __init__(self, *, log_problems: bool = True) -> None:
        self._log_problems = log_problems  # `xds validate` prints them itself
        self._lock = threading.Lock()
        self._inputs = TlsInputs()
        self._good_ca: dict[str, bytes] = {}
        self._good_pairs: dict[KeyPairFiles, KeyPair] = {}
        self._errors: dict[str, str] = {}  # path -> the problem with its current content
        # What `resolve` last read of each path (stamp, digest): `changed` compares against it.
        self._consumed: dict[str, tuple[_Stamp | None, bytes]] = {}
        # The content `changed` last reported of each path, so that one change asks for one rebuild even
        # while that rebuild cannot use it (another source's policy is rejected meanwhile).
        self._noticed: dict[str, bytes] = {}

    def errors(self) -> dict[str, str]:
        """The current problem of each named file that has one (paths and messages only: /status shows it)."""
        with self._lock:
            return dict(self._errors)

    def resolve(self, inputs: TlsInputs) -> TlsMaterial:
        """The material for `inputs`: each file's current content when it is good, else its last good.
        Raises PolicyError naming every file that has no good content at all."""
        with self._lock:
            self._inputs = inputs
            contents: dict[str, bytes | str] = {}
            for path in inputs.paths():
                stamp = _stamp(path)
                contents[path] = _read(path)
                self._consumed[path] = (stamp, _digest(contents[path]))
            for gone in set(self._consumed) - set(contents):
                del self._consumed[gone]
            errors: dict[str, str] = {}
            missing: list[Problem] = []
            ca: dict[str, bytes] = {}
            for path, usage in inputs.ca_files.items():
                checked = self._ca(path, contents[path], errors)
                if checked is None:
                    missing.append(Problem(path, None, None, f"{errors[path]} ({usage})"))
                else:
                    ca[path] = checked
            pairs: dict[KeyPairFiles, KeyPair] = {}
            for files, usage in inputs.key_pairs.items():
                pair = self._pair(files, contents, errors)
                if pair is None:
                    bad = files[0] if files[0] in errors else files[1]
                    missing.append(Problem(bad, None, None, f"{errors[bad]} ({usage})"))
                else:
                    pairs[files] = pair
            self._report(errors)
            # Forget what no policy names any more: a file named again later is read afresh.
            for path in set(self._good_ca) - set(inputs.ca_files):
                del self._good_ca[path]
            for files in set(self._good_pairs) - set(inputs.key_pairs):
                del self._good_pairs[files]
        if missing:
            raise PolicyError(missing)
        return TlsMaterial(ca_bundles=ca, key_pairs=pairs)

    def _ca(self, path: str, content: bytes | str, errors: dict[str, str]) -> bytes | None:
        try:
            if isinstance(content, str):
                raise PemError(content)
            checked = check_ca_bundle(content)
        except PemError as e:
            errors[path] = str(e)
            return self._good_ca.get(path)
        if self._good_ca.get(path) != checked:
            _log.info("tls_file_loaded", extra={"path": path, "kind": "ca_bundle"})
        self._good_ca[path] = checked
        return checked

    def _pair(self, files: KeyPairFiles, contents: dict[str, bytes | str],
              errors: dict[str, str]) -> KeyPair | None:
        cert_file, key_file = files
        cert, key = contents[cert_file], contents[key_file]
        try:
            if isinstance(cert, str):
                raise CertificateError(cert)
            if isinstance(key, str):
                raise PemError(key)
            checked = check_key_pair(cert, key, cert_file=cert_file)
        except CertificateError as e:
            errors[cert_file] = str(e)
            return self._good_pairs.get(files)
        except PemError as e:
            errors[key_file] = str(e)
            return self._good_pairs.get(files)
        pair = KeyPair(checked.cert_pem, checked.key_pem)
        if self._good_pairs.get(files) != pair:
            _log.info("tls_file_loaded", extra={"path": cert_file, "key_file": key_file, "kind": "key_pair"})
        self._good_pairs[files] = pair
        return pair

    def _report(self, errors: dict[str, str]) -> None:
        for path, message in errors.items():
            if self._log_problems and self._errors.get(path) != message:  # once, not on every build
                _log.error("tls_file_rejected", extra={"path": path, "error": message,
                                                       "last_good": self._has_good(path)})
        for path in set(self._errors) - set(errors):
            _log.info("tls_file_recovered", extra={"path": path})
        self._errors = errors

    def _has_good(self, path: str) -> bool:
        return path in self._good_ca or any(path in files for files in self._good_pairs)

    def changed(self) -> bool:
        """Whether some file named at the last `resolve` now has other content than it read then."""
        with self._lock:
            consumed = dict(self._consumed)
        now = time.time_ns()
        changed = False
        # Every path is looked at, so that a certificate and its key replaced together are one change.
        for path, (stamp, digest) in consumed.items():
            current = _stamp(path)
            racy = current is not None and now - current.mtime_ns < _RACY_WINDOW_NS
            if current == stamp and not racy:
                continue
            seen = _digest(_read(path))
            with self._lock:
                if seen != digest and self._noticed.get(path) != seen:
                    self._noticed[path] = seen
                    changed = True
        return changed

    async def watch(self, on_change: Callable[[], None], *, interval_s: float) -> None:
        """Call `on_change` (on the loop) whenever a named file's content changes; runs until cancelled.
        A stat or read stuck on a dead mount stalls only this watch, in its worker thread."""
        while True:
            await asyncio.sleep(interval_s)
            if await asyncio.to_thread(self.changed):
                on_change()


def check_tls_files(policy: Policy) -> None:
    """`xds validate`: raise PolicyError naming each TLS file of `policy` that the server would refuse."""
    # A fresh store has no last good content, so every bad file is an error.
    TlsFiles(log_problems=False).resolve(tls_inputs(policy))
