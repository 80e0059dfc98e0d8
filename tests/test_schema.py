"""The JSON Schema of ``apsecrets.yaml``: shipped, current, and in agreement
with the loader on the example configs and on typical mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from jinja_apsecrets.config import _parse_yaml, load_config
from jinja_apsecrets.errors import SecretValidationError
from jinja_apsecrets.providers import _BUILTIN
from jinja_apsecrets.schema import dumps, load_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "jinja_apsecrets" / "schema" / "apsecrets.schema.json"
EXAMPLE_CONFIGS = sorted((ROOT / "examples").rglob("apsecrets*.yaml"))


def errors(config: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(load_schema())
    return [e.message for e in validator.iter_errors(config)]


def test_the_shipped_schema_is_current() -> None:
    # Rebuild with: python -m jinja_apsecrets.schema > jinja_apsecrets/schema/apsecrets.schema.json
    assert SCHEMA_FILE.read_text() == dumps()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_there_are_example_configs() -> None:
    assert len(EXAMPLE_CONFIGS) >= 6


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_validates(path: Path) -> None:
    assert errors(_parse_yaml(path.read_text())) == []


def test_editors_find_it_from_the_comment_line() -> None:
    first = (ROOT / "examples" / "kubernetes" / "apsecrets.yaml").read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    target = (ROOT / "examples" / "kubernetes" / first.removeprefix(prefix)).resolve()
    assert target == SCHEMA_FILE
    assert prefix in (ROOT / "README.md").read_text()


GOOD = [
    {"connections": {"env": None, "local": {"provider": "file", "path": "s.yaml"}}},
    {"connections": {"aws": {"region": "${AWS_REGION:-us-east-1}", "connectTimeout": 2}}},
    {
        "connections": {
            "vault-a": {
                "provider": "hashicorp",
                "url": "http://x",
                "token": "${NOT_SET_ANYWHERE:-}",
            }
        }
    },
    {"cache": {"ttl": 60}, "policy": {"allow": ["aws:prod/*"]}, "on_missing": "keep"},
    {"connections": {"params": {"provider": "aws-ssm", "region": "eu-west-1"}}},
]
BAD = [
    {"conections": {}},
    {"connections": {"aws": {"regoin": "us-east-1"}}},
    {"connections": {"db": {"provider": "aws", "maxAttempts": "3"}}},
    {"connections": {"conj": {"provider": "cyberark-conjur", "url": "https://c"}}},
    {"connections": {"local": {"path": "s.yaml"}}},
    {"connections": {"bad name!": {"provider": "env"}}},
    {"cache": {"ttl": -1}},
    {"on_missing": "ignore"},
    {"connections": {"f": {"provider": "file", "path": "s", "format": "toml"}}},
]


@pytest.mark.parametrize("config", GOOD)
def test_the_loader_and_the_schema_accept(config: dict[str, Any]) -> None:
    assert errors(config) == []
    load_config(config)


@pytest.mark.parametrize("config", BAD)
def test_the_loader_and_the_schema_reject(config: dict[str, Any]) -> None:
    assert errors(config) != []
    with pytest.raises(SecretValidationError):
        load_config(config)


def test_every_built_in_provider_is_described() -> None:
    defs = load_schema()["$defs"]
    assert {name.removeprefix("provider-") for name in defs if name.startswith("provider-")} == set(
        _BUILTIN
    )


def test_a_plugin_provider_is_not_described() -> None:
    assert errors({"connections": {"x": {"provider": "my-plugin", "anything": 1}}}) == []


def test_fields_carry_their_docs() -> None:
    aws = load_schema()["$defs"]["provider-aws"]["properties"]
    assert "region" in aws["region"]["description"]
    assert "${ENV_VAR}" in aws["secretAccessKey"]["description"]
    assert yaml.safe_dump(aws)  # plain data
