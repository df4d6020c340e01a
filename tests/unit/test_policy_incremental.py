"""The incremental file parse (policy/incremental.py, issue 12): over any sequence of edits it answers exactly
what the whole-document parse answers, the same Catalog and Policy or the same PolicyError word for word,
and on a one-endpoint edit it walks one item, not the document."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds.policy.errors import PolicyError
from xds.policy.incremental import IncrementalParser, split_document
from xds.policy.load import parse_document

from .test_file_source import VALID as FILE_SOURCE_FIXTURE
from .test_loader_fuzz import EVERY_FIELD

ROOT = Path(__file__).resolve().parents[2]
WHERE = "inc/catalog.yaml"


def generated(services: int, endpoints: int = 2) -> str:
    """The layout PyYAML's dumper writes (indentless lists), as benchmarks/snapshot_build.py does."""
    lines = ["version: 1", "services:"]
    for i in range(services):
        lines += [f"- name: svc-{i}", "  endpoints:"]
        lines += [f"  - address: 10.0.{i}.{j + 1}:8080" for j in range(endpoints)]
    lines += ["listeners:", "- name: ingress", "  port: 10000", "  routes:"]
    for i in range(services):
        lines += [f"  - name: r{i}", "    match:", f"      prefix: /svc-{i}/", "    backends:",
                  f"    - service: svc-{i}"]
    return "\n".join(lines) + "\n"


SEEDS = [generated(4), (ROOT / "examples" / "catalog.yaml").read_text(), EVERY_FIELD, FILE_SOURCE_FIXTURE]

# Lines an edit may put anywhere: valid ones from the seeds, and ones that break the document, the split,
# or both (anchors, document markers, tabs, unterminated quotes, keys at the wrong level).
_EXTRA_LINES = [
    "- name: svc-0", "- name: svc-9", "  - name: web", "  endpoints:", "  - address: 10.0.0.1:8080",
    "  - address: 10.0.0.1:8080 # again", "    - address: 127.0.0.1:8081", "- service: svc-9",
    "    - service: svc-1", "version: 2", "version: 1", "services:", "listeners:", "services: []", "---",
    "- &a {name: x}", "- *a", "  lb_policy: ring_hash", "  port: 10000", "  port: 10001", "  kind: grpc",
    '  description: "open', 'close"', "\t- name: tab", "# a comment", "", "  # indented comment",
    "- name: ingress", "- name: second\n  port: 10000\n  routes: [{backends: [{service: svc-0}]}]",
    "  protocol: http2", "    weight: 0", "%YAML 1.1", "  - {address: '10.9.9.9:80'}", "x: 1", "-",
    "  - name: svc-1\n    endpoints: []",
]
_ALL_LINES = sorted({line for seed in SEEDS for line in seed.split("\n")} | set(_EXTRA_LINES))

_EDIT = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(_ALL_LINES)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(_ALL_LINES)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("digit"), st.integers(0, 10_000), st.sampled_from("0123456789")),
)


def _apply(text: str, edit: tuple[str, int, str]) -> str:
    kind, at, arg = edit
    lines = text.split("\n")
    index = at % len(lines)
    if kind == "replace":
        lines[index] = arg
    elif kind == "insert":
        lines.insert(index, arg)
    elif kind == "delete":
        del lines[index]
    else:  # change the last digit of the line, as an endpoint edit does
        line = lines[index]
        spots = [i for i, c in enumerate(line) if c.isdigit()]
        if spots:
            lines[index] = line[:spots[-1]] + arg + line[spots[-1] + 1:]
    return "\n".join(lines)


def _outcome(parse: object) -> object:
    assert callable(parse)
    try:
        return parse()
    except PolicyError as e:
        return ("rejected", str(e))


def _same_as_full(parser: IncrementalParser, text: str) -> None:
    expected = _outcome(lambda: parse_document(text, where=WHERE))
    assert _outcome(lambda: parser.parse(text)) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), edits=st.lists(_EDIT, min_size=1, max_size=8))
def test_incremental_parse_equals_the_full_parse_after_every_edit(seed: str, edits: list[tuple[str, int, str]]
                                                                  ) -> None:
    parser = IncrementalParser(where=WHERE)
    text = seed
    _same_as_full(parser, text)
    for edit in edits:
        text = _apply(text, edit)
        _same_as_full(parser, text)


def test_one_endpoint_edit_walks_one_item() -> None:
    parser = IncrementalParser(where=WHERE)
    text = generated(50)
    parser.parse(text)
    assert (parser.full_parses, parser.walked) == (1, 0)
    edited = text.replace("10.0.7.2:8080", "10.0.7.9:8080")
    catalog, policy = parser.parse(edited)
    assert (catalog, policy) == parse_document(edited, where=WHERE)
    assert (parser.full_parses, parser.walked, parser.reused) == (1, 1, 50)  # 49 services + the listener
    service = catalog.get("svc-7")
    assert service is not None and [e.host for e in service.endpoints] == ["10.0.7.1", "10.0.7.9"]


@pytest.mark.parametrize(("edit", "message"), [
    # A problem inside the changed item, and ones only the checks between items see.
    (("10.0.7.2:8080", "10.0.7.2:99999"), "port"),
    (("- name: svc-8\n", "- name: svc-7\n"), "duplicate service 'svc-7'"),
    (("    - service: svc-3\n", "    - service: svc-99\n"), "unknown service 'svc-99'"),
])
def test_a_rejected_edit_reports_exactly_what_the_full_parse_reports(edit: tuple[str, str], message: str
                                                                     ) -> None:
    parser = IncrementalParser(where=WHERE)
    text = generated(10)
    parser.parse(text)
    edited = text.replace(*edit)
    with pytest.raises(PolicyError) as full:
        parse_document(edited, where=WHERE)
    with pytest.raises(PolicyError) as incremental:
        parser.parse(edited)
    assert str(incremental.value) == str(full.value)
    assert message in str(full.value)
    assert str(full.value).startswith(f"{WHERE}:")  # located: FILE:LINE:COL


def test_after_a_rejected_edit_the_fix_is_incremental_again() -> None:
    parser = IncrementalParser(where=WHERE)
    text = generated(30)
    parser.parse(text)
    with pytest.raises(PolicyError):
        parser.parse(text.replace("10.0.7.2:8080", "10.0.7.2:99999"))
    full_parses, walked = parser.full_parses, parser.walked
    fixed = text.replace("10.0.7.2:8080", "10.0.7.3:8080")
    assert parser.parse(fixed) == parse_document(fixed, where=WHERE)
    assert (parser.full_parses, parser.walked) == (full_parses, walked + 1)


def test_removing_a_service_a_route_names_is_rejected_though_the_listener_text_is_unchanged() -> None:
    parser = IncrementalParser(where=WHERE)
    text = generated(3)
    parser.parse(text)
    gone = "- name: svc-2\n  endpoints:\n  - address: 10.0.2.1:8080\n  - address: 10.0.2.2:8080\n"
    edited = text.replace(gone, "")
    assert edited != text
    with pytest.raises(PolicyError, match="unknown service 'svc-2'"):
        parser.parse(edited)


def test_the_node_budget_counts_the_whole_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item fits the budget alone; the document does not, and is refused as the full parse does."""
    parser = IncrementalParser(where=WHERE)
    text = generated(20)
    parser.parse(text)
    monkeypatch.setattr("xds.policy.load._MAX_NODES", 150)
    edited = text.replace("10.0.7.2:8080", "10.0.7.9:8080")
    with pytest.raises(PolicyError, match="too large") as full:
        parse_document(edited, where=WHERE)
    with pytest.raises(PolicyError) as incremental:
        parser.parse(edited)
    assert str(incremental.value) == str(full.value)


@pytest.mark.parametrize("text", [
    "services:\n- &a {name: x}\n- name: y\n",  # an anchor: parsed whole
    "---\nservices:\n- name: x\n",
    "services:\n\t- name: x\n",
    "services: []\n",
    "services:\nlisteners:\n- name: l\n",
    "- name: x\n",
    "services:\n- name: x\n  endpoints: []\nservices:\n- name: y\n",
])
def test_documents_without_the_simple_structure_are_not_split(text: str) -> None:
    assert split_document(text) is None


def test_both_list_layouts_split_into_their_items() -> None:
    split = split_document(generated(2))
    assert split is not None and split.services is not None and split.listeners is not None
    assert [item.split("\n")[0] for item in split.services] == ["- name: svc-0", "- name: svc-1"]
    assert len(split.listeners) == 1
    indented = split_document(FILE_SOURCE_FIXTURE)
    assert indented is not None and indented.services == ("  - name: web\n    endpoints:\n"
                                                          "      - address: 127.0.0.1:8081\n",)
