"""`xds schema --format json-schema` against a real JSON Schema validator and the loader.

The JSON Schema is what editors and YAML language servers use to complete and check catalog files, so it
must accept every document the loader accepts (an editor must never flag a valid file) and should reject
what it can express of what the loader rejects. Both the file format (with endpoints) and the policy-only
form are checked.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_policy_openapi import ACCEPTED, EVERY_KEY, LOADER_ONLY, REJECTED
from xds.cli import main
from xds.policy.errors import PolicyError
from xds.policy.load import parse_document, policy_from_data
from xds.policy.schemagen import json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "catalog.yaml"

FILE_SCHEMA = jsonschema.Draft202012Validator(json_schema())
POLICY_SCHEMA = jsonschema.Draft202012Validator(json_schema(file_format=False))


def _errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_schemas_are_valid_json_schema() -> None:
    for schema in (json_schema(), json_schema(file_format=False)):
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_example_catalog_validates() -> None:
    text = EXAMPLE.read_text()
    parse_document(text, where=str(EXAMPLE))  # the premise: the loader accepts it
    assert _errors(FILE_SCHEMA, yaml.safe_load(text)) == []


def test_a_known_bad_catalog_is_rejected_where_the_loader_rejects_it() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["services"][0]["prot"] = "http2"  # misspelt key
    document["services"][0]["lb_policy"] = "fastest"
    document["services"][0]["endpoints"][0]["address"] = "127.0.0.1"  # no port
    document["listeners"][0]["port"] = 0
    with pytest.raises(PolicyError) as raised:
        parse_document(yaml.safe_dump(document), where="bad.yaml")
    assert len(raised.value.problems) == 4
    errors = _errors(FILE_SCHEMA, document)
    assert any("'prot' was unexpected" in e for e in errors), errors
    assert any(e.startswith("services.0.lb_policy:") for e in errors), errors
    assert any(e.startswith("services.0.endpoints.0.address:") for e in errors), errors
    assert any(e.startswith("listeners.0.port:") for e in errors), errors


@pytest.mark.parametrize(("name", "document"), ACCEPTED, ids=[n for n, _ in ACCEPTED])
def test_policy_documents_the_loader_accepts_validate(name: str, document: Any) -> None:
    policy_from_data(document, where=name)
    assert _errors(POLICY_SCHEMA, document) == []
    assert _errors(FILE_SCHEMA, document) == []  # a policy-only document is a valid file without endpoints


# Unique service and listener names are Kubernetes list-map rules, which JSON Schema cannot say.
_REJECTED = [(n, d) for n, d in REJECTED if n not in ("duplicate service names", "duplicate listener names")]


@pytest.mark.parametrize(("name", "document"), _REJECTED, ids=[n for n, _ in _REJECTED])
def test_policy_documents_the_loader_rejects_are_rejected(name: str, document: Any) -> None:
    with pytest.raises(PolicyError):
        policy_from_data(document, where=name)
    assert _errors(POLICY_SCHEMA, document) != []


def test_rules_json_schema_adds_over_openapi() -> None:
    # JSON Schema can check subset keys (propertyNames), which OpenAPI cannot (LOADER_ONLY there).
    name, document = next((n, d) for n, d in LOADER_ONLY if n == "subset key with a comma")
    with pytest.raises(PolicyError):
        policy_from_data(document, where=name)
    assert _errors(POLICY_SCHEMA, document) != []


def test_endpoints_only_in_the_file_format() -> None:
    document = copy.deepcopy(EVERY_KEY)
    document["services"][0]["endpoints"] = [{"address": "10.0.0.1:80", "weight": 2, "health": "draining",
                                             "locality": {"zone": "a"}, "metadata": {"version": "v1"}}]
    assert _errors(FILE_SCHEMA, document) == []
    assert _errors(POLICY_SCHEMA, document) != []


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()
    assert main(["schema", "--format", "json-schema", "--policy-only"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema(file_format=False)
    assert main(["schema", "--format", "openapi"]) == 0
    assert "properties" in json.loads(capsys.readouterr().out)
    assert main(["schema", "--format", "crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "deploy" / "crd-trafficpolicy.yaml").read_text()
