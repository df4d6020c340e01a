"""Shared by the tests of per-service policy keys: one service `web` with the settings under test."""

from __future__ import annotations

import textwrap

import pytest

from xds.policy.errors import PolicyError
from xds.policy.load import parse_document
from xds.policy.schema import ServicePolicy


def service_document(settings: str) -> str:
    """A catalog file whose only service, `web`, carries `settings` (YAML lines, any indentation)."""
    body = textwrap.indent(textwrap.dedent(settings).strip("\n"), "    ")
    return f"services:\n  - name: web\n{body}\n"


def loaded_service(settings: str) -> ServicePolicy:
    _, policy = parse_document(service_document(settings), where="c.yaml")
    return policy.services[0]


def service_problems(settings: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_document(service_document(settings), where="c.yaml")
    return [str(p) for p in info.value.problems]
