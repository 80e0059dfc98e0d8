"""``render`` and ``watch`` for the CLI: which templates, with which variables,
into which files.

Both commands share one flow, in four steps, each a function here:

1. **plan jobs** (:func:`plan_request`): templates found, outputs named, and
   every output checked for links before any lookup (see :mod:`._output`);
2. **collect** the variables (:func:`load_variables`: vars files and ``--set``,
   their references resolved in one round);
3. **render into memory** (:func:`render_plan`): every template, every
   failure kept;
4. **write** (:func:`build_outputs`, then :meth:`~._output.OutputSet.commit`):
   only when nothing failed, and only the files whose bytes or mode change.

``render`` runs the flow once; ``watch`` runs it every round. A failing
template leaves every output as it was.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import click
import jinja2
import yaml

from ..config import safe_load
from ..errors import SecretConnectionError, SecretsError, SecretValidationError
from ..prefetch import collect_static_refs
from ..resolver import OnMissing, Resolver
from ..undefined import SecretText
from ..walk import collect, rebuild
from ._audit import Reporter
from ._errors import UsageProblem
from ._output import OutputSet, refuse_links

__all__ = [
    "STDIN",
    "Job",
    "Plan",
    "Rendered",
    "Request",
    "build_outputs",
    "load_variables",
    "load_vars",
    "make_environment",
    "matches",
    "merge",
    "output_name",
    "parse_assignments",
    "parse_json_assignments",
    "plan_file",
    "plan_request",
    "plan_tree",
    "render_jobs",
    "render_plan",
    "resolve_data",
    "walk_tree",
]

#: A tree with at least this many templates gets a progress bar on a terminal.
PROGRESS_MIN = 10

#: The loader name (and shown file name) of a template read from standard input.
STDIN = "<stdin>"

_LITERAL_SUFFIX = re.compile(r"\*(\.[^*?\[\]]+)")


@dataclass(frozen=True)
class Job:
    """One template to render: its loader name, its file, where it goes
    (``None``: standard output)."""

    name: str
    file: str
    output: Path | None


@dataclass
class Plan:
    """What ``render`` does: templates under ``root`` and files copied as they are.

    ``output_root`` is the output folder (``None``: everything goes to
    stdout); ``inline`` holds templates that are not files (standard input),
    by loader name."""

    root: str
    jobs: list[Job]
    copies: list[tuple[Path, Path]] = field(default_factory=list)
    output_root: Path | None = None
    inline: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What the user asked ``render`` or ``watch`` for: their shared options.

    ``source`` ``-`` is a template read from standard input (``stdin_text``)."""

    source: Path
    output: Path | None
    vars_files: tuple[str, ...] = ()
    assignments: tuple[str, ...] = ()
    json_assignments: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ("*.j2",)
    excludes: tuple[str, ...] = ()
    copies: tuple[str, ...] = ()
    mode: int = 0o600
    on_missing: OnMissing | None = None
    stdin_text: str | None = None

    @classmethod
    def from_params(
        cls, source: Path, output: Path | None, stdin_text: str | None = None, **params: Any
    ) -> Request:
        """The request of a command's parsed :func:`~._options.render_options`
        (click's keyword arguments): one way for ``render`` and ``watch``, so
        an option added there reaches both. Sequences become tuples."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list | tuple) else v for k, v in params.items()
        }
        return cls(source=source, output=output, stdin_text=stdin_text, **fields)

    @property
    def from_stdin(self) -> bool:
        return str(self.source) == "-"

    @property
    def to_stdout(self) -> bool:
        return self.output is None or str(self.output) == "-"


def plan_request(request: Request) -> Plan:
    """Step 1: the plan for ``request`` (:class:`UsageProblem` for impossible
    ones). Every output is checked before any lookup: a symbolic link at an
    output, or at a folder between the output folder and it, is refused."""
    output = None if request.to_stdout else request.output
    if request.from_stdin:
        if output is not None and output.is_dir():
            raise UsageProblem("a template from stdin needs -o FILE, not a folder")
        plan = Plan(
            os.curdir, [Job(STDIN, STDIN, output)], inline={STDIN: request.stdin_text or ""}
        )
        plan.output_root = None if output is None else output.parent
    elif request.source.is_dir():
        if output is None:
            raise UsageProblem("rendering a folder needs -o OUTPUT_FOLDER")
        if output.exists() and not output.is_dir():
            raise UsageProblem(f"{output}: exists and is not a folder")
        plan = plan_tree(request.source, output, request.patterns, request.excludes, request.copies)
        plan.output_root = output
    else:
        plan = plan_file(request.source, output, request.patterns)
        job_output = plan.jobs[0].output
        plan.output_root = None if job_output is None else job_output.parent
    for job in plan.jobs:
        if job.file in plan.inline or job.output is None:
            continue
        if job.output.resolve() == Path(job.file).resolve():
            raise UsageProblem(f"{job.file}: the output would overwrite the template")
    if plan.output_root is not None:
        targets = [job.output for job in plan.jobs if job.output is not None]
        refuse_links(plan.output_root, [*targets, *(dst for _, dst in plan.copies)])
    return plan


def output_name(filename: str, patterns: Sequence[str]) -> str:
    """``filename`` without the suffix of the first pattern of the form
    ``*.SUFFIX`` that it matches (``app.conf.j2`` -> ``app.conf`` for ``*.j2``);
    other patterns keep the name."""
    for pattern in patterns:
        literal = _LITERAL_SUFFIX.fullmatch(pattern)
        if literal and filename.endswith(literal[1]) and len(filename) > len(literal[1]):
            return filename[: -len(literal[1])]
    return filename


def plan_file(template: Path, output: Path | None, patterns: Sequence[str]) -> Plan:
    """One template: to ``output``, into ``output`` if it is a folder, or to stdout."""
    if output is not None and output.is_dir():
        output = output / output_name(template.name, patterns)
    root = os.fspath(template.parent)
    return Plan(root, [Job(template.name, os.path.normpath(template), output)])


def matches(rel: str, patterns: Sequence[str]) -> bool:
    """Whether ``rel`` (``/``-separated) matches a pattern by file name or by path."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatchcase(name, p) or fnmatchcase(rel, p) for p in patterns)


def walk_tree(root: Path, skip: Path | None, excludes: Sequence[str]) -> Iterator[str]:
    """Relative paths (``/``-separated) of the files under ``root``, sorted,
    leaving out the folder ``skip`` and anything matching ``excludes``."""
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(
            d
            for d in dirs
            if not matches(prefix + d, excludes)
            and (skip is None or (Path(folder) / d).resolve() != skip)
        )
        for name in sorted(files):
            rel = prefix + name
            if not matches(rel, excludes):
                yield rel


def plan_tree(
    root: Path,
    output: Path,
    patterns: Sequence[str],
    excludes: Sequence[str] = (),
    copies: Sequence[str] = (),
) -> Plan:
    """Every file under ``root`` that matches ``patterns`` (by name or relative
    path) becomes a template rendered to the same place under ``output``, its
    suffix dropped (:func:`output_name`); files matching ``copies`` are copied;
    anything else, and anything matching ``excludes``, is left out. An output
    folder inside ``root`` is not searched."""
    out = output.resolve()
    skip = out if out != root.resolve() else None
    plan = Plan(os.fspath(root), [])
    for rel in walk_tree(root, skip, excludes):
        name = rel.rsplit("/", 1)[-1]
        target = output.joinpath(*rel.split("/")[:-1])
        if matches(rel, patterns):
            file = os.path.normpath(os.path.join(plan.root, rel))
            plan.jobs.append(Job(rel, file, target / output_name(name, patterns)))
        elif matches(rel, copies):
            plan.copies.append((root / rel, target / name))
    return plan


# -- variables ---------------------------------------------------------------------


def load_variables(
    resolver: Resolver, request: Request, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Step 2: the template variables: the vars files merged in order, then
    ``--set``; the references in them resolved (one round per file)."""
    variables: dict[str, Any] = {}
    for file in request.vars_files:
        data = resolve_data(resolver, load_vars(file), file, request.on_missing)
        variables = merge(variables, data)
        if reporter is not None:
            reporter.info(f"vars: {file}")
    if request.assignments:
        sets = parse_assignments(request.assignments)
        variables = merge(variables, resolve_data(resolver, sets, "--set", request.on_missing))
    if request.json_assignments:
        sets = parse_json_assignments(request.json_assignments)
        variables = merge(variables, resolve_data(resolver, sets, "--set-json", request.on_missing))
    return variables


def load_vars(path: str) -> dict[str, Any]:
    """Template variables from a YAML or JSON (``.json``) file holding a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else safe_load(text)  # alias-bomb safe
    except OSError as exc:
        raise SecretValidationError(f"{path}: cannot read vars file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretValidationError(f"{path}: vars file is not UTF-8 text") from None
    except (ValueError, yaml.YAMLError) as exc:
        # Only the position: the parser's messages quote the text.
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        where = f" at line {line}" if line is not None else ""
        raise SecretValidationError(f"{path}: cannot parse vars file{where}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SecretValidationError(f"{path}: vars file must hold a mapping of names to values")
    return dict(data)


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``--set`` items: ``key=value``, with dotted keys for nested mappings.

    Values are strings, as written (a vars file gives other types)."""
    out: dict[str, Any] = {}
    for item in items:
        key, parts, value = _assignment(item)
        if not parts:
            raise SecretValidationError(f"--set {key!r}: expected key=value (key may be a.b.c)")
        out = merge(out, _nest(parts, value))
    return out


def parse_json_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``--set-json`` items as one nested mapping (``a.b=1`` -> ``{"a": {"b": 1}}``).
    A malformed item is a :class:`UsageProblem` (exit 2) that never echoes the value."""
    out: dict[str, Any] = {}
    for item in items:
        key, parts, text = _assignment(item)
        if not parts:
            raise UsageProblem(f"--set-json {key!r}: expected KEY=JSON (KEY may be a.b.c)")
        try:
            value: Any = json.loads(text)
        except ValueError as exc:
            # Position only: the text may be a value typed by mistake.
            raise UsageProblem(
                f"--set-json {key}: the value is not JSON (column {getattr(exc, 'colno', '?')}); "
                "strings need quotes (--set-json 'name=\"text\"') or --set"
            ) from None
        out = merge(out, _nest(parts, value))
    return out


def _assignment(item: str) -> tuple[str, list[str], str]:
    """``a.b=text`` as ``("a.b", ["a", "b"], "text")``; the parts are empty if
    ``item`` is malformed (no ``=``, or an empty part of the key)."""
    key, eq, text = item.partition("=")
    parts = key.split(".")
    return key, parts if eq and all(p.strip() for p in parts) else [], text


def _nest(parts: Sequence[str], value: Any) -> dict[str, Any]:
    for part in reversed(parts[1:]):
        value = {part: value}
    return {parts[0]: value}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``; nested mappings are merged, not replaced."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def _mark(old: Any, new: Any) -> Any:
    """``new`` with each string a reference was substituted into as
    :class:`SecretText` (its repr hides it; it is never parsed again)."""
    if new is old:
        return new
    if isinstance(new, str) and isinstance(old, str):
        return SecretText(new)
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        return {k: _mark(old.get(k), v) for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, (list, tuple)):
        return [_mark(a, b) for a, b in zip(old, new, strict=True)]
    return new


def resolve_data(
    resolver: Resolver,
    data: Any,
    source: str,
    on_missing: OnMissing | None,
    *,
    mark: bool = True,
) -> Any:
    """``data`` (from ``source``, named in the audit log and in errors) with
    every reference in its strings resolved, in one round; ``data`` itself is
    not changed. With ``mark``, strings a value went into are
    :class:`SecretText` (for templates: their repr hides them)."""
    refs = collect(data)
    if not refs:
        return data
    found = resolver.lookup({r.key for r in refs}, template=source)
    values = {ref: value for ref, (value, _) in found.items()}
    try:
        resolved = rebuild(data, values, on_missing or resolver.on_missing)
    except SecretsError as exc:
        # Named after the data's source; a line of some template does not apply.
        raise exc.copy(template=source, lineno=None) from None
    return _mark(data, resolved) if mark else resolved


# -- rendering ---------------------------------------------------------------------


def make_environment(
    root: str,
    resolver: Resolver,
    on_missing: OnMissing | None,
    inline: Mapping[str, str] | None = None,
) -> jinja2.Environment:
    """The CLI's environment: templates under ``root`` (and the ``inline``
    ones, by name), strict undefined, trailing newlines kept (config files
    need them), no autoescape."""
    loader: jinja2.BaseLoader = jinja2.FileSystemLoader(root)
    if inline:
        loader = jinja2.ChoiceLoader([jinja2.DictLoader(dict(inline)), loader])
    env = jinja2.Environment(  # noqa: S701 - config files, not HTML
        loader=loader,
        extensions=["jinja_apsecrets.SecretsExtension"],
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.install_secret_resolver(resolver, on_missing=on_missing)  # type: ignore[attr-defined]
    return env


def render_jobs(
    env: jinja2.Environment,
    jobs: Sequence[Job],
    variables: Mapping[str, Any],
    *,
    progress: bool = False,
) -> tuple[dict[Job, str], list[tuple[Job, Exception]]]:
    """Render every job into memory: the texts, and the failures.

    A failing template does not stop the others (every failure is reported),
    except a connection failure: the backend is down, so the rest would wait
    for it in vain.
    """
    texts: dict[Job, str] = {}
    failures: list[tuple[Job, Exception]] = []
    bar = progress and len(jobs) >= PROGRESS_MIN and on_terminal()
    with (
        click.progressbar(jobs, label="Rendering", file=sys.stderr, show_pos=True)
        if bar
        else nullcontext(jobs)
    ) as items:
        for job in items:
            try:
                texts[job] = env.get_template(job.name).render(variables)
            except SecretConnectionError as exc:
                failures.append((job, exc))
                break
            except Exception as exc:  # reported by type and place; see _errors
                failures.append((job, exc))
    return texts, failures


@dataclass
class Rendered:
    """Step 3's result: the texts of the jobs that rendered, the failures, and
    the files of every template loaded (includes too: what ``watch`` watches)."""

    texts: dict[Job, str]
    failures: list[tuple[Job, Exception]]
    loaded: list[str] = field(default_factory=list)


def render_plan(
    resolver: Resolver,
    plan: Plan,
    request: Request,
    reporter: Reporter | None = None,
    *,
    progress: bool = False,
) -> Rendered:
    """Steps 2 and 3: collect the variables, then render every job into memory.

    A failure in the variables is raised (every job needs them); a template's
    failure is kept in :attr:`Rendered.failures`."""
    env = make_environment(plan.root, resolver, request.on_missing, plan.inline)
    prefetch_plan(resolver, env, plan, request)
    variables = load_variables(resolver, request, reporter)
    texts, failures = render_jobs(env, plan.jobs, variables, progress=progress)
    cached = env.cache.values() if env.cache is not None else []
    loaded = sorted({t.filename for t in cached if t.filename and t.name not in plan.inline})
    return Rendered(texts, failures, loaded)


def prefetch_plan(
    resolver: Resolver, env: jinja2.Environment, plan: Plan, request: Request
) -> None:
    """Fetch, in one round, the static references of every template of the
    plan (and of those they load) and of the vars files, before anything
    renders: the job is the unit of fetching. Errors stay with the references
    and are reported where they are used; unreadable inputs are left to the
    steps that read them."""
    refs: dict[tuple[str, str], None] = {}
    for file in request.vars_files:
        try:
            refs.update(dict.fromkeys(r.key for r in collect(load_vars(file))))
        except SecretsError:
            continue
    names = [job.name for job in plan.jobs]
    refs.update(dict.fromkeys(collect_static_refs(env, (), names, None)))
    wanted = resolver.cacheable(refs)
    if wanted:
        resolver.lookup(wanted)


def build_outputs(plan: Plan, rendered: Rendered, mode: int) -> OutputSet | None:
    """Step 4's input: the files to write (rendered jobs with an output, and
    the copies), or ``None`` if everything goes to stdout."""
    if plan.output_root is None:
        return None
    outputs = OutputSet(plan.output_root, mode)
    for job, text in rendered.texts.items():
        if job.output is not None:
            outputs.add(job.output, text, mode)
    for src, dst in plan.copies:
        outputs.add(dst, src.read_bytes(), src.stat().st_mode & 0o7777)
    return outputs


def on_terminal() -> bool:
    """Whether standard error is a terminal (where a progress bar belongs)."""
    return sys.stderr.isatty()
