"""Errors raised by policy loading: every problem in a document, each with where it is.

A rejected document should be fixable in one edit, so loaders collect all problems instead of stopping at
the first, and each one names the file (or KV key), the line and column when known, and the YAML path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document. `line` and `column` are 1-based; None when the input had no
    positions (a document that was already parsed, such as a Kubernetes object)."""

    where: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.where}: {self.message}"
        if self.column is None:
            return f"{self.where}:{self.line}: {self.message}"
        return f"{self.where}:{self.line}:{self.column}: {self.message}"


class PolicyError(Exception):
    """A document (or a combination of documents) was rejected; `problems` says why, in document order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("PolicyError needs at least one problem")
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def __str__(self) -> str:
        return self.render()
