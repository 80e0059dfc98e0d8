"""What the commands of ``jinja-apsecrets`` share: options, the resolver
session (audit log and ``-v`` attached), per-run state, and error handling.

:func:`guarded` turns the library's errors into a report on stderr (code,
``template:line``, hint; never a value) and the exit code of
:data:`~jinja_apsecrets.cli._errors.EXIT_CODES_HELP`.

Per-run state lives on click's context, never in module globals:
:class:`CommandRun` (``ctx.obj``, see :data:`pass_run` and :func:`current_run`)
holds the run's :class:`~jinja_apsecrets.redaction.Redactor`, which the
resolver feeds through its ``on_value`` hook and the error reports read. It is
cleared when the command's context closes, so no value outlives the run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import jinja2

from ..config import find_config
from ..errors import SecretsError, SecretValidationError
from ..redaction import Redactor
from ..resolver import ON_MISSING, Resolver
from ._audit import AuditHook, AuditLog, Reporter, fan_out, library_logging
from ._errors import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_RENDER,
    EXIT_USAGE,
    UsageProblem,
    report,
)
from ._output import OutputError, parse_mode

__all__ = [
    "CommandRun",
    "audit_option",
    "config_option",
    "current_run",
    "exclude_option",
    "guarded",
    "lint_vars_option",
    "load_resolver",
    "mode_option",
    "on_missing_option",
    "pass_run",
    "pattern_option",
    "pattern_option_for",
    "plain_config_option",
    "render_options",
    "session",
    "set_json_option",
    "vars_option",
    "verbose_option",
    "worst",
]

F = TypeVar("F", bound=Callable[..., Any])


class CommandRun:
    """The state of one command run (``ctx.obj``): what must not outlive it."""

    def __init__(self) -> None:
        #: Every value the run's resolver hands out, for scrubbing error messages.
        self.redactor = Redactor()
        #: The config file the run uses, once known.
        self.config_path: Path | None = None

    def close(self) -> None:
        self.redactor.clear()


def current_run() -> CommandRun:
    """The :class:`CommandRun` of the current click context (``ctx.obj``),
    made if there is none yet, and then released when that context closes."""
    ctx = click.get_current_context()
    run = ctx.find_object(CommandRun)
    if run is None:
        run = ctx.ensure_object(CommandRun)
        ctx.call_on_close(run.close)
    return run


def pass_run(func: Callable[..., Any]) -> Callable[..., Any]:
    """Hands a command its :class:`CommandRun` as the first argument, as
    ``click.make_pass_decorator(CommandRun, ensure=True)`` does, but through
    :func:`current_run`, so the run is always released when the command ends."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(current_run(), *args, **kwargs)

    return wrapper


NO_CONFIG = (
    "no configuration: pass -c CONFIG, set APSECRETS_CONFIG, or create apsecrets.yaml "
    "beside the templates or in the current folder"
)


def load_resolver(
    config: Path | None,
    audit: AuditHook | None = None,
    *,
    near: Sequence[str | Path] = (),
    on_value: Callable[[str], None] | None = None,
) -> Resolver:
    """The resolver for ``-c`` / ``$APSECRETS_CONFIG`` / an ``apsecrets.yaml``
    beside the templates ``near`` (or above them, up to the repository root) /
    ``./apsecrets.yaml``."""
    path = find_config(config, near=near)
    if path is None:
        raise SecretValidationError(NO_CONFIG, hint="see `jinja-apsecrets render --help`")
    return Resolver.from_config(path, audit=audit, on_value=on_value)


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
def session(
    config: Path | None,
    audit_log: str | None,
    reporter: Reporter,
    *,
    near: Sequence[str | Path] = (),
) -> Iterator[Resolver]:
    """A resolver with the audit log, ``-v`` lookups and the run's redactor
    attached; closed after. ``near``: the templates, beside which the config
    is looked for (see :func:`load_resolver`)."""
    run = current_run()
    with library_logging(reporter.verbosity, run.redactor):
        try:
            log = AuditLog(audit_log, run.redactor) if audit_log else None
        except OSError as exc:
            raise UsageProblem(f"{audit_log}: cannot open audit log: {exc.strerror}") from None
        try:
            hook = fan_out(log, reporter.lookup if reporter else None)
            run.config_path = find_config(config, near=near)
            resolver = load_resolver(config, hook, near=near, on_value=run.redactor.add)
            with resolver:
                names = ", ".join(resolver.connections) or "none"
                reporter.info(f"config: {run.config_path} (connections: {names})")
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


def _config_option(where: str) -> Callable[[F], F]:
    """``-c``; ``where``: the places looked in after ``$APSECRETS_CONFIG``."""
    return click.option(
        "-c",
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Config file (default: $APSECRETS_CONFIG, then {where}). -v says which file is used.",
    )


#: ``-c`` for commands that take templates (the config is looked for beside them).
config_option = _config_option(
    "apsecrets.yaml beside the templates or in a folder above them up to the "
    "repository root, then ./apsecrets.yaml"
)
#: ``-c`` for commands without templates (check, resolve).
plain_config_option = _config_option("./apsecrets.yaml")
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
    "written (keep), or prints nothing (undefined). A backend that cannot be "
    "reached always fails.",
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


def pattern_option_for(purpose: str) -> Callable[[F], F]:
    """``--pattern`` with help for ``purpose`` (render names outputs after it)."""
    help_text = "Which files of a folder are templates (repeatable)."
    if purpose == "render":
        help_text += " A '*.SUFFIX' pattern's suffix is dropped from output names."
    return click.option(
        "--pattern",
        "patterns",
        multiple=True,
        default=("*.j2",),
        show_default=True,
        help=help_text,
    )


pattern_option = pattern_option_for("render")
exclude_option = click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out files and folders of a tree matching GLOB (repeatable), e.g. partials.",
)


def _vars_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--vars",
        "vars_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help=help_text,
    )


vars_option = _vars_option(
    "YAML or JSON file of template variables (repeatable; later files win, "
    "mappings merge). References anywhere in it are resolved."
)
#: ``--vars`` for ``refs``: the files are checked, not resolved.
lint_vars_option = _vars_option(
    "A YAML or JSON vars file whose references are checked too (repeatable)."
)


set_json_option = click.option(
    "--set-json",
    "json_assignments",
    multiple=True,
    metavar="KEY=JSON",
    help="A template variable given as JSON (repeatable; a.b=... nests): --set-json "
    'port=8080, --set-json \'hosts=["a","b"]\'. Wins over --vars and --set.',
)


def render_options(func: F) -> F:
    """The options ``render`` and ``watch`` share (``watch`` takes "render's
    options"): one list, so an option added here reaches both commands. The
    command takes ``config``, ``audit_log`` and ``verbose`` by name and passes
    the rest to ``Request.from_params`` (see :mod:`._rendering`)."""
    for option in reversed(
        (
            config_option,
            vars_option,
            click.option(
                "--set",
                "assignments",
                multiple=True,
                metavar="KEY=VALUE",
                help="A template variable (repeatable; a.b=x nests; values are strings). "
                "Wins over --vars.",
            ),
            set_json_option,
            pattern_option,
            exclude_option,
            click.option(
                "--copy",
                "copies",
                multiple=True,
                metavar="GLOB",
                help="Also copy files of a tree matching GLOB, unrendered (repeatable).",
            ),
            mode_option,
            on_missing_option,
            audit_option,
            verbose_option,
        )
    ):
        func = option(func)
    return func
