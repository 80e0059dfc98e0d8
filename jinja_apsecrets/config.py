"""YAML configuration: connections, cache lifetimes, policy.

The shape (field names are the spec's)::

    cache: {ttl: 300, connection_ttl: 30}
    connections:
      aws: {provider: aws, region: us-east-1, accessKeyId: ${AWS_ACCESS_KEY_ID}}
      local: {provider: file, path: secrets.yaml}
    policy: {allow: ["aws:prod/*"]}
    on_missing: error

``provider`` defaults to the connection's name. String values may use
``${VAR}`` and ``${VAR:-default}`` (``$${`` is a literal ``${``); an empty
result counts as not given, so SDK credential chains still apply. Values of the
form ``enc:v1:...`` are decrypted with ``APSECRETS_MASTER_KEY``. Relative file
paths are taken relative to the config file. Every error names the file, the
field and what was expected, with the code ``VALIDATION``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from .errors import SecretsError, SecretValidationError
from .providers import available_providers, get_provider_class
from .reference import validate_connection_name

__all__ = ["Config", "ConnectionSpec", "find_config", "interpolate", "load_config"]

_TOP_LEVEL = {"cache", "connections", "policy", "on_missing"}
_CACHE_FIELDS = {"ttl", "connection_ttl", "stale_if_error"}
_COMMON_FIELDS = {"provider", "ttl", "concurrency"}
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


@dataclass(frozen=True)
class ConnectionSpec:
    """One connection as configured (after interpolation and validation)."""

    provider: str
    options: Mapping[str, Any]
    ttl: float | None = None
    concurrency: int | None = None

    def __repr__(self) -> str:  # options may hold credentials
        return f"ConnectionSpec(provider={self.provider!r}, fields={sorted(self.options)!r})"


@dataclass
class Config:
    """A loaded configuration."""

    ttl: float = 300.0
    connection_ttl: float = 30.0
    stale_if_error: float = 0.0
    connections: dict[str, ConnectionSpec] = field(default_factory=dict)
    policy: list[str] | None = None
    on_missing: str = "error"
    origin: str = "<config>"

    def resolver_options(self) -> dict[str, Any]:
        return {
            "ttl": self.ttl,
            "connection_ttl": self.connection_ttl,
            "stale_if_error": self.stale_if_error,
            "policy": self.policy,
            "on_missing": self.on_missing,
        }


def find_config(explicit: str | PathLike[str] | None = None) -> Path | None:
    """The config file to use: ``explicit``, ``$APSECRETS_CONFIG``, ``./apsecrets.yaml``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("APSECRETS_CONFIG")
    if env:
        return Path(env)
    local = Path("apsecrets.yaml")
    return local if local.exists() else None


def interpolate(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``."""
    env = os.environ if environ is None else environ

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise SecretValidationError(
            f"{where}: environment variable {name} is not set "
            f"(write ${{{name}:-}} to make it optional)"
        )

    return _VAR.sub(repl, value)


# A whole scalar that is one placeholder, as in ``{accessKeyId: ${AWS_ACCESS_KEY_ID}}``.
_BARE_VAR = re.compile(
    r"(?P<pre>(?:^|[:,\[{]|-)[ \t]+)(?P<var>\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}\n\"']*)?\})"
    r"(?=[ \t]*(?:[,}\]#]|$))",
    re.M,
)


def _parse_yaml(text: str) -> Any:
    """Parse YAML; a bare ``${VAR}`` in a flow mapping is not valid YAML, so on
    failure retry with such placeholders quoted (they are expanded after parsing)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        if "${" not in text:
            raise
        quoted = _BARE_VAR.sub(lambda m: f'{m.group("pre")}"{m.group("var")}"', text)
        if quoted == text:
            raise
        try:
            return yaml.safe_load(quoted)
        except yaml.YAMLError:
            pass
        raise


def _fail(origin: str, where: str, message: str) -> SecretValidationError:
    return SecretValidationError(f"{origin}: {where}: {message}")


def _number(origin: str, where: str, value: Any, *, integer: bool = False) -> float:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
        expected = "a whole number" if integer else "a number of seconds"
        raise _fail(origin, where, f"expected {expected} >= 0, got {value!r}")
    return float(value)


def _expand(origin: str, where: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            text = interpolate(value, where)
        except SecretsError as exc:
            raise SecretValidationError(f"{origin}: {exc.message}") from None
        if text.startswith("enc:v1:"):
            from .crypto import decrypt_value

            return decrypt_value(text, where=f"{origin}: {where}")
        return text
    if isinstance(value, Mapping):
        return {k: _expand(origin, f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(origin, f"{where}[{i}]", v) for i, v in enumerate(value)]
    return value


def load_config(source: str | PathLike[str] | Mapping[str, Any]) -> Config:
    """Load and validate a configuration from a YAML file or a mapping."""
    base: Path | None = None
    if isinstance(source, Mapping):
        data: Any = source
        origin = "<config>"
    else:
        path = Path(source)
        origin = str(path)
        base = path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretValidationError(f"{origin}: config file not found") from None
        except OSError as exc:
            raise SecretValidationError(
                f"{origin}: cannot read config file: {exc.strerror}"
            ) from None
        try:
            data = _parse_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise SecretValidationError(f"{origin}: {problem}{where}") from None
        if data is None:
            data = {}
    if not isinstance(data, Mapping):
        raise _fail(origin, "top level", "expected a mapping with connections")
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise _fail(
            origin,
            ", ".join(unknown),
            f"unknown field; known fields: {', '.join(sorted(_TOP_LEVEL))}",
        )
    config = Config(origin=origin)

    cache = data.get("cache") or {}
    if not isinstance(cache, Mapping):
        raise _fail(origin, "cache", "expected a mapping with ttl and connection_ttl")
    for key in sorted(set(cache) - _CACHE_FIELDS):
        known = ", ".join(sorted(_CACHE_FIELDS))
        raise _fail(origin, f"cache.{key}", f"unknown field; known fields: {known}")
    if "ttl" in cache:
        config.ttl = _number(origin, "cache.ttl", cache["ttl"])
    if "connection_ttl" in cache:
        config.connection_ttl = _number(origin, "cache.connection_ttl", cache["connection_ttl"])
    if "stale_if_error" in cache:
        config.stale_if_error = _number(origin, "cache.stale_if_error", cache["stale_if_error"])

    policy = data.get("policy")
    if policy is not None:
        allow = policy.get("allow") if isinstance(policy, Mapping) else None
        if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
            raise _fail(origin, "policy.allow", "expected a list of 'connection:path-glob' strings")
        config.policy = list(allow)

    on_missing = data.get("on_missing", "error")
    if on_missing not in ("error", "undefined", "keep"):
        raise _fail(origin, "on_missing", f"expected error, undefined or keep, got {on_missing!r}")
    config.on_missing = on_missing

    connections = data.get("connections") or {}
    if not isinstance(connections, Mapping):
        raise _fail(origin, "connections", "expected a mapping of connection names to settings")
    for name, raw in connections.items():
        config.connections[str(name)] = _connection(origin, base, str(name), raw)
    return config


def _connection(origin: str, base: Path | None, name: str, raw: Any) -> ConnectionSpec:
    where = f"connections.{name}"
    try:
        validate_connection_name(name)
    except SecretsError as exc:
        raise _fail(origin, where, exc.message) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(origin, where, "expected a mapping of settings")
    provider_id = raw.get("provider", name)
    if not isinstance(provider_id, str):
        raise _fail(origin, f"{where}.provider", "expected a provider id")
    try:
        cls = get_provider_class(provider_id)
    except SecretsError as exc:
        if provider_id not in available_providers() and "provider" not in raw:
            raise _fail(
                origin,
                where,
                f"no provider given and {name!r} is not a provider id; "
                f"add provider: one of {', '.join(available_providers())}",
            ) from None
        raise _fail(origin, f"{where}.provider", exc.message) from None
    ttl = raw.get("ttl")
    concurrency = raw.get("concurrency")
    spec_ttl = None if ttl is None else _number(origin, f"{where}.ttl", ttl)
    spec_conc = None
    if concurrency is not None:
        spec_conc = int(_number(origin, f"{where}.concurrency", concurrency, integer=True))
        if spec_conc < 1:
            raise _fail(origin, f"{where}.concurrency", "expected at least 1")
    options = {k: v for k, v in raw.items() if k not in _COMMON_FIELDS}
    options = _expand(origin, where, options)
    options = {k: (None if v == "" else v) for k, v in options.items()}
    for key, spec in cls.fields.items():
        value = options.get(key)
        if spec.is_path and isinstance(value, str) and base is not None:
            candidate = Path(value).expanduser()
            if not candidate.is_absolute():
                options[key] = str(base / candidate)
    try:
        options = cls.validate_options(name, options)
    except SecretsError as exc:
        raise SecretValidationError(f"{origin}: {exc.message}", provider=name) from None
    return ConnectionSpec(provider_id, options, spec_ttl, spec_conc)
