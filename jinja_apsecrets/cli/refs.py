"""``refs``: list the references of templates and vars files and validate them offline."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import jinja2

from ..config import find_config
from ._audit import Reporter
from ._errors import EXIT_CODES_HELP, EXIT_RENDER, UsageProblem, report
from ._lint import Finding, OfflineValidator, lint_template, lint_vars
from ._options import (
    CommandRun,
    config_option,
    exclude_option,
    guarded,
    lint_vars_option,
    pass_run,
    pattern_option_for,
    verbose_option,
)
from ._rendering import matches, walk_tree

__all__ = ["refs"]


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@lint_vars_option
@pattern_option_for("refs")
@exclude_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of lines.")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1) on warnings too: what cannot be known offline, such as a "
    "Vault path on a mount whose KV version is not configured.",
)
@verbose_option
@guarded
@pass_run
def refs(
    run: CommandRun,
    sources: Sequence[Path],
    config: Path | None,
    vars_files: Sequence[str],
    patterns: Sequence[str],
    excludes: Sequence[str],
    as_json: bool,
    strict: bool,
    verbose: int,
) -> None:
    """List every reference in SOURCES (templates, folders) and validate it offline.

    Needs no network and no credentials: the config is loaded as for render
    (the same checks, so a misspelled field fails here too) but ${VARS} are
    not expanded and enc: values are not decrypted; without a config,
    connections are provider ids. The config is -c, $APSECRETS_CONFIG, an
    apsecrets.yaml beside SOURCES or above them up to the repository root, or
    ./apsecrets.yaml; the summary names it. Paths are checked against each
    provider's format and the policy allow-list. Exits 1 if any reference is
    invalid (with --strict, also on warnings). For CI.

    --json prints [{file, line, connection, path, valid, error, warnings}],
    error being null or {code, message, hint}.
    """
    reporter = Reporter(verbose)
    config_path = run.config_path = find_config(config, near=sources)
    validator = OfflineValidator.from_config(config_path)
    used = str(config_path) if config_path else "none (connections are provider ids)"
    reporter.info(f"config: {used}")
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
            if f.error is None and f.warnings:
                status = "warning: " + "; ".join(f.warnings)
            click.echo(f"{f.file}:{f.line}: {f.connection}|{f.path}: {status}")
    for error in broken:
        report(error)
    invalid = sum(not f.valid for f in findings)
    warned = sum(bool(f.warnings) for f in findings)
    click.echo(
        f"{_count(len(findings), 'reference')} in {_count(files, 'file')}, {invalid} invalid"
        + (f", {_count(warned, 'warning')}" if warned else "")
        + (f", {_count(len(broken), 'template')} with syntax errors" if broken else "")
        + f" (config: {used})",
        err=True,
    )
    if invalid or broken or (strict and warned):
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
