"""Helpers the framework integrations share. Imports no framework."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from ..errors import SecretValidationError
from ..extension import SecretsExtension
from ..resolver import ON_MISSING, OnMissing, Resolver

__all__ = ["ConfigSource", "add_secrets", "as_on_missing", "load_resolver"]

EXTENSION = "jinja_apsecrets.SecretsExtension"

#: What an integration accepts as configuration: a ready resolver, a config
#: file path, or a mapping of the config file's shape.
ConfigSource = Resolver | str | os.PathLike[str] | Mapping[str, Any]


def load_resolver(source: ConfigSource, base: str | os.PathLike[str] | None = None) -> Resolver:
    """``source`` as a resolver; a relative config path is taken relative to ``base``."""
    if isinstance(source, Resolver):
        return source
    if isinstance(source, Mapping):
        return Resolver.from_config(source)
    path = Path(source).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return Resolver.from_config(path)


def as_on_missing(value: object, where: str) -> OnMissing | None:
    """Check an ``on_missing`` setting read from framework configuration."""
    if value is None or value in ON_MISSING:
        return value  # type: ignore[return-value]
    raise SecretValidationError(
        f"{where}: on_missing must be one of {', '.join(ON_MISSING)}, got {value!r}"
    )


def add_secrets(
    env: jinja2.Environment, resolver: Resolver, on_missing: OnMissing | None = None
) -> jinja2.Environment:
    """Add the extension to ``env`` (once) and install ``resolver`` on it."""
    if SecretsExtension.identifier not in env.extensions:
        env.add_extension(EXTENSION)
    env.install_secret_resolver(resolver, on_missing=on_missing)  # type: ignore[attr-defined]
    return env
