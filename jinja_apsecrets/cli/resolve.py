"""``resolve``: print one value, or a YAML/JSON document with its references resolved."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from ..errors import SecretNotFoundError, SecretsError
from ..reference import parse_bare
from ..resolver import OnMissing, Resolver
from ._audit import Reporter
from ._errors import EXIT_CODES_HELP, UsageProblem
from ._options import (
    audit_option,
    guarded,
    mode_option,
    on_missing_option,
    plain_config_option,
    session,
    verbose_option,
)
from ._output import write_atomic
from ._rendering import resolve_data

__all__ = ["resolve"]


# -- resolve ---------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("reference", required=False)
@click.option(
    "-f",
    "--file",
    "document",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A YAML or JSON document ('-': stdin) to print with its references resolved.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout."
)
@click.option("-n", "--no-newline", is_flag=True, help="No newline after a single value.")
@mode_option
@plain_config_option
@on_missing_option
@audit_option
@verbose_option
@guarded
def resolve(
    reference: str | None,
    document: str | None,
    output: Path | None,
    no_newline: bool,
    mode: int,
    config: Path | None,
    on_missing: OnMissing | None,
    audit_log: str | None,
    verbose: int,
) -> None:
    """Print the value of REFERENCE, or the document -f FILE resolved.

    REFERENCE is <<conn|ap_sep_v1|path>>, {{conn|ap_sep_v1|path}} or bare
    conn|ap_sep_v1|path. A document is printed in its own format (JSON for
    .json files and JSON input, else YAML).
    """
    if (reference is None) == (document is None):
        raise UsageProblem("give a REFERENCE or -f FILE, not both or neither")
    with session(config, audit_log, Reporter(verbose)) as resolver:
        if reference is not None:
            text = _resolve_one(resolver, reference, on_missing)
            text += "" if no_newline else "\n"
        else:
            assert document is not None
            text = _resolve_document(resolver, document, on_missing)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text, mode)


def _resolve_one(resolver: Resolver, reference: str, on_missing: OnMissing | None) -> str:
    ref = parse_bare(reference)
    if ref is None:
        # The argument is not echoed: it might be a value pasted by mistake.
        raise UsageProblem(
            "REFERENCE is not a reference: expected <<conn|ap_sep_v1|path>> or conn|ap_sep_v1|path"
        )
    value, _ = resolver.lookup([ref.key])[ref.key]
    if not isinstance(value, SecretsError):
        return value
    policy = on_missing or resolver.on_missing
    if policy == "error" or not isinstance(value, SecretNotFoundError):
        raise value.copy()
    shown = "left as its reference text" if policy == "keep" else "printed as an empty value"
    click.echo(f"warning: {value.code}: {value.message}, {shown}", err=True)
    return ref.text if policy == "keep" else ""


def _resolve_document(resolver: Resolver, document: str, on_missing: OnMissing | None) -> str:
    try:
        with click.open_file(document, encoding="utf-8") as handle:
            raw = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageProblem(f"{document}: cannot read: {reason}") from None
    as_json = document.endswith(".json") or (document == "-" and raw.lstrip()[:1] in ("{", "["))
    try:
        data = json.loads(raw) if as_json else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        where = f" at line {line}" if line is not None else ""
        kind = "JSON" if as_json else "YAML"
        raise UsageProblem(f"{document}: cannot parse as {kind}{where}") from None
    resolved = resolve_data(resolver, data, document, on_missing, mark=False)
    if as_json:
        return json.dumps(resolved, indent=2, ensure_ascii=False) + "\n"
    return str(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
