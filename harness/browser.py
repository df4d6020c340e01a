"""A real headless browser for the web console's tests (docs/console.md, issue 14 item 1).

Debian's `chromium` (`make browser-tools` installs it), run once per look: `--dump-dom` prints the DOM as the
page's own script left it once the virtual-time budget ran out (so its fetches and timers have run), and
`--screenshot` writes a PNG. A fresh profile directory per run keeps runs independent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser")
RUN_TIMEOUT_S = 20.0


class BrowserError(RuntimeError):
    """The browser is missing or a run failed; the message says which and how."""


def find_browser() -> str:
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no chromium on PATH: run `make browser-tools` (Debian: apt-get install chromium)")


def _run(args: list[str], *, timeout_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="xds-chromium-") as profile:
        # --no-sandbox: the tests run as root in CI containers, where Chromium's sandbox refuses to start;
        # the page is our own console on loopback.
        command = [find_browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
                   f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                                  env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"chromium did not finish within {timeout_s} s: {' '.join(args)}") from exc
    if done.returncode != 0:
        raise BrowserError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str, *, budget_ms: int = 2000, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """The page's DOM as HTML after `budget_ms` of virtual time (its script has fetched and rendered)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout_s=timeout_s)


def screenshot(url: str, path: Path, *, width: int = 1280, height: int = 1100, budget_ms: int = 2000,
               timeout_s: float = RUN_TIMEOUT_S) -> Path:
    """A PNG of the page at `path`, after `budget_ms` of virtual time."""
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}",
          f"--screenshot={path}", url], timeout_s=timeout_s)
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot at {path}")
    return path


class _Collector(HTMLParser):
    """Every element of a document with its attributes and the text inside it (descendants included)."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                      "track", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[Element] = []
        self._open: list[tuple[str, dict[str, str], list[str], list[Element]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            self.found.append(Element(tag, {k: v or "" for k, v in attrs}, ""))
            return
        self._open.append((tag, {k: v or "" for k, v in attrs}, [], []))

    def handle_data(self, data: str) -> None:
        for _, _, texts, _ in self._open:
            texts.append(data)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, attrs, texts, _ = self._open.pop()
            self.found.append(Element(name, attrs, "".join(texts)))
            if name == tag:
                return


@dataclass(frozen=True, slots=True)
class Element:
    tag: str
    attrs: dict[str, str]
    text: str

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


def elements(html: str, *, tag: str | None = None, **attrs: str) -> list[Element]:
    """The elements of `html` with `tag` (any if None) whose attributes include `attrs` (data_node= means
    data-node=); a `class_` value must be one of the element's classes. In document order of their ends."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
    out = []
    for element in collector.found:
        if tag is not None and element.tag != tag:
            continue
        if all((v in element.classes) if k == "class" else element.attrs.get(k) == v
               for k, v in wanted.items()):
            out.append(element)
    return out
