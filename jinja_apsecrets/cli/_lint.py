"""``refs``: list the references of templates and validate each one offline.

A CI lint must give the same answer on every machine, with no network and no
credentials. So the configuration is read by the library's own loader in its
offline mode (:func:`~jinja_apsecrets.config.load_config` with
``offline=True``): ``${VARS}`` are not expanded, ``enc:`` values are not
decrypted, and no client is created, but every other check of a render
applies, so a misspelled field is reported by ``refs`` as by ``render``. A
provider's :meth:`~jinja_apsecrets.providers.base.Provider.parse_path` is
offline by contract. With no configuration at all, a connection is valid when
it is named after a provider (``aws``, ``hashicorp``, ...), as the default
configuration names them.

A reference is checked as the extension checks it when compiling: no Jinja
syntax in the path, a path at all, a known connection, the provider's path
format, and the policy allow-list (checked before any request, so a refused
reference is reported too). What cannot be known offline is a *warning*, not
an error: a provider says so through ``offline_warnings(path)`` (Vault: a path
without ``data/`` on a connection whose KV version is not configured).
Templates are scanned with :class:`~jinja_apsecrets.reference.TemplateScanner`,
so raw blocks, comments and strings are not references here either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from ..config import ConnectionSpec, load_config
from ..errors import SecretNotFoundError, SecretsError, SecretValidationError
from ..providers import available_providers, get_provider_class
from ..providers.base import Provider
from ..reference import Reference, TemplateScanner, find_references
from ..resolver import Resolver

__all__ = ["Finding", "OfflineValidator", "lint_template", "lint_vars"]


@dataclass
class Finding:
    """One reference: where it is, what it names, its error if invalid, and
    what cannot be known offline (warnings)."""

    file: str
    line: int
    connection: str
    path: str
    error: SecretsError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """``{file, line, connection, path, valid, error, warnings}``; ``error`` is
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
            "warnings": list(self.warnings),
        }


def _about(error: SecretsError, connection: str, path: str) -> SecretsError:
    """A copy of ``error`` that names the reference."""
    return error.copy(provider=connection, path=path)


def _offline_provider(name: str, spec: ConnectionSpec) -> Provider | SecretsError:
    """The provider of connection ``name``, for ``parse_path`` and lint warnings.

    A provider whose SDK is not installed is returned as its error. The
    loader has validated the settings; a constructor may also check what it
    reads from the environment or what is known only online (a ``url`` from
    ``${VAULT_ADDR}``, or no ``url`` and ``$VAULT_ADDR`` at run time), which a
    lint must not depend on: then the validated options are used without that
    constructor, as the path checks need the options only.
    """
    try:
        cls = get_provider_class(spec.provider)
    except SecretsError as exc:
        return exc
    try:
        return cls(name, spec.options)
    except SecretsError:
        pass
    # The provider's class holding the options the loader validated, without
    # the provider's own checks of values that are only known online.
    offline_cls: type[Provider] = type(
        f"Offline{cls.__name__}", (cls,), {"__init__": _hold_options}
    )
    return offline_cls(name, spec.options)


def _hold_options(self: Provider, name: str, options: Mapping[str, Any]) -> None:
    self.name = name
    self.options = dict(options)


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
        """From the config file ``path`` loaded offline (see the module
        docstring), or from none.

        Raises the loader's VALIDATION error (a configuration error) if the
        file cannot be read or is not a valid configuration.
        """
        if path is None:
            return cls()
        config = load_config(path, offline=True)
        providers: dict[str, Provider | SecretsError] = {
            name: _offline_provider(name, spec) for name, spec in config.connections.items()
        }
        return cls(providers, config.policy, config.origin)

    def _provider(self, connection: str) -> Provider | SecretsError:
        found = self._providers.get(connection)
        if found is not None:
            return found
        if self.configured:
            known = ", ".join(sorted(self._providers)) or "none configured"
            message = f"Unknown connection {connection!r}; configured connections: {known}"
        elif connection in available_providers():
            # As the default configuration names it: the provider's defaults.
            try:
                spec = load_config({"connections": {connection: {}}}, offline=True)
                found = _offline_provider(connection, spec.connections[connection])
            except SecretsError as exc:
                found = exc
            self._providers[connection] = found
            return found
        else:
            message = (
                f"Unknown connection {connection!r}: no configuration was found (-c CONFIG, "
                "$APSECRETS_CONFIG, ./apsecrets.yaml), so connections are provider ids: "
                + ", ".join(available_providers())
            )
        return SecretValidationError(message, provider=connection)

    def warnings(self, connection: str, path: str) -> list[str]:
        """What cannot be known offline about a valid reference (the
        provider's ``offline_warnings``, if it has that hook)."""
        provider = self._providers.get(connection)
        hook = getattr(provider, "offline_warnings", None)
        if provider is None or isinstance(provider, SecretsError) or hook is None:
            return []
        return list(hook(path))

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
        warnings = validator.warnings(conn, path) if error is None else []
        out.append(Finding(file, ref.lineno, conn, path, error, warnings))
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
