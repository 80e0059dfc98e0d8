"""``render``: a template, or a tree of them, to files or stdout.

Every template renders before any file is written, and on any error nothing
is written (see :mod:`._output`). Outputs are written atomically with mode
0600 unless ``--mode`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..resolver import OnMissing
from ._audit import Reporter
from ._errors import EXIT_CODES_HELP, UsageProblem, report
from ._options import (
    audit_option,
    config_option,
    exclude_option,
    guarded,
    mode_option,
    on_missing_option,
    pattern_option,
    session,
    set_json_option,
    vars_option,
    verbose_option,
    worst,
)
from ._output import OutputSet
from ._rendering import (
    load_vars,
    make_environment,
    merge,
    parse_assignments,
    plan_file,
    plan_tree,
    render_jobs,
    resolve_data,
)

__all__ = ["render"]


@click.command(epilog=EXIT_CODES_HELP)
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
@set_json_option
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
    json_assignments: dict[str, Any],
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

    with session(config, audit_log, reporter, near=[source]) as resolver:
        variables: dict[str, Any] = {}
        for file in vars_files:
            variables = merge(variables, resolve_data(resolver, load_vars(file), file, on_missing))
            reporter.info(f"vars: {file}")
        if assignments:
            sets = resolve_data(resolver, parse_assignments(assignments), "--set", on_missing)
            variables = merge(variables, sets)
        if json_assignments:
            sets = resolve_data(resolver, json_assignments, "--set-json", on_missing)
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
