"""Structured logging: one JSON object per line, or a human line with the same fields.

Code logs a stable event name as the message and the details as `extra=` fields:

    log.warning("nack_received", extra={"node_id": ..., "type_url": ..., "version": ..., "nonce": ...})

so that log queries match on `event` and fields rather than on prose that changes between releases.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

from xds.secrets import redact

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Marks the handler configure_logging installed, so a second call replaces it instead of adding another.
_MARK = "_xds_handler"


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "event", **extra, "exc"?} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        # A field named like a fixed key must not overwrite it: the fixed keys are what queries rely on.
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # default=str: an extra that JSON cannot encode (a path, an enum) must not lose the whole line.
        # redact: the safety net for secrets that reached a log call unredacted (issue 9).
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class HumanFormatter(logging.Formatter):
    """`ts LEVEL logger event key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        # A string that a terminal could misread (spaces, control characters such as an escape sequence
        # from a client-supplied name) is printed as a quoted, escaped literal (issue 7).
        fields = " ".join(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v or not v.isprintable())
                          else f"{k}={v}" for k, v in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact(line)  # the safety net for secrets that reached a log call unredacted (issue 9)


def configure_logging(*, level: str = "INFO", json_format: bool = True, stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stderr by default) in the chosen format.

    Idempotent: calling it again replaces the handler it installed before (so the format or level can
    change) and leaves handlers installed by others, such as pytest's, alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else HumanFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
