"""The live ANSI view, or plain lines for logs and pipes."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from harness.demo.catalog import Edge, weights_label
from harness.demo.constants import BAR_WIDTH, PLAIN_EVERY_S, WINDOW_S, Weights
from harness.demo.envoys import AppliedRoute


@dataclass(frozen=True, slots=True)
class EnvoyStatus:
    edge: Edge
    admin_url: str
    applied: AppliedRoute | None
    served_version: str | None  # the control plane's RDS version for the Envoy's group
    target: Weights
    web: Counter[str]  # upstream -> answered `/` requests in the window
    web_total: int
    api_ok: int
    api_total: int
    non_2xx: int  # whole run
    errors: int  # whole run


@dataclass(frozen=True, slots=True)
class Frame:
    elapsed_s: float
    phase_line: str
    status_line: str
    envoys: tuple[EnvoyStatus, ...]
    footer: tuple[str, ...]
    events: tuple[str, ...]


def _short(version: str | None) -> str:
    return "-" if not version else version[:8]


def _share(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def _bar(percent: float, *, fill: str, empty: str) -> str:
    filled = round(BAR_WIDTH * percent / 100.0)
    return fill * filled + empty * (BAR_WIDTH - filled)


def _applied_version(status: EnvoyStatus) -> str:
    return _short(status.applied.version if status.applied else None)


def _sync_text(status: EnvoyStatus) -> str:
    applied = status.applied.version if status.applied else None
    if applied is None or status.served_version is None:
        return "?"
    return "in sync" if applied == status.served_version else "behind"


def format_frame(frame: Frame, *, unicode_ok: bool) -> list[str]:
    """The full-screen view: one block per Envoy, one bar per upstream; lines kept within 80 columns."""
    fill, empty = ("\u2588", "\u2591") if unicode_ok else ("#", ".")
    lines = [f"xds demo: canary of web v1 -> v2      t = {frame.elapsed_s:6.1f} s      Ctrl-C stops",
             frame.phase_line, ""]
    for s in frame.envoys:
        applied_w = "/".join(str(w) for w in s.applied.weights) if s.applied else "-"
        lines += [
            f"{s.edge.envoy}  group {s.edge.group}  serving {s.edge.url}/",
            f"  route version {_applied_version(s)}   control plane serves {_short(s.served_version)}"
            f"   {_sync_text(s)}",
            f"  web weights: target {weights_label(s.target)}, Envoy runs {applied_w}",
            f"  last {WINDOW_S:g} s: {s.web_total + s.api_total} requests   "
            f"non-2xx {s.non_2xx}   errors {s.errors} (whole run)",
        ]
        for index, name in enumerate(("web-v1", "web-v2")):
            pct = _share(s.web[name], s.web_total)
            path = "/   " if index == 0 else "    "
            lines.append(f"  {path} {name:<7} {_bar(pct, fill=fill, empty=empty)} {pct:5.1f}%"
                         f"  target {s.target[index]:3d}%")
        pct = _share(s.api_ok, s.api_total)
        lines += [f"  /api {'api':<7} {_bar(pct, fill=fill, empty=empty)} {pct:5.1f}%", ""]
    lines += [f"status: {frame.status_line}", "", *frame.footer]
    if frame.events:
        lines += ["", "events:", *(f"  {e}" for e in frame.events)]
    return lines


def fit_to_terminal(lines: Sequence[str], size: os.terminal_size) -> list[str]:
    """Cut lines to the terminal: a wrapped or scrolled line would break redrawing in place."""
    return [line[: max(1, size.columns - 1)] for line in lines[: max(1, size.lines - 1)]]


def format_plain_status(frame: Frame) -> list[str]:
    """One line per Envoy, for logs and pipes."""
    lines = []
    for s in frame.envoys:
        v1, v2 = (_share(s.web[n], s.web_total) for n in ("web-v1", "web-v2"))
        lines.append(
            f"[{frame.elapsed_s:7.1f}s] {s.edge.envoy}  target {weights_label(s.target):>6}  "
            f"last {WINDOW_S:g}s: web-v1 {v1:5.1f}% web-v2 {v2:5.1f}% ({s.web_total} req) "
            f"api {s.api_total} req  non-2xx {s.non_2xx}  errors {s.errors}  "
            f"rds {_applied_version(s)} cp {_short(s.served_version)} ({_sync_text(s)})")
    return lines


class Screen:
    """A live ANSI view redrawn in place, or plain lines (when asked, or when stdout is no terminal)."""

    def __init__(self, out: TextIO, *, plain: bool) -> None:
        self.out = out
        self.live = not plain and out.isatty()
        encoding = (getattr(out, "encoding", None) or "").lower()
        self._unicode_ok = encoding.replace("-", "") == "utf8"
        self._next_plain_at = 0.0
        self._events: list[str] = []
        self._started = False

    def message(self, text: str) -> None:
        """Something that happened: printed at once in plain mode, kept under the live view otherwise."""
        if self.live and self._started:
            self._events = [*self._events[-7:], text]
        else:
            self._write(text + "\n")

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self._events)

    def draw(self, frame: Frame) -> None:
        if self.live:
            if not self._started:
                # Clear once and hide the cursor; later frames overwrite in place, which does not flicker.
                self._write("\x1b[?25l\x1b[2J")
                self._started = True
            lines = fit_to_terminal(format_frame(frame, unicode_ok=self._unicode_ok),
                                    shutil.get_terminal_size())
            self._write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        elif time.monotonic() >= self._next_plain_at:
            self._next_plain_at = time.monotonic() + PLAIN_EVERY_S
            self._write("".join(f"{line}\n" for line in format_plain_status(frame)))

    def close(self) -> None:
        if self.live and self._started:
            self._write("\x1b[?25h\n")
            self._started = False

    def _write(self, text: str) -> None:
        # A closed or broken stdout (the reader of a pipe went away) must not stop the cleanup.
        with contextlib.suppress(OSError, ValueError):
            self.out.write(text)
            self.out.flush()

