"""The Consul change detector (xds/sources/consul/changes.py): which services a catalog-wide answer says to
re-read (issue 13 section 4)."""

from __future__ import annotations

from typing import Any

import pytest

from xds.sources.consul.changes import (
    HealthState,
    catalog_changes,
    health_changes,
    instance_nodes,
    merge_versions,
    nodes_to_sweep,
    parse_health_state,
    parse_node_services,
    parse_service_tags,
    version_changes,
)
from xds.sources.consul.client import ConsulConfig
from xds.sources.consul.parse import ConsulParseError


def check(node: str, status: str, service: str = "", service_id: str = "", check_id: str = ""
          ) -> dict[str, Any]:
    return {"Node": node, "CheckID": check_id or (f"service:{service_id}" if service_id else "serfHealth"),
            "Status": status, "ServiceName": service, "ServiceID": service_id, "Output": "ignored",
            "ModifyIndex": 7}


def state(*checks: dict[str, Any]) -> HealthState:
    return parse_health_state(list(checks))


BASE = (check("n1", "passing"), check("n2", "passing"),
        check("n1", "passing", "web", "web-1"), check("n2", "passing", "web", "web-2"),
        check("n1", "passing", "api", "api-1"))
NODES_OF = {"web": frozenset({"n1", "n2"}), "api": frozenset({"n1"}), "db": frozenset({"n3"})}


def test_health_state_splits_service_and_node_checks() -> None:
    parsed = state(*BASE)
    assert parsed.nodes == {"n1": frozenset({("serfHealth", "passing")}),
                            "n2": frozenset({("serfHealth", "passing")})}
    assert parsed.services["web"] == frozenset({("n1", "web-1", "service:web-1", "passing"),
                                                ("n2", "web-2", "service:web-2", "passing")})
    assert parse_health_state(None) == HealthState()
    with pytest.raises(ConsulParseError, match="health/state/any"):
        parse_health_state({"not": "a list"})


def test_a_check_flip_names_only_its_service() -> None:
    flipped = (*BASE[:3], check("n2", "critical", "web", "web-2"), BASE[4])
    assert health_changes(state(*BASE), state(*flipped), NODES_OF) == {"web"}


def test_unchanged_answer_names_nothing_even_with_other_output() -> None:
    again = [dict(c, Output="different", ModifyIndex=99) for c in BASE]
    assert health_changes(state(*BASE), state(*again), NODES_OF) == frozenset()


def test_a_new_or_removed_check_names_its_service() -> None:
    added = (*BASE, check("n1", "passing", "api", "api-1", check_id="extra"))
    assert health_changes(state(*BASE), state(*added), NODES_OF) == {"api"}
    assert health_changes(state(*added), state(*BASE), NODES_OF) == {"api"}
    new_service = (*BASE, check("n3", "passing", "db", "db-1"))
    assert health_changes(state(*BASE), state(*new_service), NODES_OF) == {"db"}


def test_a_node_check_names_every_service_on_that_node() -> None:
    node_down = (check("n1", "critical"), *BASE[1:])
    assert health_changes(state(*BASE), state(*node_down), NODES_OF) == {"web", "api"}
    node_gone = BASE[1:]
    assert health_changes(state(*BASE), state(*node_gone), NODES_OF) == {"web", "api"}


def test_catalog_changes() -> None:
    before = parse_service_tags({"web": ["b", "a"], "api": [], "old": []})
    after = parse_service_tags({"web": ["a", "b"], "api": ["v2"], "new": None})
    changes = catalog_changes(before, after, index_moved=True)
    assert (changes.added, changes.removed, changes.retagged, changes.sweep) == (
        {"new"}, {"old"}, {"api"}, True)
    # Tag order does not matter; no index move, no sweep.
    assert catalog_changes(before, before, index_moved=False).sweep is False
    first = catalog_changes(None, after, index_moved=True)
    assert first.added == {"web", "api", "new"} and first.sweep is False
    with pytest.raises(ConsulParseError, match="catalog/services"):
        parse_service_tags([])


def node_services(node: str, *services: tuple[str, str, int]) -> dict[str, Any]:
    return {"Node": {"Node": node}, "Services": [{"ID": i, "Service": s, "ModifyIndex": m, "Port": 1}
                                                 for s, i, m in services]}


def test_a_sweep_finds_the_service_whose_registration_changed() -> None:
    first = merge_versions([parse_node_services(node_services("n1", ("web", "web-1", 5), ("api", "api-1", 6)),
                                                "n1"),
                            parse_node_services(node_services("n2", ("web", "web-2", 8)), "n2")])
    assert first["web"] == frozenset({("n1", "web-1", 5), ("n2", "web-2", 8)})
    assert version_changes(None, first) == frozenset()
    port_changed = merge_versions([
        parse_node_services(node_services("n1", ("web", "web-1", 5), ("api", "api-1", 6)), "n1"),
        parse_node_services(node_services("n2", ("web", "web-2", 12)), "n2")])
    assert version_changes(first, port_changed) == {"web"}
    instance_gone = merge_versions([parse_node_services(node_services("n1", ("web", "web-1", 5)), "n1"),
                                    parse_node_services(None, "n2")])
    assert version_changes(first, instance_gone) == {"web", "api"}
    with pytest.raises(ConsulParseError, match="node-services/n1"):
        parse_node_services([], "n1")


def test_nodes_to_sweep_include_nodes_without_checks() -> None:
    assert nodes_to_sweep(state(*BASE), NODES_OF) == {"n1", "n2", "n3"}
    entries = [{"Node": {"Node": "n1"}}, {"Node": {"Node": "n2"}}, {"Node": None}]
    assert instance_nodes(entries) == {"n1", "n2"}
    assert instance_nodes(None) == frozenset()


def test_connection_bound_settings() -> None:
    config = ConsulConfig("127.0.0.1:8500")
    assert (config.max_connections, config.fetch_concurrency, config.blocking_queries) == (32, 8, 2)
    assert ConsulConfig("127.0.0.1:8500", datacenters=("a", "b"), kv_prefix="xds").blocking_queries == 5
    with pytest.raises(ValueError, match="max_connections must be at least 6"):
        ConsulConfig("127.0.0.1:8500", datacenters=("a", "b"), kv_prefix="xds", max_connections=5)
    with pytest.raises(ValueError, match="fetch_concurrency"):
        ConsulConfig("127.0.0.1:8500", fetch_concurrency=0)
