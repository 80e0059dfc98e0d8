"""Errors with the spec's codes.

Every error carries ``code``, ``message``, ``provider`` (the connection name) and
``path`` (the reference path, never a value), and, when raised while rendering,
the template name and line. :meth:`SecretsError.to_dict` gives the spec's JSON
shape. No message built here ever contains a secret value: callers pass only
names, paths and reasons.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from jinja2 import TemplateSyntaxError

__all__ = [
    "CONNECTION_FAILED",
    "GET_SECRET_FAILED",
    "VALIDATION",
    "SecretConnectionError",
    "SecretNotFoundError",
    "SecretReferenceSyntaxError",
    "SecretValidationError",
    "SecretsError",
    "yaml_problem",
]

VALIDATION = "VALIDATION"
GET_SECRET_FAILED = "SECRET_MANAGER_GET_SECRET_FAILED"
CONNECTION_FAILED = "SECRET_MANAGER_CONNECTION_FAILED"

#: The fields :meth:`SecretsError.copy` can change.
_FIELDS = frozenset({"message", "provider", "path", "template", "lineno", "hint"})


class SecretsError(Exception):
    """Base class of every error this library raises.

    ``hint`` is an optional piece of advice (what to check), shown by the CLI.
    """

    code: ClassVar[str] = VALIDATION

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        path: str | None = None,
        template: str | None = None,
        lineno: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.path = path
        self.template = template
        self.lineno = lineno
        self.hint = hint

    @property
    def message(self) -> str:
        """The message alone, without reference or location."""
        return str(self.args[0]) if self.args else ""

    def copy(self, **changes: Any) -> SecretsError:
        """A new error with the same fields, except those in ``changes``
        (``message``, ``provider``, ``path``, ``template``, ``lineno``, ``hint``).

        Errors are memoized and shared (one per reference, one per fetch); a
        shared instance is never raised: each raise gets its own copy, so
        tracebacks do not pile up on one object and locations do not mix.
        Built on :meth:`__reduce__`, the one rebuild path of every error class
        (pickling uses it too), so a copy keeps the exact class.
        """
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"copy() got unknown field(s): {', '.join(sorted(unknown))}")
        rebuild, args = self.__reduce__()
        error: SecretsError = rebuild(*args)
        for name, value in changes.items():
            if name == "message":
                error.args = (value, *error.args[1:])
            else:
                setattr(error, name, value)
        return error

    def locate(self, template: str | None, lineno: int | None) -> SecretsError:
        """A copy with the template name and line filled in where not known yet."""
        return self.copy(
            template=template if self.template is None else self.template,
            lineno=lineno if self.lineno is None else self.lineno,
        )

    @property
    def location(self) -> str | None:
        """``template:line`` (or what of it is known), for messages."""
        if self.template is None and self.lineno is None:
            return None
        name = self.template or "<template>"
        return f"{name}:{self.lineno}" if self.lineno is not None else name

    def to_dict(self) -> dict[str, Any]:
        """The spec's JSON shape: code, message, provider, request.path."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.provider is not None:
            out["provider"] = self.provider
        if self.path is not None:
            out["request"] = {"path": self.path}
        if self.template is not None or self.lineno is not None:
            out["template"] = {"name": self.template, "line": self.lineno}
        return out

    def __str__(self) -> str:
        parts = [self.message]
        ref = None
        if self.provider is not None and self.path is not None:
            ref = f"{self.provider}|{self.path}"
        elif self.provider is not None:
            ref = self.provider
        elif self.path is not None:
            ref = self.path
        if ref is not None:
            parts.append(f"(reference {ref})")
        if self.location is not None:
            parts.append(f"in {self.location}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"provider={self.provider!r}, path={self.path!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.provider,
                self.path,
                self.template,
                self.lineno,
                self.hint,
            ),
        )


def _rebuild(
    cls: type[SecretsError],
    message: str,
    provider: str | None,
    path: str | None,
    template: str | None,
    lineno: int | None,
    hint: str | None,
) -> SecretsError:
    return cls(message, provider=provider, path=path, template=template, lineno=lineno, hint=hint)


class SecretValidationError(SecretsError, ValueError):
    """A malformed reference, an unknown connection or a bad configuration."""

    code = VALIDATION


class SecretNotFoundError(SecretsError, LookupError):
    """The secret or its key is missing, access was denied, or policy refused it."""

    code = GET_SECRET_FAILED


class SecretConnectionError(SecretsError, ConnectionError):
    """The backend cannot be reached or refused the credentials."""

    code = CONNECTION_FAILED


class SecretReferenceSyntaxError(TemplateSyntaxError, SecretValidationError):  # type: ignore[misc]
    """A reference in template source that fails validation at compile time.

    It is a :class:`jinja2.TemplateSyntaxError` (so Jinja reports template and
    line as for any syntax error) and a :class:`SecretValidationError` with the
    code ``VALIDATION``.
    """

    def __init__(
        self,
        message: str,
        lineno: int,
        name: str | None = None,
        filename: str | None = None,
        *,
        provider: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        TemplateSyntaxError.__init__(self, message, lineno, name, filename)
        self.provider = provider
        self.path = path
        self.hint = hint
        # ``message`` is TemplateError's read-only view of ``args[0]``.

    @property
    def template(self) -> str | None:
        """The template name: Jinja's ``name``, one field under two names."""
        return self.name

    @template.setter
    def template(self, name: str | None) -> None:
        self.name = name

    def __str__(self) -> str:
        return TemplateSyntaxError.__str__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_syntax,
            (
                self.message,
                self.lineno,
                self.name,
                self.filename,
                self.provider,
                self.path,
                self.hint,
            ),
        )


def _rebuild_syntax(
    message: str,
    lineno: int,
    name: str | None,
    filename: str | None,
    provider: str | None,
    path: str | None,
    hint: str | None,
) -> SecretReferenceSyntaxError:
    return SecretReferenceSyntaxError(
        message, lineno, name, filename, provider=provider, path=path, hint=hint
    )


_QUOTED = re.compile(r"'([^']*)'")


def yaml_problem(exc: BaseException) -> str:
    """A YAML parser error as ``problem at line N``, without the file's text.

    PyYAML quotes what it read: ``found undefined alias 'Sup3r'`` for a
    password written unquoted as ``*Sup3r``, a tag's name, an escape. Only its
    own vocabulary stays quoted (``'<scalar>'``, ``','``); anything else
    quoted becomes ``'...'``."""

    def keep(m: re.Match[str]) -> str:
        inner = m.group(1)
        ours = (inner.startswith("<") and inner.endswith(">")) or (
            len(inner) == 1 and not inner.isalnum()
        )
        return m.group(0) if ours else "'...'"

    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return _QUOTED.sub(keep, str(problem)) + where
