"""How the CLI reports errors: exit codes, and messages that never hold a value.

A :class:`~jinja_apsecrets.errors.SecretsError` is printed with its code,
reference, ``template:line`` and hint; these messages are built from names
and paths only. A Jinja error is printed with its message, which is about
template code (resolved values are :class:`~jinja_apsecrets.undefined.SecretText`,
whose ``repr`` hides them). Any other exception raised while rendering (from a
filter, say) is printed by type and location only: Python's own messages may
quote a value (``invalid literal for int(): '...'``).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import click
import jinja2

from ..errors import SecretConnectionError, SecretsError, SecretValidationError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_CONNECTION",
    "EXIT_OK",
    "EXIT_RENDER",
    "EXIT_USAGE",
    "UsageProblem",
    "describe",
    "exit_code",
    "report",
]

EXIT_OK, EXIT_RENDER, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3

#: The epilog of every command (``\b`` keeps click from rewrapping it).
EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  render or lint failure: a missing secret, an invalid reference,
     a template error
  2  usage or configuration error (a wrong APSECRETS_MASTER_KEY included)
  3  a secret manager cannot be reached or refused the credentials"""

_HINTS = {
    "VALIDATION": "check the reference format (aws: secretName:jsonKey, "
    "hashicorp: mount/data/path/key, onepassword: op://vault/item/field)",
    "SECRET_MANAGER_GET_SECRET_FAILED": "check that the secret exists and the path is right",
    "SECRET_MANAGER_CONNECTION_FAILED": "check credentials and network access to the backend",
}


class UsageProblem(click.ClickException):
    """A usage or configuration problem outside the library: exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def exit_code(error: BaseException) -> int:
    """The exit code for ``error`` (see :data:`EXIT_CODES_HELP`).

    A VALIDATION error about a reference (it names a path or a template line)
    is a render or lint failure; one about neither is a configuration error.
    """
    if isinstance(error, SecretConnectionError):
        return EXIT_CONNECTION
    if isinstance(error, SecretValidationError):
        about_reference = error.path is not None or error.lineno is not None
        return EXIT_RENDER if about_reference else EXIT_USAGE
    if isinstance(error, UsageProblem):
        return EXIT_USAGE
    return EXIT_RENDER


_TEMPLATE_FRAMES = ("template", "top-level template code")


def _template_line(error: BaseException) -> str | None:
    """``file:line`` of the innermost template frame in ``error``'s traceback.

    Jinja rewrites tracebacks so that template code shows as its own file and
    line, in frames named ``template``, ``top-level template code`` or
    ``block 'name'``.
    """
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.name in _TEMPLATE_FRAMES or frame.name.startswith("block '"):
            found = f"{frame.filename}:{frame.lineno}"
    return found


def _display(name: str | None, root: str | None) -> str | None:
    """A loader's template name as its file (Jinja's own ``filename``)."""
    if name is None or root is None:
        return name
    return os.path.normpath(os.path.join(root, name))


#: Functions that scrub secret values out of text; the CLI's resolvers register
#: themselves here, so that messages quoting a value (a template's own error,
#: a template name computed from a secret) never print it.
REDACTORS: list[Callable[[str], str]] = []


def redact(text: str) -> str:
    for scrub in REDACTORS:
        text = scrub(text)
    return text


def describe(
    error: BaseException, *, template: str | None = None, root: str | None = None
) -> list[str]:
    """The lines that report ``error``; never a value.

    ``template`` is the file being rendered, shown when the error does not say
    where it happened; ``root`` is the loader's folder, so that template names
    are shown as files.
    """
    if isinstance(error, jinja2.TemplateSyntaxError):
        name = error.filename or _display(error.name, root) or template or "<template>"
        where = f" ({name}:{error.lineno})"
        if isinstance(error, SecretsError):
            ref = f" [{error.provider}|{error.path}]" if error.provider and error.path else ""
            hint = error.hint or _HINTS[error.code]
            return [f"error: {error.code}: {error.message}{ref}{where}", f"hint: {hint}"]
        return [f"error: template syntax: {error.message}{where}"]
    if isinstance(error, SecretsError):
        location = error.location
        if error.template is not None:
            file = _display(error.template, root)
            location = f"{file}:{error.lineno}" if error.lineno is not None else file
        location = location or template
        where = f" ({location})" if location else ""
        ref = f" [{error.provider}|{error.path}]" if error.provider and error.path else ""
        hint = error.hint or _HINTS.get(error.code)
        lines = [f"error: {error.code}: {error.message}{ref}{where}"]
        return [*lines, f"hint: {hint}"] if hint else lines
    if isinstance(error, jinja2.TemplateNotFound):
        loaded = f" (loaded by {template})" if template else ""
        return [f"error: template not found: {redact(str(error.name))}{loaded}"]
    place = _template_line(error) or template
    suffix = f" ({place})" if place else ""
    if isinstance(error, jinja2.TemplateError):
        return [f"error: {type(error).__name__}: {redact(str(error.message))}{suffix}"]
    if isinstance(error, UnicodeDecodeError):
        return [f"error: cannot read template: it is not UTF-8 text{suffix}"]
    return [
        f"error: {type(error).__name__} while rendering{suffix}",
        "hint: the message is not shown, as it may quote a value; check the filters and "
        "expressions on that line",
    ]


def report(error: BaseException, *, template: str | None = None, root: str | None = None) -> int:
    """Print ``error`` on standard error (see :func:`describe`); its exit code."""
    for line in describe(error, template=template, root=root):
        click.echo(line, err=True)
    return exit_code(error)
