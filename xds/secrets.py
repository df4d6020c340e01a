"""Redaction of secrets from text that leaves the process: errors, log lines, /status, ListProxies.

Two nets (docs/security.md, "The management API and secrets"):

1. Known values. Every secret the process holds (the Consul ACL token, management bearer tokens, a
   Kubernetes bearer token) is registered once, when it is read, with `register_secret`. Any occurrence of
   it, raw or percent-encoded, is replaced by `[REDACTED]`, wherever it appears in the text: an upstream
   that echoes a request back in an error body cannot leak it.
2. Patterns, for secrets this process never saw (another client's token echoed by a proxy, a key in a
   catalog file): the value of an `Authorization`, `Proxy-Authorization`, `X-Consul-Token` or
   `X-Vault-Token` header, of a `token=` / `access_token=` query parameter, and whole PEM `PRIVATE KEY`
   blocks.

`redact` is applied where errors enter the process (the Consul and Kubernetes clients' exceptions, the file
source's messages, App.report_error) and again as a safety net in the log formatters and the admin /status
page (issue 9). The module is pure (`re` and `urllib.parse` only) so any layer may import it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"

# Shorter values are not registered: replacing every "abc" in every log line would make logs unreadable,
# and a three-character token protects nothing anyway.
MIN_REGISTERED_CHARS = 4
# Management bearer tokens are checked against this on load (check_token): shorter ones can be guessed.
MIN_TOKEN_CHARS = 16

_HEADER_NAMES = r"(?:proxy-)?authorization|x-consul-token|x-vault-token|x-api-key|cookie|set-cookie"
# A header as it appears in an echo (`Name: value`), a JSON or Python dict (`"Name": "value"`), or a
# key=value rendering. An optional auth scheme (Bearer, Basic, Token) is kept so the message still says
# which kind of credential was sent. Separator and scheme are atomic (no backtracking), so an already
# redacted value is left alone and redact() is idempotent.
_HEADER_RE = re.compile(
    rf"(?P<name>\b(?:{_HEADER_NAMES}))(?P<sep>(?>[\"']?\s*[:=]\s*\[?\s*[\"']?))"
    r"(?P<scheme>(?:bearer|basic|token|negotiate)\s+)?+(?!\[?REDACTED\])(?P<value>[^\s\"',;&}<>\]\\]+)",
    re.IGNORECASE)
_QUERY_RE = re.compile(
    r"(?P<name>[?&;\s\"']|^)(?P<key>(?:access_|refresh_|id_|auth_|api_)?token|password|secret)"
    r"(?P<sep>=)(?!\[?REDACTED\])(?P<value>[^&\s\"'#;<>\\]+)",
    re.IGNORECASE)
# DOTALL and a lazy body: a key inside a JSON string has its newlines escaped as `\n`, which this spans too.
# A block cut short (an error body truncated mid-key) is redacted up to the end of its string or line.
_PEM_RE = re.compile(r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY)-----"
                     r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[^\"'\n]*)", re.DOTALL)

# Every pattern above contains one of these words (lower case); a text without any of them only needs the
# known values. Substring tests on the lowered text: ten times faster than a case-insensitive regex.
_TRIGGERS = ("authoriz", "token", "cookie", "api-key", "password", "secret", "private key")

_lock = threading.Lock()
_known: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Remember `value` (and its percent-encoded forms) so that `redact` removes it from any text."""
    global _known
    if not value or len(value) < MIN_REGISTERED_CHARS:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    with _lock:
        # Longest first: a secret that contains another must be replaced whole.
        _known = tuple(sorted(set(_known) | forms, key=len, reverse=True))


def registered_count() -> int:
    """How many forms are registered (for tests and a startup log line; never the values)."""
    return len(_known)


def forget_all() -> None:
    """Drop every registered value (tests start from a clean registry)."""
    global _known
    with _lock:
        _known = ()


def redact(text: str) -> str:
    """`text` with every registered secret and every secret-looking pattern replaced by [REDACTED]."""
    if not text:
        return text
    lowered = text.lower()
    if not any(word in lowered for word in _TRIGGERS):
        # Most log lines name none of the patterns' keywords (a typical JSON log line then costs about 2
        # microseconds instead of 21).
        return _replace_known(text)
    text = _PEM_RE.sub(lambda m: f"-----BEGIN {m['kind']}-----{REDACTED}-----END {m['kind']}-----", text)
    text = _HEADER_RE.sub(lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}{REDACTED}", text)
    text = _QUERY_RE.sub(lambda m: f"{m['name']}{m['key']}{m['sep']}{REDACTED}", text)
    # Known values last: replacing them first would leave `Header: [REDACTED]` for the header pattern to
    # mangle; this way the patterns see the raw values and the registry catches the rest.
    return _replace_known(text)


def _replace_known(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_all(texts: Iterable[str]) -> list[str]:
    return [redact(t) for t in texts]


def redact_value(value: object) -> object:
    """A JSON-able structure with every string in it redacted (the admin /status page)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_mapping(value: Mapping[str, object]) -> dict[str, object]:
    return {k: redact_value(v) for k, v in value.items()}


def check_token(value: str, *, where: str) -> str:
    """A bearer token read from `where` (a file path or a variable name): stripped, one line, long enough.

    Raises ValueError naming `where`, never quoting the value.
    """
    token = value.strip()
    if not token:
        raise ValueError(f"{where}: the token is empty")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError(f"{where}: the token must be one line without spaces or control characters")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters; generate one "
                         "with e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token
