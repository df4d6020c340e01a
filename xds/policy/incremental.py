"""Re-parsing a changed file-format document in proportion to what changed (issue 12).

Theory of operation: a catalog file of 1000 services takes about 0.7 s to compose and walk in full
(benchmarks/README.md), and most edits touch one service. `IncrementalParser.parse` splits the document into
its top-level list items (one service, one listener) by lines, remembers the validated result of each item
keyed by its exact text, and composes and walks again only the items whose text is new. The checks between
items (duplicate names, backends naming declared services, port conflicts, the gRPC rules) then run on the
results, without YAML.

It only ever answers for documents the full parse accepts, with the same Catalog and Policy. Every problem,
anywhere, makes it hand the whole document to `parse_document`, so a rejected edit reports the very same
messages, FILE:LINE:COL included (docs/protocol.md R38: accepted whole or rejected whole). So does anything
the line splitter does not understand: only "simple block structure" is split, meaning a mapping at column
0 whose keys are `version: 1`, `services:` and `listeners:`, each list written as block items that start
with `- ` at one indentation. Why the split is safe:

* a YAML block-sequence item at that indentation is composed independently of its siblings, except for
  anchors and aliases: an alias to another item's anchor fails in the item alone, and a document with `&`
  anywhere is not split at all (PyYAML refuses an anchor defined twice, which items alone would not see);
* a quoted or flow scalar that spans a split point leaves the item before it unterminated, which fails;
* a line at column 0 that is neither a known key, a comment nor an item ends the split (`---`, `%YAML`,
  a continuation line), as do tabs and the line breaks Python and YAML disagree on;
* the node budget (document.MAX_NODES) is checked on the sum of the items' nodes, and nesting depth is the
  same in an item alone as in the document.

An item's result depends only on its text, the endpoints' source and, for a listener, the set of declared
service names (its backends must name one), so those make the key. The memo keeps only the items of the
last document accepted: memory stays proportional to one document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xds.model.service import Catalog, Service, ServiceName
from xds.policy import document
from xds.policy.document import Map, Node, Seq
from xds.policy.errors import PolicyError
from xds.policy.grpc_checks import grpc_lb_problems, grpc_retry_problems
from xds.policy.load import node_budget, parse_document_tree
from xds.policy.schema import ListenerPolicy, Policy, ServicePolicy, find_port_conflicts
from xds.policy.walker import ServiceEntry, walk

SERVICES = "services"
LISTENERS = "listeners"

_BLOCK_KEY = re.compile(r"(services|listeners):[ ]*(#.*)?")
_VERSION_LINE = re.compile(r"version:[ ]+1[ ]*(#.*)?")
# Below this many new items, or a quarter of them, walking the new items alone beats one whole parse.
_FEW_NEW = 16
_ITEM = re.compile(r"( *)-(?=[ \n]|\Z)")
# A line at column 0 that is neither blank, a comment, nor a list item: a key of the root mapping.
_TOP_LINE = re.compile(r"\n([^ \n#-][^\n]*)")
# A line with something besides spaces and a comment.
_CONTENT = re.compile(r"\n *[^ \n#]")
# str.splitlines breaks at these and YAML does not, or YAML does and a split by "\n" would not: either way
# the line structure is ambiguous, so such a document is parsed whole.
_AMBIGUOUS = re.compile("[\t\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029&]")


@dataclass(frozen=True, slots=True)
class Split:
    """The list items of a simple document, by top-level key, each as its exact text."""

    services: tuple[str, ...] | None  # None: no `services:` key
    listeners: tuple[str, ...] | None
    has_version: bool


def split_document(text: str) -> Split | None:
    """The items of `text`, or None when it does not have the simple block structure described above.
    Regular expressions over the whole text rather than a loop over its lines, each anchored on the "\\n"
    that starts a line (which re finds much faster than a MULTILINE `^`): this runs on every edit, and a
    1000-service file has 20000 lines."""
    if _AMBIGUOUS.search(text):
        return None
    framed = "\n" + text  # every line, the first too, starts after a "\n"
    keys = list(_TOP_LINE.finditer(framed))
    if not keys or not _only_comments(framed[:keys[0].start()]):
        return None  # content before the first key: a root that is not a simple mapping
    blocks: dict[str, tuple[str, ...]] = {}
    has_version = False
    for index, key in enumerate(keys):
        line = key.group(1)
        body = framed[key.end():keys[index + 1].start() if index + 1 < len(keys) else len(framed)]
        block = _BLOCK_KEY.fullmatch(line)
        if block is not None and block.group(1) not in blocks:
            items = _items(body)
            if items is None:
                return None
            blocks[block.group(1)] = items
        elif _VERSION_LINE.fullmatch(line) and not has_version and _only_comments(body):
            has_version = True
        else:
            return None  # an unknown or repeated key, another version, a value on a list key
    if not blocks:
        return None
    return Split(services=blocks.get(SERVICES), listeners=blocks.get(LISTENERS), has_version=has_version)


def _only_comments(body: str) -> bool:
    return _CONTENT.search(body) is None


def _items(body: str) -> tuple[str, ...] | None:
    """The block-sequence items of the lines under a list key (`body` starts with the "\\n" ending the
    key's line), or None unless every content line is an item start at one indentation or is indented
    deeper than the items."""
    first = _CONTENT.search(body)
    if first is None:
        return None  # a key with no items under it (`services:` alone means null)
    start = _ITEM.match(body, first.start() + 1)
    if start is None:
        return None
    indent = len(start.group(1))
    starts = [m.start() + 1 for m in re.finditer(rf"\n {{{indent}}}-(?=[ \n]|\Z)", body)]
    shallow = sum(1 for _ in re.finditer(rf"\n {{0,{indent}}}[^ \n#]", body))
    if shallow != len(starts):
        return None
    items = [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)], strict=True)]
    if not items[-1].endswith("\n"):
        items[-1] += "\n"
    return tuple(items)


@dataclass(frozen=True, slots=True)
class _Item:
    """One validated item: what it builds and how many nodes it spent of the document's budget."""

    service: ServiceEntry | None
    listener: ListenerPolicy | None
    nodes: int
    # The catalog's Service of a service item with endpoints, made once: its endpoints are sorted on
    # construction, which per parse would cost a pass over every endpoint of the file.
    in_catalog: Service | None = None


def _service_item(entry: ServiceEntry, nodes: int) -> _Item:
    in_catalog = (Service(ServiceName(entry.policy.name), entry.endpoints) if entry.endpoints is not None
                  else None)
    return _Item(entry, None, nodes, in_catalog)


def _aligned(texts: tuple[str, ...] | None, tree: Node | None, built: Sequence[object]) -> bool:
    """One text, one tree and one result per item (always so for a valid document; checked anyway)."""
    return texts is not None and isinstance(tree, Seq) and len(texts) == len(tree.items) == len(built)


def _count(node: Node) -> int:
    if isinstance(node, Map):
        return 1 + sum(_count(entry.value) for entry in node.entries)
    if isinstance(node, Seq):
        return 1 + sum(_count(item) for item in node.items)
    return 1


class IncrementalParser:
    """`parse_document` for successive versions of one file, re-walking only the items that changed."""

    def __init__(self, *, where: str) -> None:
        self._where = where
        self._source = f"file:{where}"
        self._memo: dict[tuple[str, str, frozenset[str]], _Item] = {}
        self._known: set[str] = set()  # the item texts in the memo, for deciding whether to split at all
        # Counters for tests and benchmarks: items walked again, items reused, whole-document parses.
        self.walked = 0
        self.reused = 0
        self.full_parses = 0

    def parse(self, text: str) -> tuple[Catalog, Policy]:
        """The same Catalog and Policy as `parse_document(text, where=...)`, or the same PolicyError."""
        split = split_document(text)
        if split is not None and self._mostly_known(split):
            result = self._incremental(split)
            if result is not None:
                return result
        # The whole document: a first load, an edit of most items, or any problem. Composing it at once is
        # several times faster than item by item (one libyaml call instead of one per item), and its items
        # are remembered for the next edit.
        self.full_parses += 1
        # A rejected document leaves the memo as it was: fixing the mistake is an edit of one item again.
        root, services, catalog, policy = parse_document_tree(text, where=self._where)
        if split is not None and isinstance(root, Map):
            self._remember(split, root, services, policy)
        return catalog, policy

    def _mostly_known(self, split: Split) -> bool:
        items = (*(split.services or ()), *(split.listeners or ()))
        new = sum(1 for item in items if item not in self._known)
        return new <= max(_FEW_NEW, len(items) // 4)

    def _remember(self, split: Split, root: Map, services: list[ServiceEntry], policy: Policy) -> None:
        """Seed the memo from a successful whole-document walk, item by item."""
        trees = {entry.key: entry.value for entry in root.entries}
        declared = frozenset(entry.policy.name for entry in services)
        memo: dict[tuple[str, str, frozenset[str]], _Item] = {}
        services_tree, listeners_tree = trees.get(SERVICES), trees.get(LISTENERS)
        if _aligned(split.services, services_tree, services) and isinstance(services_tree, Seq):
            for item_text, node, entry in zip(split.services or (), services_tree.items, services,
                                              strict=True):
                memo[(SERVICES, item_text, frozenset())] = _service_item(entry, _count(node))
        if _aligned(split.listeners, listeners_tree, policy.listeners) and isinstance(listeners_tree, Seq):
            for item_text, node, listener in zip(split.listeners or (), listeners_tree.items,
                                                 policy.listeners, strict=True):
                memo[(LISTENERS, item_text, declared)] = _Item(None, listener, _count(node))
        self._set_memo(memo)

    def _set_memo(self, memo: dict[tuple[str, str, frozenset[str]], _Item]) -> None:
        self._memo = memo
        self._known = {item_text for _, item_text, _ in memo}

    def _incremental(self, split: Split) -> tuple[Catalog, Policy] | None:
        """The document from its items, or None at the first problem (the caller parses it whole)."""
        memo: dict[tuple[str, str, frozenset[str]], _Item] = {}
        services: list[ServiceEntry] = []
        in_catalog: list[Service] = []
        nodes = 1 + int(split.has_version)  # the root mapping and the version scalar
        for item_text in split.services or ():
            item = self._item(SERVICES, item_text, frozenset(), memo)
            if item is None or item.service is None:
                return None
            services.append(item.service)
            if item.in_catalog is not None:
                in_catalog.append(item.in_catalog)
            nodes += item.nodes
        names = [entry.policy.name for entry in services]
        declared = frozenset(names)
        if len(declared) != len(names):
            return None  # a duplicate service name
        listeners: list[ListenerPolicy] = []
        for item_text in split.listeners or ():
            item = self._item(LISTENERS, item_text, declared, memo)
            if item is None or item.listener is None:
                return None
            listeners.append(item.listener)
            nodes += item.nodes
        nodes += (split.services is not None) + (split.listeners is not None)  # the two sequences
        if nodes > node_budget() or not _consistent([e.policy for e in services], listeners):
            return None
        self._set_memo(memo)
        catalog = Catalog(tuple(in_catalog))
        policy = Policy(tuple(entry.policy for entry in services), tuple(listeners), origin=self._where)
        return catalog, policy

    def _item(self, key: str, text: str, declared: frozenset[str],
              memo: dict[tuple[str, str, frozenset[str]], _Item]) -> _Item | None:
        # A service does not depend on the other services' names; only listeners name them.
        memo_key = (key, text, declared)
        found = memo.get(memo_key) or self._memo.get(memo_key)
        if found is not None:
            self.reused += 1
            memo[memo_key] = found
            return found
        self.walked += 1
        report = document.Report(self._where)
        root = document.compose(f"{key}:\n{text}", report, max_nodes=node_budget())
        if root is None or report.problems:
            return None
        try:
            entries, policy = walk(report, root, endpoint_source=self._source, declared=declared)
        except PolicyError:
            return None
        if key == SERVICES and len(entries) == 1:
            item = _service_item(entries[0], _count(root) - 2)
        elif key == LISTENERS and len(policy.listeners) == 1:
            item = _Item(None, policy.listeners[0], _count(root) - 2)
        else:
            return None
        memo[memo_key] = item
        return item


def _consistent(services: list[ServicePolicy], listeners: list[ListenerPolicy]) -> bool:
    """The checks between items of the full walk (walker.py `document` and `_listeners`) all pass."""
    names = [listener.name for listener in listeners]
    if len(set(names)) != len(names) or find_port_conflicts(listeners):
        return False
    return not (_any(grpc_lb_problems(services, listeners)) or _any(grpc_retry_problems(listeners)))


def _any(problems: Iterable[object]) -> bool:
    return next(iter(problems), None) is not None
