"""One-shot registrar: put the demo's instances into Consul's catalog, each with an HTTP health check.

Usage: register.py [options] INSTANCE=VERSION ...   (for example `web-v1=v1 web-v2=v2`)

Each INSTANCE is a container's DNS name on the compose network. Its sidecar Envoy shares that container's
network namespace, so one IP address reaches both the demo service (`--app-port`) and the sidecar's inbound
listener (`--service-port`). Two Consul services are registered per instance:

  `--service` (web)          IP:service-port, the sidecar: what the edge Envoy routes to and splits by
                             version. Its check goes through the sidecar to the app, so an instance only
                             counts as healthy when both its sidecar and its app answer.
  `--app-service` (web-app)  IP:app-port, the demo service itself. Only the instance's own sidecar routes
                             here (subset `instance: <INSTANCE>` in policies/sidecars.yaml).

Both carry the metadata `version` and `instance`, which the control plane turns into endpoint metadata for
subsets. Registrations use fixed IDs, so running this again (every `docker compose up` does) replaces them
instead of adding duplicates, picking up new container addresses.

It then waits until Consul reports every check passing, so the traffic generator, which starts after this
exits, sees a settled split from its first line. On timeout it exits 1 and prints each failing check's
output. Standard library only.

Outside the compose network an instance name resolves to nothing: `--address INSTANCE=IP` (repeatable) gives
its address instead. tests/e2e/test_compose_topology.py runs this script that way, on loopback addresses.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_REQUEST_TIMEOUT_S = 5.0
_RETRY_S = 1.0
# The images run Python 3.11: no PEP 695 generics.
_T = TypeVar("_T")


def registrations(instance: str, version: str, ip: str, *, service: str, service_port: int,
                  app_service: str, app_port: int, check_interval: str = "2s") -> list[dict[str, Any]]:
    """The Consul agent API bodies (PUT /v1/agent/service/register) for one instance."""
    meta = {"version": version, "instance": instance}

    def one(name: str, service_id: str, port: int) -> dict[str, Any]:
        return {
            "ID": service_id,
            "Name": name,
            "Address": ip,
            "Port": port,
            "Meta": meta,
            "Check": {
                "Name": f"{name} on {instance} answers /health",
                "HTTP": f"http://{ip}:{port}/health",
                "Method": "GET",
                "Interval": check_interval,
                "Timeout": "1s",
            },
        }

    return [one(service, instance, service_port), one(app_service, f"{instance}-app", app_port)]


def parse_instance(text: str) -> tuple[str, str]:
    instance, sep, version = text.partition("=")
    if not sep or not instance or not version:
        raise argparse.ArgumentTypeError(f"expected INSTANCE=VERSION, got {text!r}")
    return instance, version


def parse_address(text: str) -> tuple[str, str]:
    instance, sep, ip = text.partition("=")
    if not sep or not instance or not ip:
        raise argparse.ArgumentTypeError(f"expected INSTANCE=IP, got {text!r}")
    return instance, ip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--consul-address", default="http://consul:8500")
    parser.add_argument("--service", default="web")
    parser.add_argument("--service-port", type=int, default=15001)
    parser.add_argument("--app-service", default="web-app")
    parser.add_argument("--app-port", type=int, default=8080)
    parser.add_argument("--address", type=parse_address, action="append", default=[], metavar="INSTANCE=IP",
                        help="use IP for INSTANCE instead of resolving its name (repeatable)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for addresses to resolve and checks to pass")
    parser.add_argument("instances", nargs="+", type=parse_instance, metavar="INSTANCE=VERSION")
    return parser


def _retry(what: str, attempt: Callable[[], _T], deadline: float) -> _T:
    while True:
        try:
            return attempt()
        except (OSError, ValueError) as exc:
            if time.monotonic() >= deadline:
                raise SystemExit(f"registrar: gave up on {what}: {exc}") from exc
            time.sleep(_RETRY_S)


class _Consul:
    def __init__(self, address: str) -> None:
        self._base = address.rstrip("/")

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT_S) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')[:300]}"
            if exc.code >= 500:
                # Consul's own trouble (no leader yet, say): worth retrying until the deadline.
                raise ConnectionError(detail) from exc
            # A refusal of the request itself; retrying would not change the answer.
            raise SystemExit(f"registrar: {detail}") from exc
        return json.loads(text) if text else None

    def health(self, service: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/v1/health/service/{urllib.parse.quote(service)}")
        return result


def _failing(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{check.get('ServiceID') or check.get('CheckID')}: {check.get('Status')} "
            f"{(check.get('Output') or '').strip()[:200]}"
            for entry in entries for check in entry.get("Checks", []) if check.get("Status") != "passing"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    deadline = time.monotonic() + args.timeout
    consul = _Consul(args.consul_address)
    expected: dict[str, set[str]] = {args.service: set(), args.app_service: set()}
    addresses = dict(args.address)
    unknown = sorted(set(addresses) - {instance for instance, _ in args.instances})
    if unknown:
        raise SystemExit(f"registrar: --address names no instance: {', '.join(unknown)}")
    for instance, version in args.instances:
        ip = addresses.get(instance) or _retry(
            f"resolving {instance}", functools.partial(socket.gethostbyname, instance), deadline)
        for body in registrations(instance, version, ip, service=args.service,
                                  service_port=args.service_port, app_service=args.app_service,
                                  app_port=args.app_port):
            _retry(f"registering {body['ID']}",
                   functools.partial(consul.call, "PUT", "/v1/agent/service/register", body), deadline)
            expected[body["Name"]].add(body["ID"])
            meta = json.dumps(body["Meta"], sort_keys=True)
            print(f"registrar: {body['Name']} id={body['ID']} at {ip}:{body['Port']} meta={meta}, "
                  f"check {body['Check']['HTTP']}", flush=True)

    print("registrar: waiting for every check to pass", flush=True)
    while True:
        pending: list[str] = []
        for service, ids in expected.items():
            health = _retry(f"reading health of {service}", functools.partial(consul.health, service),
                            deadline)
            entries = [e for e in health if e["Service"]["ID"] in ids]
            missing = ids - {e["Service"]["ID"] for e in entries}
            pending += [f"{service_id}: not in the catalog" for service_id in sorted(missing)]
            pending += _failing(entries)
        if not pending:
            print("registrar: every check passes", flush=True)
            return 0
        if time.monotonic() >= deadline:
            print("registrar: checks still failing after "
                  f"{args.timeout:g}s:\n  " + "\n  ".join(pending), file=sys.stderr, flush=True)
            return 1
        time.sleep(_RETRY_S)


if __name__ == "__main__":
    sys.exit(main())
