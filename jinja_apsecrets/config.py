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
form ``enc:v2:...`` (bound to their field) or ``enc:v1:...`` are decrypted with
``APSECRETS_MASTER_KEY``; that key itself can never be expanded into a config.
Relative file paths are taken relative to the config file. Every error names
the file, the field and what was expected, with the code ``VALIDATION``.

Hostile or broken input fails fast: YAML aliases may add at most
:data:`ALIAS_BUDGET` nodes to a document (an alias bomb is rejected before
anything is expanded), recursive aliases are rejected, unknown fields are
rejected before values are expanded, a file that is not UTF-8 is an error, and
numbers must be finite (timeouts above 0).

Values that came from the environment or from decryption are *sensitive*: the
loader remembers them (see :mod:`.redaction`) and scrubs them out of every
error raised while validating, so a token moved into ``format:`` or a master
key expanded into ``region:`` is never printed.

``load_config(..., offline=True)`` is the same loader for offline checks
(``jinja-apsecrets refs``): ``${VAR}`` is not expanded and ``enc:`` values are
not decrypted; the fields holding them are listed in
:attr:`ConnectionSpec.unknown` and left unset, everything else is validated as
for a render, so a misspelled field is reported the same way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from .crypto import KEY_ENV, decrypt_value, is_encrypted
from .errors import SecretsError, SecretValidationError, yaml_problem
from .providers import available_providers, get_provider_class
from .providers.base import Provider
from .redaction import Redactor
from .reference import validate_connection_name

__all__ = [
    "ALIAS_BUDGET",
    "CONFIG_NAME",
    "Config",
    "ConnectionSpec",
    "find_config",
    "interpolate",
    "load_config",
    "safe_load",
    "safe_load_all",
]

#: The file name looked for beside templates and in the current folder.
CONFIG_NAME = "apsecrets.yaml"
#: How many nodes YAML aliases may add to a document, in all (a budget that
#: real configs and vars files never come near; an alias bomb exceeds it at once).
ALIAS_BUDGET = 10_000

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
    #: Offline loads only: fields whose value is known only online (``${VAR}``, ``enc:``).
    unknown: frozenset[str] = frozenset()

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
    offline: bool = False

    def resolver_options(self) -> dict[str, Any]:
        return {
            "ttl": self.ttl,
            "connection_ttl": self.connection_ttl,
            "stale_if_error": self.stale_if_error,
            "policy": self.policy,
            "on_missing": self.on_missing,
        }


def _repository_root(folder: Path) -> Path | None:
    """The nearest folder at or above ``folder`` holding ``.git``, if any."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _beside(sources: Sequence[str | PathLike[str]]) -> Iterator[Path]:
    """Candidate config files for templates ``sources``: in each template's
    folder (a folder source: that folder), then in each folder above it up to
    the repository root (none above it outside a repository)."""
    for source in sources:
        path = Path(source).absolute()
        folder = path if path.is_dir() else path.parent
        root = _repository_root(folder)
        for candidate in (folder, *folder.parents):
            yield candidate / CONFIG_NAME
            if root is None or candidate == root:
                break


def find_config(
    explicit: str | PathLike[str] | None = None,
    *,
    near: Sequence[str | PathLike[str]] = (),
) -> Path | None:
    """The config file to use: ``explicit``, ``$APSECRETS_CONFIG``, an
    ``apsecrets.yaml`` beside the templates ``near`` (then in the folders above
    them, up to the repository root), then ``./apsecrets.yaml``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("APSECRETS_CONFIG")
    if env:
        return Path(env)
    for candidate in _beside(near):
        if candidate.is_file():
            return Path(os.path.relpath(candidate)) if _under_cwd(candidate) else candidate
    local = Path(CONFIG_NAME)
    return local if local.exists() else None


def _under_cwd(path: Path) -> bool:
    try:
        path.relative_to(Path.cwd())
    except ValueError:
        return False
    return True


def interpolate(value: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``value``."""
    env = os.environ if environ is None else environ

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name == KEY_ENV:
            # The master key unlocks every enc: value: it never enters a config.
            raise SecretValidationError(
                f"{where}: ${{{KEY_ENV}}} cannot be used in a config (it is the key of enc: "
                "values; store the value encrypted instead)"
            )
        if name in env:
            master = env.get(KEY_ENV)
            if master and env[name].strip() == master.strip():
                # The same key under another name is refused just as well.
                raise SecretValidationError(
                    f"{where}: ${{{name}}} holds the value of {KEY_ENV}, which cannot be "
                    "used in a config"
                )
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


class _AliasError(yaml.MarkedYAMLError):
    """Too much expansion by aliases, or a recursive alias."""


def _check_aliases(root: yaml.Node, budget: int) -> None:
    """Reject ``root`` if its aliases expand it by more than ``budget`` nodes,
    or if an alias contains itself. Linear in the number of distinct nodes:
    each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    distinct: set[int] = set()
    open_: set[int] = set()
    # Iterative post-order walk (deep documents must not hit the recursion limit).
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = total
            if total - len(distinct) > budget:
                raise _AliasError(
                    problem=f"too many aliases: they would add more than {budget} nodes",
                    problem_mark=node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise _AliasError(problem="recursive alias", problem_mark=node.start_mark)
        distinct.add(key)
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                raise _AliasError(problem="recursive alias", problem_mark=child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str, *, budget: int = ALIAS_BUDGET) -> Any:
    """``yaml.safe_load`` that rejects alias bombs and recursive aliases
    (a :class:`yaml.MarkedYAMLError`) before constructing anything."""
    # libyaml's parser when PyYAML has it: several times faster on large files.
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, budget)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def safe_load_all(text: str, *, budget: int = ALIAS_BUDGET) -> list[Any]:
    """Every document of a multi-document stream, each checked as :func:`safe_load` checks one."""
    loader = _Loader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node() said one follows
            _check_aliases(node, budget)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def _parse_yaml(text: str) -> Any:
    """Parse YAML; a bare ``${VAR}`` in a flow mapping is not valid YAML, so on
    failure retry with such placeholders quoted (they are expanded after parsing)."""
    try:
        return safe_load(text)
    except _AliasError:
        raise
    except yaml.YAMLError:
        if "${" not in text:
            raise
        quoted = _BARE_VAR.sub(lambda m: f'{m.group("pre")}"{m.group("var")}"', text)
        if quoted == text:
            raise
        try:
            return safe_load(quoted)
        except _AliasError:
            raise
        except yaml.YAMLError:
            pass
        raise


def _fail(origin: str, where: str, message: str) -> SecretValidationError:
    return SecretValidationError(f"{origin}: {where}: {message}")


def _number(
    origin: str, where: str, value: Any, *, integer: bool = False, positive: bool = False
) -> float:
    kind = int if integer else (int, float)
    bad = isinstance(value, bool) or not isinstance(value, kind)
    if not bad and (not math.isfinite(value) or value < 0 or (positive and value == 0)):
        bad = True
    if bad:
        expected = "a whole number" if integer else "a number of seconds"
        bound = "> 0" if positive else ">= 0"
        shown = value if isinstance(value, (int, float)) else type(value).__name__
        raise _fail(origin, where, f"expected {expected} {bound}, got {shown!r}")
    return float(value)


class _Expansion:
    """Expands one file's values, remembering those that came from the
    environment or from decryption (see :meth:`scrub`)."""

    def __init__(self, origin: str, offline: bool) -> None:
        self.origin = origin
        self.offline = offline
        self.sensitive = Redactor()
        self.unknown: set[str] = set()

    def value(self, where: str, value: Any) -> Any:
        if isinstance(value, str):
            return self._text(where, value)
        if isinstance(value, Mapping):
            return {k: self.value(f"{where}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(f"{where}[{i}]", v) for i, v in enumerate(value)]
        return value

    def _text(self, where: str, value: str) -> Any:
        if self.offline:
            if _VAR.search(value.replace("$${", "")) or is_encrypted(value):
                self.unknown.add(where)
                return None
            return value.replace("$${", "${")
        try:
            text = interpolate(value, where)
        except SecretsError as exc:
            raise SecretValidationError(f"{self.origin}: {exc.message}") from None
        if text != value.replace("$${", "${"):
            self.sensitive.add(text)
        if is_encrypted(text):
            plain = decrypt_value(text, where=f"{self.origin}: {where}", field=where)
            self.sensitive.add(plain)
            return plain
        return text

    def scrub(self, error: SecretsError) -> SecretValidationError:
        """``error`` as a VALIDATION error naming the file, with every
        sensitive value (or piece of one) redacted from its message."""
        message = self.sensitive.redact(error.message)
        return SecretValidationError(
            f"{self.origin}: {message}", provider=error.provider, hint=error.hint
        )


def _check_numbers(origin: str, where: str, options: Mapping[str, Any]) -> None:
    """Numbers must be finite; timeouts must be above 0 (0 would never wait)."""
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(origin, f"{where}.{key}", f"expected a finite number, got {value!r}")
        if (
            key.lower().endswith("timeout")
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value <= 0
        ):
            raise _fail(
                origin, f"{where}.{key}", f"expected a number of seconds > 0, got {value!r}"
            )


def _read(path: Path, origin: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SecretValidationError(f"{origin}: config file not found") from None
    except OSError as exc:
        raise SecretValidationError(f"{origin}: cannot read config file: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SecretValidationError(
            f"{origin}: line {line}: the config file is not UTF-8 text"
        ) from None


def load_config(
    source: str | PathLike[str] | Mapping[str, Any], *, offline: bool = False
) -> Config:
    """Load and validate a configuration from a YAML file or a mapping.

    ``offline=True``: no ``${VAR}`` expansion, no decryption (see the module
    docstring); the result is for checking references, not for fetching.
    """
    base: Path | None = None
    if isinstance(source, Mapping):
        data: Any = source
        origin = "<config>"
    else:
        path = Path(source)
        origin = str(path)
        base = path.resolve().parent
        text = _read(path, origin)
        try:
            data = _parse_yaml(text)
        except yaml.YAMLError as exc:
            raise SecretValidationError(f"{origin}: {yaml_problem(exc)}") from None
        if data is None:
            data = {}
    if not isinstance(data, Mapping):
        raise _fail(origin, "top level", "expected a mapping with connections")
    unknown = sorted(map(str, set(data) - _TOP_LEVEL))
    if unknown:
        raise _fail(
            origin,
            ", ".join(unknown),
            f"unknown field; known fields: {', '.join(sorted(_TOP_LEVEL))}",
        )
    config = Config(origin=origin, offline=offline)

    cache = data.get("cache") or {}
    if not isinstance(cache, Mapping):
        raise _fail(origin, "cache", "expected a mapping with ttl and connection_ttl")
    for key in sorted(map(str, set(cache) - _CACHE_FIELDS)):
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
        expansion = _Expansion(origin, offline)
        try:
            config.connections[str(name)] = _connection(expansion, base, str(name), raw)
        finally:
            expansion.sensitive.clear()
    return config


def _connection(expansion: _Expansion, base: Path | None, name: str, raw: Any) -> ConnectionSpec:
    origin = expansion.origin
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
        raise SecretValidationError(
            f"{origin}: {where}.provider: {exc.message}", provider=name, hint=exc.hint
        ) from None
    ttl = raw.get("ttl")
    concurrency = raw.get("concurrency")
    spec_ttl = None if ttl is None else _number(origin, f"{where}.ttl", ttl)
    spec_conc = None
    if concurrency is not None:
        spec_conc = int(_number(origin, f"{where}.concurrency", concurrency, integer=True))
        if spec_conc < 1:
            raise _fail(origin, f"{where}.concurrency", "expected at least 1")
    options = {str(k): v for k, v in raw.items() if k not in _COMMON_FIELDS}
    # Field names first: nothing is expanded or decrypted for a misspelled field.
    cls.check_field_names(name, options, f"{origin}: {where}")
    options = {k: expansion.value(f"{where}.{k}", v) for k, v in options.items()}
    options = {k: (None if v == "" else v) for k, v in options.items()}
    for key, spec in cls.fields.items():
        value = options.get(key)
        if spec.is_path and isinstance(value, str) and base is not None:
            candidate = Path(value).expanduser()
            if not candidate.is_absolute():
                options[key] = str(base / candidate)
    _check_numbers(origin, where, options)
    unknown = frozenset(w.removeprefix(f"{where}.") for w in expansion.unknown)
    try:
        if unknown:
            options = _validate_offline(cls, name, options, raw, unknown)
        else:
            options = cls.validate_options(name, options)
    except SecretsError as exc:
        raise expansion.scrub(exc) from None
    return ConnectionSpec(provider_id, options, spec_ttl, spec_conc, unknown)


def _validate_offline(
    cls: type[Provider],
    name: str,
    options: dict[str, Any],
    raw: Mapping[str, Any],
    unknown: frozenset[str],
) -> dict[str, Any]:
    """Validate what can be known offline. A field known only online holds its
    text as written (``${VAR}``) where the field takes text, else nothing; if
    a provider's own checks then fail on such a stand-in, only the shared
    checks of :meth:`Provider.validate_options` (names, types of the known
    fields, choices) apply."""
    stand_in = dict(options)
    for key in unknown:
        spec = cls.fields.get(key)
        if spec is not None and key in raw and isinstance(spec.type, type) and spec.type is str:
            stand_in[key] = raw[key]
    try:
        return cls.validate_options(name, stand_in)
    except SecretsError:
        pass
    try:
        return cls.validate_options(name, options)
    except SecretsError:
        pass
    return Provider.validate_options.__func__(cls, name, stand_in)  # type: ignore[attr-defined, no-any-return]
