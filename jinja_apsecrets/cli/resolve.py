"""``resolve``: print one value, or a document with its references resolved.

A document is YAML (every document of a ``---`` stream), JSON or dotenv,
told by ``--format`` or the file's extension; a name that says nothing needs
``--format``, so that no file is ever read as something else (a dotenv file
read as YAML is one long string). A dotenv file is re-rendered line by line
(:mod:`jinja_apsecrets.dotenv`), so only the values that held references change.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import click
import yaml

from .. import dotenv
from ..config import safe_load_all
from ..errors import SecretNotFoundError, SecretsError
from ..reference import parse_bare
from ..resolver import OnMissing, Resolver
from ._audit import Reporter
from ._environ import Source, resolve_values
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

__all__ = ["FORMATS", "document_format", "resolve"]

#: Formats of ``resolve -f``.
FORMATS = ("yaml", "json", "dotenv")


# -- resolve ---------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("reference", required=False)
@click.option(
    "-f",
    "--file",
    "document",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A YAML, JSON or dotenv document ('-': stdin) to print with its references resolved.",
)
@click.option(
    "--format",
    "kind",
    type=click.Choice(FORMATS),
    help="The format of -f FILE. Default: by extension (.yaml/.yml, .json, .env and "
    ".env.*); other names need --format. Stdin: JSON if it starts with { or [, else YAML.",
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
    kind: str | None,
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
    conn|ap_sep_v1|path. A document is printed in its own format. YAML keeps
    every document of a multi-document file (---). A dotenv file keeps its
    comments, blank lines, order, quoting and 'export'; values holding
    references get their secrets (quoted where needed).
    """
    if (reference is None) == (document is None):
        raise UsageProblem("give a REFERENCE or -f FILE, not both or neither")
    if kind is not None and document is None:
        raise UsageProblem("--format goes with -f FILE")
    fmt = document_format(document, kind) if document is not None else None
    with session(config, audit_log, Reporter(verbose)) as resolver:
        if reference is not None:
            text = _resolve_one(resolver, reference, on_missing)
            text += "" if no_newline else "\n"
        else:
            assert document is not None
            text = _resolve_document(resolver, document, fmt, on_missing)
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


def document_format(document: str, given: str | None) -> str | None:
    """The format of ``document``: ``given``, else its extension's; ``None``
    for standard input without ``--format`` (JSON or YAML, by its first
    character). An unknown extension is a usage error, never a guess."""
    if given is not None:
        return given
    if document == "-":
        return None
    name = PurePath(document).name
    suffix = PurePath(document).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    if suffix == ".env" or name == ".env" or name.startswith(".env."):
        return "dotenv"
    raise UsageProblem(
        f"{document}: cannot tell its format from its name; pass --format yaml, json or dotenv"
    )


def _resolve_document(
    resolver: Resolver, document: str, kind: str | None, on_missing: OnMissing | None
) -> str:
    try:
        with click.open_file(document, encoding="utf-8") as handle:
            raw = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UsageProblem(f"{document}: cannot read: {reason}") from None
    if kind == "dotenv":
        return _resolve_dotenv(resolver, document, raw, on_missing)
    guessed = kind is None
    if kind is None:
        kind = "json" if raw.lstrip()[:1] in ("{", "[") else "yaml"
    try:
        docs = [json.loads(raw)] if kind == "json" else safe_load_all(raw)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        where = f" at line {line}" if line is not None else ""
        hint = "; for another format pass --format yaml, json or dotenv" if guessed else ""
        raise UsageProblem(f"{document}: cannot parse as {kind.upper()}{where}{hint}") from None
    if guessed and any(isinstance(doc, str) and "\n" in raw.strip() for doc in docs):
        # Several lines read as one string: not what YAML on stdin usually is
        # (a dotenv file, say). Say so rather than print it joined.
        raise UsageProblem(
            f"{document}: reads as one YAML string, not a mapping or list; "
            "pass --format yaml, json or dotenv"
        )
    if len(docs) > 1:
        # A stream of documents (a Kubernetes manifest): every one is kept,
        # resolved in one round; empty ones (a trailing ---) are left out.
        stream = [doc for doc in docs if doc is not None]
        resolved = resolve_data(resolver, stream, document, on_missing, mark=False)
        return str(
            yaml.safe_dump_all(resolved, sort_keys=False, allow_unicode=True, explicit_start=True)
        )
    data = docs[0] if docs else None
    resolved = resolve_data(resolver, data, document, on_missing, mark=False)
    if kind == "json":
        return json.dumps(resolved, indent=2, ensure_ascii=False) + "\n"
    return str(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def _resolve_dotenv(
    resolver: Resolver, document: str, raw: str, on_missing: OnMissing | None
) -> str:
    """A dotenv file with its values resolved; every other byte kept (see
    :mod:`jinja_apsecrets.dotenv`)."""
    try:
        parsed = dotenv.parse(raw)
    except dotenv.DotenvError as exc:
        raise UsageProblem(f"{document}: {exc}") from None
    values: dict[int, str] = {}
    for line in parsed.entries:
        assert line.entry is not None
        assert line.entry.value is not None
        values[line.lineno] = line.entry.value
    sources = {n: Source(document, n) for n in values}
    resolved = resolve_values(resolver, values, sources, audit_name=document, on_missing=on_missing)
    return parsed.render(resolved.values)
