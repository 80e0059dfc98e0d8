"""The ``jinja-apsecrets`` command.

``render`` renders a template or a tree of them; ``refs`` lists and validates
references offline (a CI lint); ``check`` tests connections live; ``resolve``
prints one value or a resolved document; ``keygen`` and ``encrypt`` make
``enc:v1:`` config values (see :mod:`.cli_values`).

Contracts: exit codes 0 ok, 1 render or lint failure, 2 usage or
configuration error, 3 a backend cannot be reached (see
:data:`~jinja_apsecrets.cli_errors.EXIT_CODES_HELP`). Every template renders
before any file is written, and on any error nothing is written. Outputs are
written atomically with mode 0600 unless ``--mode`` says otherwise. No error,
``-v`` line or audit record ever holds a secret value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import jinja2

from . import __version__
from .cli_audit import Reporter
from .cli_errors import EXIT_CODES_HELP, EXIT_RENDER, UsageProblem, exit_code, report
from .cli_lint import Finding, OfflineValidator, lint_template, lint_vars
from .cli_options import (
    audit_option,
    config_option,
    exclude_option,
    guarded,
    load_resolver,
    mode_option,
    on_missing_option,
    pattern_option,
    session,
    vars_option,
    verbose_option,
    worst,
)
from .cli_output import OutputSet, write_atomic
from .cli_render import (
    load_vars,
    make_environment,
    matches,
    merge,
    parse_assignments,
    plan_file,
    plan_tree,
    render_jobs,
    resolve_data,
    walk_tree,
)
from .cli_values import encrypt, keygen, resolve
from .config import find_config
from .errors import SecretsError
from .resolver import OnMissing

__all__ = ["load_resolver", "main", "write_atomic"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="jinja-apsecrets")
def main() -> None:
    """Render Jinja2 templates whose secrets live in secret managers.

    References such as <<aws|ap_sep_v1|prod/db:password>> are resolved at render
    time through the connections of the config file.
    """


# -- render ---------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file (or folder, for a folder SOURCE). Default for a file: stdout.",
)
@config_option
@vars_option
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A template variable (repeatable; a.b=x nests; values are strings). Wins over --vars.",
)
@pattern_option
@exclude_option
@click.option(
    "--copy",
    "copies",
    multiple=True,
    metavar="GLOB",
    help="Also copy files of a tree matching GLOB, unrendered (repeatable).",
)
@mode_option
@on_missing_option
@audit_option
@verbose_option
@guarded
def render(
    source: Path,
    output: Path | None,
    config: Path | None,
    vars_files: Sequence[str],
    assignments: Sequence[str],
    patterns: Sequence[str],
    excludes: Sequence[str],
    copies: Sequence[str],
    mode: int,
    on_missing: OnMissing | None,
    audit_log: str | None,
    verbose: int,
) -> None:
    """Render SOURCE, a template or a folder of templates, with its secrets.

    A file renders to OUTPUT or stdout. A folder renders to the folder OUTPUT,
    mirroring the tree: files matching --pattern are rendered (app.conf.j2 ->
    app.conf), --copy files are copied, nothing else. Every template renders
    before any file is written; if one fails, nothing is written. Files are
    written atomically with --mode.
    """
    reporter = Reporter(verbose)
    if source.is_dir():
        if output is None or str(output) == "-":
            raise UsageProblem("rendering a folder needs -o OUTPUT_FOLDER")
        if output.exists() and not output.is_dir():
            raise UsageProblem(f"{output}: exists and is not a folder")
        plan = plan_tree(source, output, patterns, excludes, copies)
        if not plan.jobs:
            click.echo(f"warning: no file under {source} matches {', '.join(patterns)}", err=True)
    else:
        plan = plan_file(source, None if str(output) == "-" else output, patterns)
    for job in plan.jobs:
        if job.output is not None and job.output.resolve() == Path(job.file).resolve():
            raise UsageProblem(f"{job.file}: the output would overwrite the template")

    with session(config, audit_log, reporter) as resolver:
        variables: dict[str, Any] = {}
        for file in vars_files:
            variables = merge(variables, resolve_data(resolver, load_vars(file), file, on_missing))
            reporter.info(f"vars: {file}")
        if assignments:
            sets = resolve_data(resolver, parse_assignments(assignments), "--set", on_missing)
            variables = merge(variables, sets)
        env = make_environment(plan.root, resolver, on_missing)
        texts, failures = render_jobs(env, plan.jobs, variables, progress=not reporter)

    if failures:
        codes = {report(exc, template=job.file, root=plan.root) for job, exc in failures}
        written = "; nothing was written" if any(j.output for j in plan.jobs) else ""
        click.echo(
            f"error: {len(failures)} of {len(plan.jobs)} templates failed{written}", err=True
        )
        raise click.exceptions.Exit(worst(codes))
    outputs = OutputSet()
    for job, text in texts.items():
        reporter.info(f"rendered {job.file}")
        if job.output is None:
            click.echo(text, nl=False)
        else:
            outputs.add(job.output, text, mode)
    for src, dst in plan.copies:
        outputs.add(dst, src.read_bytes(), src.stat().st_mode & 0o7777)
    for path in outputs.commit():
        reporter.info(f"wrote {path}")


# -- refs -------------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@vars_option
@pattern_option
@exclude_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
@verbose_option
@guarded
def refs(
    sources: Sequence[Path],
    config: Path | None,
    vars_files: Sequence[str],
    patterns: Sequence[str],
    excludes: Sequence[str],
    as_json: bool,
    verbose: int,
) -> None:
    """List every reference in SOURCES (templates, folders) and validate it offline.

    Needs no network and no credentials: the config (-c, $APSECRETS_CONFIG,
    ./apsecrets.yaml, or none) is read for connection names, providers and
    non-secret settings only; without one, connections are provider ids.
    Paths are checked against each provider's format and the policy
    allow-list. Exits 1 if any reference is invalid. For CI.

    --json prints [{file, line, connection, path, valid, error}], error being
    null or {code, message, hint}.
    """
    reporter = Reporter(verbose)
    config_path = find_config(config)
    validator = OfflineValidator.from_config(config_path)
    reporter.info(f"config: {config_path or 'none (connections are provider ids)'}")
    findings: list[Finding] = []
    broken: list[jinja2.TemplateSyntaxError] = []
    files = 0
    for file, is_template in _lint_files(sources, vars_files, patterns, excludes):
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise UsageProblem(f"{file}: cannot read: {reason}") from None
        files += 1
        found, syntax = (lint_template if is_template else lint_vars)(file, text, validator)
        findings += found
        broken += [syntax] if syntax is not None else []
    if as_json:
        click.echo(json.dumps([f.to_json() for f in findings], indent=2, ensure_ascii=False))
    else:
        for f in findings:
            status = "ok" if f.error is None else f"{f.error.code}: {f.error.message}"
            click.echo(f"{f.file}:{f.line}: {f.connection}|{f.path}: {status}")
    for error in broken:
        report(error)
    invalid = sum(not f.valid for f in findings)
    click.echo(
        f"{_count(len(findings), 'reference')} in {_count(files, 'file')}, {invalid} invalid"
        + (f", {_count(len(broken), 'template')} with syntax errors" if broken else ""),
        err=True,
    )
    if invalid or broken:
        raise click.exceptions.Exit(EXIT_RENDER)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _lint_files(
    sources: Sequence[Path],
    vars_files: Sequence[str],
    patterns: Sequence[str],
    excludes: Sequence[str],
) -> Iterator[tuple[str, bool]]:
    """``(file, is_template)``: named files, then matching files of folders, then vars."""
    for source in sources:
        if source.is_dir():
            for rel in walk_tree(source, None, excludes):
                if matches(rel, patterns):
                    yield str(source / rel), True
        else:
            yield str(source), True
    for file in vars_files:
        yield file, False


# -- check -----------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("names", nargs=-1)
@config_option
@verbose_option
@guarded
def check(names: Sequence[str], config: Path | None, verbose: int) -> None:
    """Test connections live (the spec's "Test connection"): all, or NAMES.

    One line each: OK, or the error code and message with the provider's
    troubleshooting hints. Exits 3 if any connection fails.
    """
    reporter = Reporter(verbose)
    with session(config, None, reporter) as resolver:
        known = list(resolver.connections)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageProblem(
                f"unknown connection {', '.join(unknown)}; configured: {', '.join(known) or 'none'}"
            )
        wanted = list(dict.fromkeys(names)) or known
        if not wanted:
            raise UsageProblem(f"{find_config(config)}: no connections are configured")

        def run(name: str) -> tuple[SecretsError | None, float]:
            start = time.monotonic()
            try:
                resolver.check(name)
            except SecretsError as exc:
                return exc, time.monotonic() - start
            return None, time.monotonic() - start

        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            results = list(pool.map(run, wanted))
        codes: set[int] = set()
        for name, (error, took) in zip(wanted, results, strict=True):
            provider = resolver.connections[name]
            label = f"{name} ({provider.id})"
            if error is None:
                click.echo(f"{label}: OK ({took:.2f}s)")
                continue
            codes.add(exit_code(error))
            click.echo(f"{label}: {error.code}: {error.message} ({took:.2f}s)")
            # The error's own hint when it adds to the provider's troubleshooting.
            general = provider.troubleshooting
            own = [error.hint] if error.hint and error.hint not in "; ".join(general) else []
            for hint in dict.fromkeys([*own, *general]):
                click.echo(f"  hint: {hint}")
    if worst(codes):
        raise click.exceptions.Exit(worst(codes))


for command in (resolve, keygen, encrypt):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
