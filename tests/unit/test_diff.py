"""The `xds diff` engine (xds/diff.py, issue 14 item 5): pure comparisons of two views of a node group."""

from __future__ import annotations

import json

from xds.diff import diff_group, diffs_to_dict, format_diffs, has_changes


def _j(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


CLUSTER_A = _j({"name": "a", "connect_timeout": "1s"})
ROUTE = _j({"name": "http", "virtual_hosts": [{"routes": [{"route": {"weighted_clusters": {
    "clusters": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}}]}]})
ROUTE_5050 = ROUTE.replace("80", "50").replace("20", "50")


def test_identical_views_have_no_changes() -> None:
    view = {"cds": {"a": CLUSTER_A}, "rds": {"http": ROUTE}}
    d = diff_group("edge", view, view)
    assert d.changes == ()
    assert not has_changes([d])
    assert format_diffs([d]) == "group edge: no changes"
    assert diffs_to_dict([d]) == {"changed": False, "groups": [
        {"group": "edge", "summary": {"added": 0, "removed": 0, "changed": 0}, "changes": []}]}


def test_key_order_and_spacing_are_no_change() -> None:
    spaced = json.dumps({"connect_timeout": "1s", "name": "a"}, indent=4)
    assert diff_group("g", {"cds": {"a": CLUSTER_A}}, {"cds": {"a": spaced}}).changes == ()


def test_added_removed_changed_in_type_order_then_name() -> None:
    current = {"rds": {"http": ROUTE}, "cds": {"a": CLUSTER_A, "old": _j({"name": "old"})}}
    candidate = {"rds": {"http": ROUTE_5050}, "cds": {"a": CLUSTER_A, "new": _j({"name": "new"})}}
    d = diff_group("edge", current, candidate, type_order=("cds", "eds", "sds", "lds", "rds"))
    assert [(c.type, c.name, c.change) for c in d.changes] == [
        ("cds", "new", "added"), ("cds", "old", "removed"), ("rds", "http", "changed")]
    assert (d.count("added"), d.count("removed"), d.count("changed")) == (1, 1, 1)
    changed = d.changes[2].diff
    assert changed.startswith("--- current/rds/http\n+++ candidate/rds/http\n")
    lines = changed.splitlines()
    assert any(line.startswith("-") and line.strip("- ") == '"weight": 80' for line in lines)
    assert any(line.startswith("+") and line.strip("+ ") == '"weight": 50' for line in lines)
    added = d.changes[0].diff
    assert '+  "name": "new"\n' in added and not any(line.startswith("-  ") for line in added.splitlines())


def test_opaque_types_compare_by_name_only() -> None:
    current = {"sds": {"cert": _j({"name": "cert", "pem": "one"}), "gone": _j({"name": "gone"})}}
    candidate = {"sds": {"cert": _j({"name": "cert", "pem": "two"}), "fresh": _j({"name": "fresh"})}}
    d = diff_group("g", current, candidate, opaque=frozenset({"sds"}))
    assert [(c.name, c.change, c.diff) for c in d.changes] == [("fresh", "added", ""),
                                                                ("gone", "removed", "")]


def test_text_and_dict_outputs() -> None:
    d = diff_group("edge", {"rds": {"http": ROUTE}}, {"rds": {"http": ROUTE_5050}})
    text = format_diffs([d])
    assert text.splitlines()[:2] == ["group edge: 0 added, 0 removed, 1 changed", "  ~ rds http (changed)"]
    assert "    --- current/rds/http" in text
    assert format_diffs([d], summary_only=True).count("\n") == 1
    data = diffs_to_dict([d])
    assert data["changed"] is True
    groups = data["groups"]
    assert isinstance(groups, list)
    assert groups[0]["changes"][0]["diff"] == d.changes[0].diff


def test_a_group_only_in_candidate_types_counts() -> None:
    d = diff_group("g", {}, {"lds": {"l": _j({"name": "l"})}})
    assert [(c.type, c.change) for c in d.changes] == [("lds", "added")]
