"""Errors raised by policy loading: every problem in a document, each with where it is.

A rejected document should be fixable in one edit, so loaders collect all problems instead of stopping at
the first, and each one names the file (or KV key), the line and column when known, and the YAML path.

Problems quote the document (keys, values, the file name), and the document is untrusted: a terminal escape
in a key would otherwise reach the operator's terminal, and a newline would forge a second, unlocated
problem line. So the rendered text escapes every control character (issue 7), in one place: here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Besides C0, DEL and C1 (all below U+00A0): the Unicode line and paragraph separators, which some terminals
# and log viewers break lines at, and the bidirectional controls, which can make a printed line read
# differently from what it contains.
_EXTRA_UNSAFE = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")


def _unsafe(char: str) -> bool:
    code = ord(char)
    # Lone surrogates (from JSON such as "\ud800") cannot even be encoded for printing.
    return code < 0x20 or 0x7F <= code < 0xA0 or char in _EXTRA_UNSAFE or 0xD800 <= code <= 0xDFFF


def escape_control(text: str) -> str:
    """`text` with every control character written as a Python escape (`\\x1b`, `\\u2028`), so it prints
    as exactly one line and changes nothing on a terminal. Other text, also non-ASCII, is unchanged."""
    if text.isprintable() or not any(_unsafe(c) for c in text):
        return text
    out = []
    for char in text:
        if not _unsafe(char):
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document. `line` and `column` are 1-based; None when the input had no
    positions (a document that was already parsed, such as a Kubernetes object). `where` and `message`
    keep the raw text; `str()` escapes it."""

    where: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where, message = escape_control(self.where), escape_control(self.message)
        if self.line is None:
            return f"{where}: {message}"
        if self.column is None:
            return f"{where}:{self.line}: {message}"
        return f"{where}:{self.line}:{self.column}: {message}"


class PolicyError(Exception):
    """A document (or a combination of documents) was rejected; `problems` says why, in document order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("PolicyError needs at least one problem")
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem, each starting with its location."""
        return "\n".join(str(p) for p in self.problems)

    def __str__(self) -> str:
        return self.render()
