"""The World of the fleet-scale benchmark (issue 12) and the resources both servers serve from it.

The catalog is snapshot_build's World (N services x M endpoints, one listener with a route per service),
written as the catalog.yaml this server reads. The reference server (gcp-server) gets the very resources this
project's own snapshot build makes of that catalog, as JSON lines {"type_url", "name", "body": base64}, so
both servers send byte-identical Clusters, ClusterLoadAssignments, Listeners and RouteConfigurations.

A change sequence is precomputed before any timing starts: for the file path, the k-th change sets the weight
of one endpoint of service k % N (so every change is one EDS resource); for the registry path, change 2j
registers a Consul instance of service j % N and change 2j+1 deregisters it. For each change the resources
whose serialized body differs from the previous snapshot's are dumped, which is what gcp-server's `update`
command applies.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.snapshot_build import ENDPOINT_PORT, Sizes, make_document, service_name
from harness.xds_resources import resource_lines, write_lines, write_text_atomically
from xds.cache.snapshot import Snapshot
from xds.model.service import Catalog, Endpoint, Service
from xds.pipeline import World, build_snapshot
from xds.policy.load import parse_document
from xds.policy.schema import Policy
from xds.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE, TypeUrl

# The four types an ADS client of the load generator subscribes to (xds-load, issue 12).
SERVED: tuple[TypeUrl, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# The snapshot is built for one node group; the catalog's resources do not depend on the group's name.
DUMP_GROUP = "group-0"
# Consul instances of the registry path: addresses outside snapshot_build's 10.0.0.0/8 numbering start.
_REGISTRY_BASE = int(ipaddress.IPv4Address("172.16.0.1"))
REGISTRY_SOURCE = "consul:dc1"


def sizes_of(services: int, endpoints: int) -> Sizes:
    # Only services, endpoints and listeners shape the World; the other fields are snapshot_build's own.
    return Sizes(services=services, endpoints=endpoints, listeners=1, runs=1, streams=1, watchers=0)


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """One registry step: register (or deregister) instance `instance_id` of `service`."""

    register: bool
    service: str
    instance_id: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """The precomputed steps of one change path and, per step, the gcp-server update file."""

    documents: tuple[str, ...]  # file path: the whole catalog.yaml after each change
    registry: tuple[RegistryChange, ...]  # registry path: the Consul operation of each change
    updates: tuple[Path, ...]  # JSON-lines file of the resources each change alters
    changed: tuple[int, ...]  # how many resources each update holds


def write_catalog(path: Path, text: str) -> None:
    # The file source must never read a half-written catalog (it would report it and keep the last one).
    write_text_atomically(path, text)


def dump_resources(path: Path, snapshot: Snapshot, previous: Snapshot | None = None) -> int:
    """Write the snapshot's resources (those changed since `previous`) as gcp-server reads them."""
    return write_lines(resource_lines(snapshot, previous), path)


class FleetWorld:
    """The catalog document, its parsed form and its snapshot, as the server at `catalog_path` sees it."""

    def __init__(self, services: int, endpoints: int, catalog_path: Path) -> None:
        self.sizes = sizes_of(services, endpoints)
        self.catalog_path = catalog_path.resolve()
        self.text = make_document(self.sizes)
        self.catalog, self.policy = self._parse(self.text)
        self.snapshot = build_snapshot(World(self.catalog, self.policy), DUMP_GROUP)

    def _parse(self, text: str) -> tuple[Catalog, Policy]:
        # The same `where` the file source uses (the path it was given), so endpoint sources match.
        return parse_document(text, where=str(self.catalog_path))

    def write(self) -> None:
        write_catalog(self.catalog_path, self.text)

    def write_text(self, text: str) -> None:
        write_catalog(self.catalog_path, text)

    def dump_all(self, path: Path) -> int:
        return dump_resources(path, self.snapshot)

    def file_plan(self, changes: int, out_dir: Path) -> ChangePlan:
        """`changes` weight edits, each of endpoint 0 of service k % N, cumulative."""
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document: dict[str, Any] = yaml.load(self.text, Loader=loader)  # a safe loader (the C one)
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        services = list(self.catalog.services)
        documents, updates, changed = [], [], []
        previous = self.snapshot
        for k in range(changes):
            index = k % len(services)
            document["services"][index]["endpoints"][0]["weight"] = 2 + k
            text = yaml.dump(document, Dumper=dumper, sort_keys=False)
            # The same edit on the parsed catalog: parsing the whole file again per change would take longer
            # than the change itself (docs: benchmarks/README.md, fleet_scale).
            first, *rest = services[index].endpoints
            services[index] = Service(services[index].name, (dataclasses.replace(first, weight=2 + k), *rest))
            snapshot = build_snapshot(World(Catalog(tuple(services)), self.policy), DUMP_GROUP,
                                      previous=previous)
            update = out_dir / f"file-change-{k:03d}.jsonl"
            changed.append(dump_resources(update, snapshot, previous))
            documents.append(text)
            updates.append(update)
            previous = snapshot
        return ChangePlan(tuple(documents), (), tuple(updates), tuple(changed))

    def registry_plan(self, changes: int, out_dir: Path) -> ChangePlan:
        """Change 2j registers instance j of service j % N in the registry, change 2j+1 deregisters it."""
        services = {s.name: s for s in self.catalog.services}
        steps, updates, changed = [], [], []
        previous = self.snapshot
        for k in range(changes):
            j = k // 2
            name = service_name(j % self.sizes.services)
            address = str(ipaddress.IPv4Address(_REGISTRY_BASE + j))
            step = RegistryChange(register=k % 2 == 0, service=name, instance_id=f"bench-{j}",
                                  address=address, port=ENDPOINT_PORT)
            current = services[name]
            if step.register:
                added = Endpoint(address, ENDPOINT_PORT, source=REGISTRY_SOURCE)
                services[name] = Service(current.name, (*current.endpoints, added))
            else:
                services[name] = Service(current.name, tuple(e for e in current.endpoints
                                                             if e.host != address))
            catalog = Catalog(tuple(services[s.name] for s in self.catalog.services))
            snapshot = build_snapshot(World(catalog, self.policy), DUMP_GROUP, previous=previous)
            update = out_dir / f"registry-change-{k:03d}.jsonl"
            changed.append(dump_resources(update, snapshot, previous))
            steps.append(step)
            updates.append(update)
            previous = snapshot
        return ChangePlan((), tuple(steps), tuple(updates), tuple(changed))


def served_counts(snapshot: Snapshot) -> dict[str, int]:
    return {type_url.rsplit(".", 1)[-1]: len(snapshot.of_type(type_url)) for type_url in SERVED}

