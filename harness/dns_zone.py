"""A small authoritative DNS server on loopback (UDP) for tests of the DNS SRV source (docs/dns.md).

Consul's DNS interface (harness/consul.py, `ConsulAgent(dns=True)`) is the real server the e2e tests use,
but it always gives SRV priority 1 and always fills the additional section; this zone lets a test serve
what Consul cannot: several priorities, targets left out of the additional section, SERVFAIL or REFUSED,
and names that never answer. Messages are built and parsed by dnspython, never by hand.

The zone is mutable while the server runs (a lock guards it); each request is answered in its own thread.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterable

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from harness.ports import LOOPBACK
from harness.processes import StartStop

Key = tuple[str, str]  # (absolute name, record type), e.g. ("a.test.", "A")


class DnsZone(StartStop):
    """Records by (name, type); unknown names answer NXDOMAIN, a known name without the type answers
    NOERROR with no records. `additional=True` puts every A/AAAA record in the additional section of SRV
    answers, as Consul does, with `additional_ttl` (default: `ttl`)."""

    def __init__(self, *, ttl: int = 30, additional: bool = False, additional_ttl: int | None = None) -> None:
        self.ttl = ttl
        self.additional = additional
        self.additional_ttl = ttl if additional_ttl is None else additional_ttl
        self.rcode = dns.rcode.NOERROR  # set to SERVFAIL/REFUSED to fail every query
        self.asked: list[Key] = []
        self._records: dict[Key, list[str]] = {}
        self._silent: set[Key] = set()
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingUDPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the zone --------------------------------------------------------------------------------------------

    def set(self, name: str, kind: str, texts: Iterable[str]) -> None:
        """Replace the records of (name, kind): set("_http._tcp.web.test.", "SRV", ["10 1 80 a.test."])."""
        with self._lock:
            self._records[(name, kind)] = list(texts)

    def remove(self, name: str) -> None:
        """Every record of `name`: it answers NXDOMAIN from now on."""
        with self._lock:
            for key in [k for k in self._records if k[0] == name]:
                del self._records[key]

    def silence(self, name: str, kind: str, silent: bool = True) -> None:
        """Never answer (name, kind) (the query times out), or answer again."""
        with self._lock:
            (self._silent.add if silent else self._silent.discard)((name, kind))

    # -- the server ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the DNS zone is not started")
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """HOST:PORT, as --dns-server takes it."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        zone = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                response = zone.answer(data)
                if response is not None:
                    sock.sendto(response, self.client_address)

        self._server = socketserver.ThreadingUDPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="dns-zone", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def answer(self, data: bytes) -> bytes | None:
        """The wire response to the wire query `data`, or None to stay silent."""
        query = dns.message.from_wire(data)
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        with self._lock:
            self.asked.append(key)
            if key in self._silent:
                return None
            response = dns.message.make_response(query)
            if self.rcode != dns.rcode.NOERROR:
                response.set_rcode(self.rcode)
                return response.to_wire()
            if not any(name == key[0] for name, _ in self._records):
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response.to_wire()
            if self._records.get(key):
                response.answer.append(dns.rrset.from_text_list(key[0], self.ttl, "IN", key[1],
                                                                self._records[key]))
            if self.additional and key[1] == "SRV":
                for (name, kind), texts in self._records.items():
                    if kind in ("A", "AAAA") and texts:
                        response.additional.append(
                            dns.rrset.from_text_list(name, self.additional_ttl, "IN", kind, texts))
        return response.to_wire()
