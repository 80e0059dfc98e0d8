"""How the CLI reports errors: exit codes, and messages that never hold a value.

A :class:`~jinja_apsecrets.errors.SecretsError` is printed with its code,
reference, ``template:line`` and a hint that fits its kind (a reference's
format, a missing secret, an unreachable backend; none for configuration
errors, whose messages say what to fix); these messages are built from names
and paths only. Any other error (Jinja's own, a filter's ``TypeError``) may
quote a value: ``{% include secret(..) %}`` fails with the value as the
template name, ``int(secret(..))`` quotes it. Such messages go through the
run's :class:`~jinja_apsecrets.redaction.Redactor` (on click's context, fed by
the resolver's ``on_value`` hook): every piece of a value handed out in this
run, in any case or reversed, is replaced; a message with none is shown as it
is. Outside a command run (no redactor given or on click's context), Jinja's
messages are shown as they are and other exceptions' messages not at all.
"""

from __future__ import annotations

import os
import traceback

import click
import jinja2

from ..errors import SecretConnectionError, SecretsError, SecretValidationError
from ..redaction import Redactor

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_CONNECTION",
    "EXIT_OK",
    "EXIT_RENDER",
    "EXIT_USAGE",
    "UsageProblem",
    "describe",
    "exit_code",
    "hint_for",
    "report",
    "run_redactor",
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

_FORMAT_HINT = (
    "check the reference format (aws: secretName:jsonKey, "
    "hashicorp: mount/data/path/key, onepassword: op://vault/item/field)"
)
_HINTS = {
    "SECRET_MANAGER_GET_SECRET_FAILED": "check that the secret exists and the path is right",
    "SECRET_MANAGER_CONNECTION_FAILED": "check credentials and network access to the backend",
}


def hint_for(error: SecretsError) -> str | None:
    """The hint shown with ``error``: its own, else one that fits its kind.

    A VALIDATION error gets the reference-format hint only when it is about a
    reference's path; an unknown connection, a configuration problem (no
    config, a misspelled field, a missing SDK, a wrong master key) gets its
    own hint or none: their messages say what to fix.
    """
    if error.hint:
        return error.hint
    if isinstance(error, SecretValidationError):
        if error.path is None:
            return None
        if error.message.startswith("Unknown connection"):
            return "use a connection of the config, or add one under connections:"
        if not error.path:
            return None
        return _FORMAT_HINT
    return _HINTS.get(error.code)


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


def _set_used() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.params.get("assignments"))


def run_redactor() -> Redactor | None:
    """The redactor of the command being run (on click's context), if any."""
    ctx = click.get_current_context(silent=True)
    found = getattr(ctx.obj, "redactor", None) if ctx is not None else None
    return found if isinstance(found, Redactor) else None


def describe(
    error: BaseException,
    *,
    template: str | None = None,
    root: str | None = None,
    redactor: Redactor | None = None,
) -> list[str]:
    """The lines that report ``error``; never a value.

    ``template`` is the file being rendered, shown when the error does not say
    where it happened; ``root`` is the loader's folder, so that template names
    are shown as files. ``redactor`` scrubs messages that may quote a value
    (default: the current command run's).
    """
    if redactor is None:
        redactor = run_redactor()
    if isinstance(error, jinja2.TemplateSyntaxError):
        name = error.filename or _display(error.name, root) or template or "<template>"
        where = f" ({name}:{error.lineno})"
        if isinstance(error, SecretsError):
            ref = f" [{error.provider}|{error.path}]" if error.provider and error.path else ""
            hint = hint_for(error)
            lines = [f"error: {error.code}: {error.message}{ref}{where}"]
            return _whole_values_out([*lines, f"hint: {hint}"] if hint else lines, redactor)
        return [f"error: template syntax: {error.message}{where}"]
    if isinstance(error, SecretsError):
        location = error.location
        if error.template is not None:
            file = _display(error.template, root)
            location = f"{file}:{error.lineno}" if error.lineno is not None else file
        location = location or template
        where = f" ({location})" if location else ""
        ref = f" [{error.provider}|{error.path}]" if error.provider and error.path else ""
        hint = hint_for(error)
        lines = [f"error: {error.code}: {error.message}{ref}{where}"]
        return _whole_values_out([*lines, f"hint: {hint}"] if hint else lines, redactor)
    if isinstance(error, jinja2.TemplateNotFound):
        loaded = f" (loaded by {template})" if template else ""
        name = str(error.name)
        shown = redactor.redact(name) if redactor is not None else "(name not shown)"
        return [f"error: template not found: {shown}{loaded}"]
    place = _template_line(error) or template
    suffix = f" ({place})" if place else ""
    if isinstance(error, UnicodeDecodeError):
        return [f"error: cannot read template: it is not UTF-8 text{suffix}"]
    message = str(error.message if isinstance(error, jinja2.TemplateError) else error)
    if redactor is not None:
        shown = f": {redactor.redact(message)}" if message else ""
        lines = [f"error: {type(error).__name__}{shown}{suffix}"]
        if isinstance(error, TypeError) and _set_used():
            lines.append(
                "hint: --set values are strings; for numbers, lists or booleans use "
                "--set-json KEY=JSON or a vars file"
            )
        return lines
    if isinstance(error, jinja2.TemplateError):
        # No run (describe called on its own): Jinja's messages are about template
        # code; a value they might quote is the caller's to redact (pass redactor).
        return [f"error: {type(error).__name__}: {message}{suffix}"]
    return [
        f"error: {type(error).__name__} while rendering{suffix}",
        "hint: the message is not shown, as it may quote a value; check the filters and "
        "expressions on that line",
    ]


def _whole_values_out(lines: list[str], redactor: Redactor | None) -> list[str]:
    """The lines of a library error without any whole value: its path is
    written by the template and may be computed from one."""
    if redactor is None:
        return lines
    return [redactor.redact_values(line) for line in lines]


def report(
    error: BaseException,
    *,
    template: str | None = None,
    root: str | None = None,
    redactor: Redactor | None = None,
) -> int:
    """Print ``error`` on standard error (see :func:`describe`); its exit code."""
    for line in describe(error, template=template, root=root, redactor=redactor):
        click.echo(line, err=True)
    return exit_code(error)
