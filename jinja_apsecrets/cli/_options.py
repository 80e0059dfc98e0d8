"""What the commands of ``jinja-apsecrets`` share: options, the resolver
session (audit log and ``-v`` attached), and error handling.

:func:`guarded` turns the library's errors into a report on stderr (code,
``template:line``, hint; never a value) and the exit code of
:data:`~jinja_apsecrets.cli._errors.EXIT_CODES_HELP`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import jinja2

from ..config import find_config
from ..errors import SecretsError, SecretValidationError
from ..resolver import ON_MISSING, Resolver
from ._audit import AuditHook, AuditLog, Reporter, fan_out, library_logging
from ._errors import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_RENDER,
    EXIT_USAGE,
    REDACTORS,
    UsageProblem,
    report,
)
from ._output import OutputError, parse_mode

__all__ = [
    "audit_option",
    "config_option",
    "exclude_option",
    "guarded",
    "load_resolver",
    "mode_option",
    "on_missing_option",
    "pattern_option",
    "session",
    "vars_option",
    "verbose_option",
    "worst",
]

F = TypeVar("F", bound=Callable[..., Any])


def load_resolver(config: Path | None, audit: AuditHook | None = None) -> Resolver:
    """The resolver for ``-c`` / ``$APSECRETS_CONFIG`` / ``./apsecrets.yaml``."""
    path = find_config(config)
    if path is None:
        raise SecretValidationError(
            "no configuration: pass -c CONFIG, set APSECRETS_CONFIG or create ./apsecrets.yaml"
        )
    return Resolver.from_config(path, audit=audit)


def worst(codes: set[int]) -> int:
    """One exit code for several failures: a connection failure first, then a
    usage error, then a render failure."""
    return next((c for c in (EXIT_CONNECTION, EXIT_USAGE, EXIT_RENDER) if c in codes), EXIT_OK)


def guarded(func: F) -> F:
    """Report the library's errors (code, place, hint; never a value) and exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SecretsError, jinja2.TemplateError) as exc:
            raise click.exceptions.Exit(report(exc)) from None
        except OutputError as exc:
            raise UsageProblem(str(exc)) from None
        except OSError as exc:  # a file named on the command line
            raise UsageProblem(f"{exc.filename}: {exc.strerror or exc}") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def session(config: Path | None, audit_log: str | None, reporter: Reporter) -> Iterator[Resolver]:
    """A resolver with the audit log and ``-v`` lookups attached; closed after."""
    with library_logging(reporter.verbosity):
        try:
            log = AuditLog(audit_log) if audit_log else None
        except OSError as exc:
            raise UsageProblem(f"{audit_log}: cannot open audit log: {exc.strerror}") from None
        try:
            hook = fan_out(log, reporter.lookup if reporter else None)
            with load_resolver(config, hook) as resolver:
                # Bridge until the run's redactor (branch safety) lands: the
                # values handed out, fed by the resolver's on_value hook.
                handed_out: set[str] = set()
                resolver.on_value = handed_out.add

                def scrub(text: str) -> str:
                    for value in sorted((v for v in handed_out if len(v) >= 4), key=len)[::-1]:
                        text = text.replace(value, "<redacted>")
                    return text

                REDACTORS.append(scrub)
                names = ", ".join(resolver.connections) or "none"
                reporter.info(f"config: {find_config(config)} (connections: {names})")
                yield resolver
        finally:
            if log is not None:
                log.close()


# -- shared options ------------------------------------------------------------------


def _mode(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_mode(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


config_option = click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $APSECRETS_CONFIG, then ./apsecrets.yaml).",
)
verbose_option = click.option(
    "-v",
    "--verbose",
    count=True,
    help="More detail on stderr: config, one line per backend request (connection, "
    "secrets, outcome, time), files, and for render a summary. Never values. -vv adds "
    "the library's debug log.",
)
on_missing_option = click.option(
    "--on-missing",
    type=click.Choice(ON_MISSING),
    default=None,
    help="A missing secret fails (error, the default), prints its reference as "
    "written (keep), or prints nothing (undefined).",
)
audit_option = click.option(
    "--audit-log",
    metavar="FILE",
    help="Append one JSON line per reference looked up (time, template, connection, "
    "path, cache, outcome; never a value). '-' for stderr.",
)
mode_option = click.option(
    "--mode",
    default="0600",
    show_default=True,
    callback=_mode,
    help="Permission bits of written files (octal).",
)
pattern_option = click.option(
    "--pattern",
    "patterns",
    multiple=True,
    default=("*.j2",),
    show_default=True,
    help="Which files of a folder are templates (repeatable). A '*.SUFFIX' pattern's "
    "suffix is dropped from output names.",
)
exclude_option = click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out files and folders of a tree matching GLOB (repeatable), e.g. partials.",
)
vars_option = click.option(
    "--vars",
    "vars_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML or JSON file of template variables (repeatable; later files win, "
    "mappings merge). References anywhere in it are resolved.",
)
