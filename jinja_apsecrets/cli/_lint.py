"""``refs``: list the references of templates and validate each one offline.

A CI lint must give the same answer on every machine, with no network and no
credentials. So the configuration is read for its *shape* only: each
connection's provider and its non-secret settings. ``${VARS}`` are not
expanded, ``enc:v1:`` values are not decrypted, credentials are not read, and
no client is created; a provider's :meth:`~jinja_apsecrets.providers.base.Provider.parse_path`
is offline by contract. With no configuration at all, a connection is valid
when it is named after a provider (``aws``, ``hashicorp``, ...), as the
default configuration names them.

A reference is checked as the extension checks it when compiling: no Jinja
syntax in the path, a path at all, a known connection, the provider's path
format, and the policy allow-list (checked before any request, so a refused
reference is reported too). Templates are scanned with
:class:`~jinja_apsecrets.reference.TemplateScanner`, so raw blocks, comments
and strings are not references here either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import nodes

from ..crypto import PREFIX
from ..errors import SecretNotFoundError, SecretsError, SecretValidationError
from ..providers import available_providers, get_provider_class
from ..providers.base import Provider
from ..reference import Reference, TemplateScanner, find_references
from ..resolver import Resolver

__all__ = ["Finding", "OfflineValidator", "lint_template", "lint_vars"]

# ``${VAR}`` placeholders are replaced by this before parsing (a bare ``${VAR}``
# in a flow mapping is not YAML); a setting that holds it is left out.
_UNSET = "__apsecrets_unset__"
_PLACEHOLDER = re.compile(r"\$\{[^}\r\n]*\}")


@dataclass
class Finding:
    """One reference: where it is, what it names, and its error if invalid."""

    file: str
    line: int
    connection: str
    path: str
    error: SecretsError | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """``{file, line, connection, path, valid, error}``; ``error`` is
        ``{code, message, hint}`` or ``null``."""
        error = None
        if self.error is not None:
            error = {"code": self.error.code, "message": self.error.message}
            if self.error.hint:
                error["hint"] = self.error.hint
        return {
            "file": self.file,
            "line": self.line,
            "connection": self.connection,
            "path": self.path,
            "valid": self.valid,
            "error": error,
        }


def _about(error: SecretsError, connection: str, path: str) -> SecretsError:
    """A copy of ``error`` that names the reference."""
    return type(error)(error.message, provider=connection, path=path, hint=error.hint)


def _literal(value: Any) -> bool:
    """Whether a setting is usable as written (not a placeholder, not encrypted)."""
    return not isinstance(value, str) or (_UNSET not in value and not value.startswith(PREFIX))


def _config_error(origin: str, message: str) -> SecretValidationError:
    return SecretValidationError(f"{origin}: {message}")


def _offline_provider(origin: str, name: str, raw: Mapping[str, Any]) -> Provider | SecretsError:
    """A provider for ``name`` built from its non-secret literal settings.

    If those are not enough to construct it (a required URL comes from the
    environment, say), an instance is made without calling its constructor,
    holding the defaults and those settings: enough for ``parse_path``. A
    provider whose SDK is not installed is returned as its error.
    """
    provider_id = raw.get("provider", name)
    if not isinstance(provider_id, str) or provider_id not in available_providers():
        known = ", ".join(available_providers())
        raise _config_error(origin, f"connections.{name}: unknown provider; known: {known}")
    try:
        cls = get_provider_class(provider_id)
    except SecretsError as exc:
        return exc
    options: dict[str, Any] = {}
    for key, spec in cls.fields.items():
        value = raw.get(key)
        if spec.secret or value is None or not _literal(value):
            continue
        if isinstance(value, spec.type) and not (isinstance(value, bool) and spec.type is not bool):
            options[key] = value
    try:
        return cls(name, options)
    except Exception:  # settings left out: fall back to defaults, below
        bare = cls.__new__(cls)
        bare.name = name
        bare.options = {key: spec.default for key, spec in cls.fields.items()} | options
        return bare


class OfflineValidator:
    """Checks ``(connection, path)`` pairs with no network and no credentials.

    ``providers`` maps connection names to providers (or to the error that
    stops building one); ``None`` means no configuration: connections are
    named after providers. ``policy`` is the allow-list, if any.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider | SecretsError] | None = None,
        policy: Sequence[str] | None = None,
        origin: str | None = None,
    ) -> None:
        self.configured = providers is not None
        self.origin = origin
        self._providers: dict[str, Provider | SecretsError] = dict(providers or {})
        self._policy = Resolver(policy=policy)

    @classmethod
    def from_config(cls, path: Path | None) -> OfflineValidator:
        """From a config file's shape (see the module docstring), or from none.

        Raises a VALIDATION error (no path: a configuration error) if the file
        cannot be read or its shape is wrong.
        """
        if path is None:
            return cls()
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise _config_error(origin, f"cannot read config file: {reason}") from None
        try:
            data = yaml.safe_load(_PLACEHOLDER.sub(_UNSET, text)) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise _config_error(origin, f"invalid YAML{where}") from None
        connections = (data.get("connections") or {}) if isinstance(data, Mapping) else None
        if not isinstance(connections, Mapping):
            raise _config_error(origin, "expected a mapping with connections")
        providers: dict[str, Provider | SecretsError] = {}
        for name, raw in connections.items():
            if not isinstance(raw, (Mapping, type(None))):
                raise _config_error(origin, f"connections.{name}: expected a mapping of settings")
            providers[str(name)] = _offline_provider(origin, str(name), raw or {})
        policy = data.get("policy")
        allow = policy.get("allow") if isinstance(policy, Mapping) else None
        if policy is not None and not (
            isinstance(allow, list) and all(isinstance(p, str) for p in allow)
        ):
            raise _config_error(origin, "policy.allow: expected a list of 'connection:path' globs")
        return cls(providers, allow, origin)

    def _provider(self, connection: str) -> Provider | SecretsError:
        found = self._providers.get(connection)
        if found is not None:
            return found
        if self.configured:
            known = ", ".join(sorted(self._providers)) or "none configured"
            message = f"Unknown connection {connection!r}; configured connections: {known}"
        elif connection in available_providers():
            found = self._providers[connection] = _offline_provider("", connection, {})
            return found
        else:
            message = (
                f"Unknown connection {connection!r}: no configuration was found (-c CONFIG, "
                "$APSECRETS_CONFIG, ./apsecrets.yaml), so connections are provider ids: "
                + ", ".join(available_providers())
            )
        return SecretValidationError(message, provider=connection)

    def check(self, connection: str, path: str) -> SecretsError | None:
        """The error of the reference ``connection|path``, or ``None`` if valid."""
        provider = self._provider(connection)
        if isinstance(provider, SecretsError):
            return _about(provider, connection, path)
        try:
            provider.parse_path(path)
        except SecretsError as exc:
            return _about(exc, connection, path)
        except Exception as exc:  # a provider that needs more than its settings
            return SecretValidationError(
                f"cannot validate offline: {type(exc).__name__} in provider {provider.id}",
                provider=connection,
                path=path,
            )
        if not self._policy.allowed(connection, path):
            return SecretNotFoundError(
                "Access refused by the policy allow-list (no request was made)",
                provider=connection,
                path=path,
                hint="Add a matching pattern to policy.allow",
            )
        return None


def _findings(
    file: str,
    refs: Iterable[Reference],
    validator: OfflineValidator,
    scanner: TemplateScanner | None,
) -> list[Finding]:
    out = []
    for ref in refs:
        conn, path = ref.connection, ref.path
        error: SecretsError | None
        dynamic = scanner.dynamic_path_error(ref) if scanner is not None else None
        if dynamic:
            error = SecretValidationError(dynamic, provider=conn, path=path)
        elif not path:
            error = SecretValidationError("Empty secret path in reference", provider=conn, path="")
        else:
            error = validator.check(conn, path)
        out.append(Finding(file, ref.lineno, conn, path, error))
    return out


def _function_refs(source: str, inline: Sequence[Reference]) -> list[Reference]:
    """``secret("conn", "path")`` calls with constant arguments, found by parsing
    ``source`` with plain Jinja once the inline references are blanked out
    (plain Jinja rejects the ``{{conn|ap_sep_v1|path}}`` form). Raises
    :class:`jinja2.TemplateSyntaxError` for a template Jinja cannot parse."""
    pieces, pos = [], 0
    for ref in inline:
        pieces += [source[pos : ref.start], " " * (ref.end - ref.start)]
        pos = ref.end
    pieces.append(source[pos:])
    tree = jinja2.Environment().parse("".join(pieces))  # noqa: S701 - parsing only
    found = []
    for call in tree.find_all(nodes.Call):
        args = call.args
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name == "secret"
            and len(args) == 2
            and not call.kwargs
            and all(isinstance(a, nodes.Const) and isinstance(a.value, str) for a in args)
        ):
            conn, path = (a.value for a in args)  # type: ignore[attr-defined]
            text = f"secret({conn!r}, {path!r})"
            found.append(Reference(conn, path, text, 0, 0, call.lineno))
    return found


def lint_template(
    file: str, source: str, validator: OfflineValidator
) -> tuple[list[Finding], jinja2.TemplateSyntaxError | None]:
    """The references of template ``source``, checked, in line order, and the
    template's syntax error if Jinja cannot parse it.

    Inline references are found as the extension finds them; ``secret()``
    calls count when both arguments are constant strings (a computed path can
    only be checked when rendered).
    """
    scanner = TemplateScanner(jinja2.Environment())  # noqa: S701 - scanning only
    inline = [seg.ref for seg in scanner.scan(source) if seg.ref is not None]
    findings = _findings(file, inline, validator, scanner)
    syntax = None
    try:
        findings += _findings(file, _function_refs(source, inline), validator, None)
    except jinja2.TemplateSyntaxError as exc:
        exc.filename = exc.filename or file
        syntax = exc
    findings.sort(key=lambda f: f.line)
    return findings, syntax


def lint_vars(
    file: str, text: str, validator: OfflineValidator
) -> tuple[list[Finding], jinja2.TemplateSyntaxError | None]:
    """The references in a vars file's text (data, not a template), checked."""
    return _findings(file, find_references(text), validator, None), None
