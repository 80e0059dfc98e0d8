"""A JSON Schema of ``apsecrets.yaml``, for editors and CI.

The shipped file, ``apsecrets.schema.json`` beside this module, is built by
:func:`build_schema` from the configuration's own rules (:mod:`..config`) and
the built-in providers' typed :attr:`~jinja_apsecrets.providers.base.Provider.fields`,
so a field added to a provider shows up in editors once the file is rebuilt
(``python -m jinja_apsecrets.schema > jinja_apsecrets/schema/apsecrets.schema.json``;
a test fails while it is stale).

Editors using the YAML language server (VS Code's YAML extension, and others)
pick it up from a first line such as::

    # yaml-language-server: $schema=../jinja_apsecrets/schema/apsecrets.schema.json

The schema describes the file as written: ``${VAR}`` placeholders and
``enc:v1:`` values are strings; a connection named after a provider id may
leave ``provider`` out; a provider that is not built in (a plugin) is
accepted with any fields. The loader stays the authority: it also checks what
a schema cannot (an ``${VAR}`` that is not set, a wrong master key).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..providers import _BUILTIN, get_provider_class
from ..providers.base import Field

__all__ = ["BUILTIN_PROVIDERS", "FILE_NAME", "build_schema", "dumps", "load_schema"]

FILE_NAME = "apsecrets.schema.json"

#: The providers this package ships (plugins are not described): the registry's own list.
BUILTIN_PROVIDERS = tuple(_BUILTIN)

_JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
}
_SECONDS = {"type": "number", "minimum": 0}


def load_schema() -> dict[str, Any]:
    """The shipped schema."""
    text = resources.files(__name__).joinpath(FILE_NAME).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _field(spec: Field) -> dict[str, Any]:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    names = [_JSON_TYPES[t] for t in types]
    if "number" in names and "integer" in names:
        names.remove("integer")
    if not spec.required:
        names.append("null")  # an empty value (or an empty ${VAR}) counts as not given
    out: dict[str, Any] = {"type": names[0] if len(names) == 1 else names}
    doc = spec.doc
    if spec.secret:
        doc = (doc + ". " if doc else "") + "A credential: write ${ENV_VAR} or an enc:v1: value"
    if doc:
        out["description"] = doc
    if spec.choices:
        out["enum"] = [*spec.choices, *([None] if not spec.required else [])]
    if spec.default is not None:
        out["default"] = spec.default
    return out


def _provider(provider_id: str) -> dict[str, Any]:
    cls = get_provider_class(provider_id)
    properties: dict[str, Any] = {
        "provider": {"const": provider_id},
        "ttl": {**_SECONDS, "description": "cache lifetime of this connection's secrets"},
        "concurrency": {
            "type": "integer",
            "minimum": 1,
            "description": "fetches at once on this connection",
        },
    }
    properties.update({name: _field(spec) for name, spec in cls.fields.items()})
    out: dict[str, Any] = {
        "type": "object",
        "description": f"a {provider_id} connection",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [name for name, spec in cls.fields.items() if spec.required]
    if required:
        out["required"] = required
    return out


def build_schema() -> dict[str, Any]:
    """The schema, from the config rules and the built-in providers' fields."""
    defs: dict[str, Any] = {f"provider-{p}": _provider(p) for p in BUILTIN_PROVIDERS}
    defs["connection"] = {
        "type": "object",
        "description": "a connection: provider and its settings",
        "required": ["provider"],
        "properties": {
            "provider": {
                "type": "string",
                "description": "provider id: " + ", ".join(BUILTIN_PROVIDERS) + " or a plugin's",
            }
        },
        "allOf": [
            {
                "if": {"properties": {"provider": {"const": p}}, "required": ["provider"]},
                "then": {"$ref": f"#/$defs/provider-{p}"},
            }
            for p in BUILTIN_PROVIDERS
        ],
    }
    named = {
        p: {
            "description": f"a connection named {p}: provider defaults to {p}",
            "if": {"type": "object", "required": ["provider"]},
            "then": {"$ref": "#/$defs/connection"},
            "else": {
                "anyOf": [{"type": "null"}, {"$ref": f"#/$defs/provider-{p}"}],
            },
        }
        for p in BUILTIN_PROVIDERS
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "jinja-apsecrets configuration (apsecrets.yaml)",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cache": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "ttl": {
                        **_SECONDS,
                        "default": 300,
                        "description": "seconds a secret is cached",
                    },
                    "connection_ttl": {
                        **_SECONDS,
                        "default": 30,
                        "description": "seconds a connection's status is cached",
                    },
                    "stale_if_error": {
                        **_SECONDS,
                        "default": 0,
                        "description": "seconds an expired value may still be used "
                        "while its backend cannot be reached",
                    },
                },
            },
            "connections": {
                "type": ["object", "null"],
                "description": "connections by name; references name them: <<NAME|ap_sep_v1|path>>",
                "propertyNames": {"pattern": "^[A-Za-z0-9_.-]+$"},
                "properties": named,
                "additionalProperties": {"$ref": "#/$defs/connection"},
            },
            "policy": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "allow": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "references allowed, as 'connection:path-glob'",
                    }
                },
            },
            "on_missing": {
                "enum": ["error", "undefined", "keep"],
                "default": "error",
                "description": "what a missing secret does: fail, print nothing, or keep the "
                "reference as written",
            },
        },
        "$defs": defs,
    }


def dumps() -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"
