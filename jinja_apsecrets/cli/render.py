"""``render``: a template, or a tree of them, to files or stdout.

The flow is :mod:`._rendering`'s: plan jobs (outputs checked for links),
collect the variables, render every template into memory, write. Every
template renders before any file is written, and on any error nothing is
written. Outputs are written atomically with mode 0600 (folders 0700) unless
``--mode`` says otherwise, and only if their bytes or mode change (see
:mod:`._output`). ``--dry-run`` stops before writing and lists what would
change, never a value.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ._audit import Reporter
from ._errors import EXIT_CODES_HELP, report
from ._options import guarded, render_options, session, worst
from ._output import Change
from ._rendering import (
    Plan,
    Rendered,
    Request,
    build_outputs,
    plan_request,
    render_plan,
)

__all__ = ["render"]


@click.command(epilog=EXIT_CODES_HELP)
@click.argument(
    "source", type=click.Path(exists=True, allow_dash=True, path_type=Path), metavar="SOURCE"
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file (or folder, for a folder SOURCE). Default for a file: stdout.",
)
@render_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render, then list which outputs would be created, changed or left "
    "unchanged; write nothing, print no value.",
)
@guarded
def render(
    source: Path,
    output: Path | None,
    config: Path | None,
    audit_log: str | None,
    verbose: int,
    dry_run: bool,
    **request_options: Any,
) -> None:
    """Render SOURCE, a template or a folder of templates, with its secrets.

    A file renders to OUTPUT or stdout; SOURCE '-' reads the template from
    stdin. A folder renders to the folder OUTPUT, mirroring the tree: files
    matching --pattern are rendered (app.conf.j2 -> app.conf), --copy files are
    copied, nothing else. Every template renders before any file is written;
    if one fails, nothing is written. Files are written atomically with
    --mode, and only if they change; a symbolic link inside OUTPUT is refused.
    """
    reporter = Reporter(verbose)
    stdin_text = sys.stdin.read() if str(source) == "-" else None
    request = Request.from_params(source, output, stdin_text, **request_options)
    plan = plan_request(request)
    if not plan.jobs and source.is_dir():
        patterns = ", ".join(request.patterns)
        click.echo(f"warning: no file under {source} matches {patterns}", err=True)

    started = time.perf_counter()
    near = () if request.from_stdin else (source,)  # the config beside the templates
    with session(config, audit_log, reporter, near=near) as resolver:
        rendered = render_plan(resolver, plan, request, reporter, progress=not reporter)
        counts = reporter.summary(resolver)

    def summary() -> None:  # the last line of -v
        reporter.info(f"summary: {counts}, {time.perf_counter() - started:.2f} s")

    if rendered.failures:
        codes = {report(exc, template=job.file, root=plan.root) for job, exc in rendered.failures}
        written = "; nothing was written" if plan.output_root is not None else ""
        click.echo(
            f"error: {len(rendered.failures)} of {len(plan.jobs)} templates failed{written}",
            err=True,
        )
        summary()
        raise click.exceptions.Exit(worst(codes))
    write(plan, rendered, request.mode, reporter, dry_run=dry_run)
    summary()


def write(plan: Plan, rendered: Rendered, mode: int, reporter: Reporter, *, dry_run: bool) -> None:
    """Step 4: print the stdout jobs, write (or with ``dry_run``, list) the files."""
    for job, text in rendered.texts.items():
        reporter.info(f"rendered {job.file}")
        if job.output is None:
            if dry_run:
                click.echo(f"{'print':<10} <stdout> ({job.file})")
            else:
                click.echo(text, nl=False)
    outputs = build_outputs(plan, rendered, mode)
    if outputs is None:
        return
    if dry_run:
        changes = outputs.changes()
        for change in changes:
            click.echo(f"{change.status:<10} {change.path}")
        click.echo(f"dry run: {summary(changes)}; nothing was written", err=True)
        return
    written = set(outputs.commit())
    for path in outputs.paths():
        reporter.info(f"{'wrote' if path in written else 'unchanged'} {path}")


def summary(changes: Sequence[Change]) -> str:
    """``1 to create, 2 to change, 3 unchanged``."""
    count = {status: sum(c.status == status for c in changes) for status in ("create", "change")}
    unchanged = len(changes) - count["create"] - count["change"]
    return f"{count['create']} to create, {count['change']} to change, {unchanged} unchanged"
