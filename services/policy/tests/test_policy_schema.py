"""The published JSON Schemas accept the example files, so editors can check policies with them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
POLICY_FILES = sorted((ROOT / "examples" / "policies").glob("*.yaml"))
TEST_FILES = sorted((ROOT / "examples" / "policies" / "tests").glob("*.yaml"))


def _as_json(path: Path) -> object:
    """The file as an editor's schema check sees it: YAML timestamps are strings in JSON."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=lambda v: v.isoformat()))


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "docs" / "schemas" / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_example_policy_files_match_the_published_schema(path: Path) -> None:
    errors = list(_validator("policy.json").iter_errors(_as_json(path)))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_example_policy_tests_match_the_published_schema(path: Path) -> None:
    errors = list(_validator("policy-tests.json").iter_errors(_as_json(path)))
    assert not errors, [e.message for e in errors]


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    validator = _validator("policy.json")
    assert list(validator.iter_errors({"rules": [{"name": "x", "outcome": "perhaps"}]}))
    assert list(validator.iter_errors({"rules": [{"name": "x", "outcome": "approve", "group": ["a"]}]}))
    assert list(
        validator.iter_errors({"rules": [{"name": "x", "outcome": "approve", "max_duration": "soon"}]})
    )
    assert not list(
        validator.iter_errors({"rules": [{"name": "x", "outcome": "approve", "max_duration": "1h30m"}]})
    )
