"""The Jinja2 extension: references in template text become render-time lookups.

How a template is compiled (each hook reads only what Jinja hands it):

1. ``preprocess`` scans the source with the environment's own delimiters
   (:class:`~jinja_apsecrets.reference.TemplateScanner`). Each run of
   references separated only by plain text becomes one internal tag on the
   same lines (so line numbers do not move), with ``+`` so that
   ``trim_blocks`` and ``lstrip_blocks`` leave the text around it as it was:
   ``{%+ __apsecrets_<nonce>__ "span" "layout" +%}``, the run's text and seven
   offsets a reference (see :class:`~jinja_apsecrets.runs.Run`); the nonce in
   the tag's name keeps templates from writing a run tag by hand. Source
   without the separator ``ap_sep_v1`` is returned untouched; the rewrite works on the
   scanner's offsets (:meth:`~jinja_apsecrets.reference.TemplateScanner.spans`),
   with no object made per reference.
2. ``filter_stream`` reads the token stream and plans the template
   (:func:`~jinja_apsecrets.prefetch.plan_tokens`): the runs, each with its
   references' lines; a prefetch tag in front of the template and of each
   block holding runs; ``secret(...)`` calls as direct filter calls; the
   manifest of the template's static references and the templates it loads.
   All of it rides in the tokens the parser reads next.
3. ``parse`` validates each reference offline (unknown connection, malformed
   path: a :class:`SecretReferenceSyntaxError` with template and line) and
   emits the nodes: a prefetch binds the rendered runs of its scope to local
   names, and each run prints its names (under autoescape, a run escaped
   already is printed as it is, by a filter block: see :mod:`.runs`).

Imported templates: Jinja keeps an imported template's module on the template;
a module that holds values is kept in the render cache instead, or not at all
(:class:`_FreshModules`).

Nothing is resolved at compile time: compiled code holds connection names,
paths and template text, never a value. At render time the prefetch looks the
scope's references up in one round (the top level: with those of every
template it loads) and renders all its runs
(:mod:`jinja_apsecrets.runs`); the rendered runs are kept for the lifetime of
their secrets, so a warm render costs one cache check over plain Jinja2.
"""

from __future__ import annotations

import copyreg
import dis
import logging
import re
from collections.abc import Callable, Mapping
from functools import partial
from types import CodeType
from typing import Any, NamedTuple, cast

from jinja2 import nodes, pass_context, pass_eval_context
from jinja2.environment import Environment, Template, TemplateModule
from jinja2.ext import Extension
from jinja2.lexer import TokenStream
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context

from .errors import SecretReferenceSyntaxError, SecretsError
from .functions import (
    b64decode,
    b64encode,
    install_secret_resolver,
    missing_value,
    no_resolver,
    on_missing_policy,
    render_cache,
    resolve_secrets,
    secret,
)
from .prefetch import (
    CALL_FILTER,
    INTERNAL_TAG,
    MARK,
    PREFETCH_FILTER,
    PREFETCH_TAG,
    RAW_FILTER,
    RUN_TAG,
    RUN_TOKEN,
    SCOPE_TOKEN,
    VALUE_FILTER,
    PlannedRun,
    Scope,
    code_objects,
    collect_static_refs,
    manifest_of,
    plan_tokens,
    root_scope_key,
)
from .reference import SEPARATOR, Reference, RefSpan, Span, TemplateScanner
from .resolver import OnMissing, Resolver
from .runs import Pending, Ref, RenderCache, Run, conceal_found, render_runs, runs_from_spec
from .twins import MaybeAwaitable, settle, then
from .values import SecretText

__all__ = ["SecretsExtension"]

log = logging.getLogger("jinja_apsecrets")

# Internal filters the compiled code calls (PREFETCH_FILTER, VALUE_FILTER,
# CALL_FILTER, named in prefetch): a filter is called directly, where a global
# function goes through Context.call on every call.

_NEWLINES = re.compile(r"\r\n|\r|\n")


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (the lexer reads it back exactly)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SecretsExtension(Extension):
    """Resolve ``<<conn|ap_sep_v1|path>>`` and ``{{conn|ap_sep_v1|path}}`` at render time.

    Adds to the environment (through ``environment.extend``):
    ``install_secret_resolver(resolver, *, on_missing=None, resolve_values=False)``,
    and the attributes ``secret_resolver``, ``secret_on_missing``,
    ``secret_resolve_values`` and ``secret_render_cache``. Adds the
    ``secret(connection, path)`` global, the ``resolve_secrets`` filter and,
    where the environment has none of that name, ``b64encode`` and ``b64decode``.
    """

    tags = {RUN_TAG, PREFETCH_TAG, INTERNAL_TAG}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.extend(
            secret_resolver=None,
            secret_on_missing=None,
            secret_resolve_values=False,
            secret_render_cache=None,
            install_secret_resolver=partial(install_secret_resolver, environment),
        )
        environment.globals.setdefault("secret", secret)
        environment.filters.setdefault("resolve_secrets", resolve_secrets)
        environment.filters.setdefault("b64encode", b64encode)
        environment.filters.setdefault("b64decode", b64decode)
        environment.filters[PREFETCH_FILTER] = _prefetch_filter
        environment.filters[CALL_FILTER] = _call_filter
        environment.filters[VALUE_FILTER] = _value_filter
        # A raw run's element is a plain str (or a Pending, whose str() prints
        # it as its scope escapes): str returns it as it is, in C.
        environment.filters[RAW_FILTER] = str
        self._scanner: tuple[tuple[Any, ...], TemplateScanner] | None = None
        environment.template_class = _fresh_class(environment.template_class)

    def bind(self, environment: Environment) -> SecretsExtension:
        """A copy for an overlay environment, whose install method is its own
        (and whose delimiters may differ)."""
        rv = super().bind(environment)
        rv._scanner = None
        environment.install_secret_resolver = partial(  # type: ignore[attr-defined]
            install_secret_resolver, environment
        )
        return rv

    # -- compile time ---------------------------------------------------------------

    def _get_scanner(self) -> TemplateScanner:
        env = self.environment
        key = (
            env.block_start_string,
            env.block_end_string,
            env.variable_start_string,
            env.variable_end_string,
            env.comment_start_string,
            env.comment_end_string,
            env.line_statement_prefix,
            env.line_comment_prefix,
        )
        cached = self._scanner
        if cached is None or cached[0] != key:
            cached = self._scanner = (key, TemplateScanner(env))
        return cached[1]

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if SEPARATOR not in source:
            return source
        original = source
        if "\r" in source:
            # Jinja's lexer reads "\r\n" and a lone "\r" as line breaks: scan what it will see.
            source = _NEWLINES.sub("\n", source)
        # References and Jinja syntax, in order; plain text lies between them.
        spans = self._get_scanner().spans(source)
        env = self.environment
        block_start, block_end = env.block_start_string, env.block_end_string
        # The lexer reads a line break in a string back as newline_sequence.
        extra = len(env.newline_sequence) - 1
        out: list[str] = []
        pos = 0  # source is copied up to here
        k = -1  # index in spans of the run's first reference
        previous: RefSpan | None = None  # the run's last reference

        def close(m: int) -> None:
            """Write the run of ``spans[k:m + 1]`` (references and text) as a tag."""
            nonlocal pos
            first, last = spans[k][2], spans[m][2]
            assert first is not None
            assert last is not None
            begin = block_start + ("-" if first[6] else "+")
            end = ("-" if last[7] else "+") + block_end
            start = max(pos, self._lead(source, spans, k))
            if start == first[0]:
                start = self._tag_start(source, pos, first[0], begin)
            stop = self._tail(source, spans, m)
            # Seven numbers a reference (see runs.Run): offsets as the lexer
            # reads the run's text, and the reference's line within the run.
            layout: list[str] = []
            at = lines = 0  # offset (as the lexer reads it) and line of `here`
            here = start
            for _, _, ref in spans[k : m + 1]:
                assert ref is not None
                ref_start, ref_end, conn_start, conn_end, path_start, path_end, _, _, _ = ref
                breaks = source.count("\n", here, ref_start)
                at += ref_start - here + extra * breaks
                lines += breaks
                here = ref_start
                conn_at, path_at = at + conn_start - ref_start, at + path_start - ref_start
                layout.append(
                    f"{at} {ref_end - ref_start} {conn_at} {conn_end - conn_start}"
                    f" {path_at} {path_end - path_start} {lines}"
                )
            # The span keeps its line breaks, so lines do not move.
            span = _literal(source[start:stop])
            out.append(f'{source[pos:start]}{begin} {RUN_TAG} {span} "{" ".join(layout)}" {end}')
            pos = stop

        for i, (_, _, ref) in enumerate(spans):
            if ref is None:
                if previous is not None:
                    close(i - 1)
                    previous = None
                continue
            # References joined only by plain text form one run; Jinja
            # syntax or whitespace control between them ends it.
            if previous is not None and (ref[6] or previous[7]):
                close(i - 1)
                previous = None
            if previous is None:
                k = i
            previous = ref
        if previous is not None:
            close(len(spans) - 1)
        if not out:
            return original
        out.append(source[pos:])
        return "".join(out)

    def _is_plain_variable(self, source: str, span: Span) -> tuple[bool, bool]:
        """Whether ``span`` is a ``{{ ... }}`` tag, and whether it strips the
        whitespace before / after it (``{{-`` / ``-}}``)."""
        env = self.environment
        vs, ve = env.variable_start_string, env.variable_end_string
        start, end, ref = span
        if ref is not None or not source.startswith(vs, start):
            return False, False
        before = source.startswith("-", start + len(vs))
        after = source.endswith(ve, 0, end) and source[end - len(ve) - 1] == "-"
        return not before, not after

    def _lead(self, source: str, spans: list[Span], k: int) -> int:
        """Where the run may start: the plain text before its first reference
        joins it when nothing in Jinja changes that text (it follows the
        template's start or a ``{{ }}`` tag without ``-``)."""
        start, _, first = spans[k]
        assert first is not None
        if first[6]:
            return start
        text_start = spans[k - 1][1] if k else 0  # plain text from here to start
        if text_start == start:
            return start
        if k == 0:
            return 0
        _, plain_after = self._is_plain_variable(source, spans[k - 1])
        return text_start if plain_after else start

    def _tail(self, source: str, spans: list[Span], m: int) -> int:
        """Where the run may end: the plain text after its last reference joins
        it when it runs to the end of the template (less a final line break,
        which the lexer may drop) or to a ``{{ }}`` tag without ``-``."""
        _, end, last = spans[m]
        assert last is not None
        if last[7]:
            return end
        if m + 1 == len(spans):
            n = len(source)
            if end == n:
                return end
            return n - 1 if source.endswith("\n") else n
        text_end = spans[m + 1][0]
        if text_end == end:
            return end
        plain_before, _ = self._is_plain_variable(source, spans[m + 1])
        return text_end if plain_before else end

    def _tag_start(self, source: str, low: int, start: int, begin: str) -> int:
        """Where the tag may start: text right before it must not run into its
        opening delimiter (``{`` + ``{%+`` would read as ``{{``); such
        characters move into the run, as its leading text."""
        env = self.environment
        starts = (env.block_start_string, env.variable_start_string, env.comment_start_string)
        lead = source[max(low, start - max(map(len, starts))) : start]
        if "\n" in lead:
            lead = lead[lead.rindex("\n") + 1 :]
        probe = lead + begin
        for i in range(len(lead)):
            if any(probe.startswith(d, i) and i + len(d) > len(lead) for d in starts):
                return start - (len(lead) - i)
        return start

    def filter_stream(self, stream: TokenStream) -> Any:
        env = self.environment
        # Where Jinja decides how each value prints (finalize, native types),
        # each value is printed on its own, between its run's text.
        split = env.finalize is not None or issubclass(
            env.code_generator_class, NativeCodeGenerator
        )
        return plan_tokens(stream, env, split=split)

    def parse(self, parser: Parser) -> nodes.Node:
        tag = next(parser.stream)
        token = parser.stream.current
        # Tokens of these types come only from plan_tokens, values and all.
        if tag.value == PREFETCH_TAG and token.type == SCOPE_TOKEN:
            next(parser.stream)
            return self._prefetch_node(parser, cast(Scope, token.value), tag.lineno)
        if tag.value == INTERNAL_TAG and token.type == RUN_TOKEN:
            next(parser.stream)
            return self._run_node(parser, cast(PlannedRun, token.value), tag.lineno)
        # (The run tag's own name is not repeated: it holds the nonce.)
        named = PREFETCH_TAG if tag.value == PREFETCH_TAG else INTERNAL_TAG
        parser.fail(f"{named} is internal to jinja_apsecrets", tag.lineno)

    def _prefetch_node(self, parser: Parser, scope: Scope, lineno: int) -> nodes.Node:
        args: list[nodes.Expr] = [
            nodes.Const(parser.name),
            nodes.Const(scope.autoescape),
            nodes.Const(scope.spec),
        ]
        call = nodes.Filter(
            nodes.Const(scope.key), PREFETCH_FILTER, args, [], None, None, lineno=lineno
        )
        if not scope.names:
            return nodes.ExprStmt(call, lineno=lineno)
        target = nodes.Tuple([_internal_name(n, lineno) for n in scope.names], "store")
        return nodes.Assign(target, call, lineno=lineno)

    def _run_node(self, parser: Parser, planned: PlannedRun, lineno: int) -> nodes.Node:
        run, pieces = planned.run, planned.pieces
        for ref in planned.first:
            self._validate(parser, ref)
        if run.raw:
            # A filter block with nothing in it yields its filter's result as
            # it is: the element, escaped already, without Jinja's escape().
            element = _internal_name(planned.names[0], lineno)
            printed = nodes.Filter(element, RAW_FILTER, [], [], None, None, lineno=lineno)
            return nodes.FilterBlock([], printed, lineno=lineno)
        if not run.split:
            return nodes.Output([_internal_name(planned.names[0], lineno)], lineno=lineno)
        # Each value printed by Jinja, which applies finalize and escaping to
        # values only, never to the template text between them.
        children: list[nodes.Expr] = []
        names = iter(planned.names)
        for piece in pieces:
            if isinstance(piece, str):
                children.append(nodes.TemplateData(piece))
            else:
                value = _internal_name(next(names), lineno)
                children.append(nodes.Filter(value, VALUE_FILTER, [], [], None, None))
        return nodes.Output(children, lineno=lineno)

    def _validate(self, parser: Parser, ref: Ref) -> None:
        conn, path, text, lineno = ref

        def fail(message: str, hint: str | None = None) -> SecretReferenceSyntaxError:
            return SecretReferenceSyntaxError(
                message, lineno, parser.name, parser.filename, provider=conn, path=path, hint=hint
            )

        dynamic = self._get_scanner().dynamic_path_error(Reference(conn, path, text, 0, 0, lineno))
        if dynamic:
            raise fail(dynamic)
        if not path:
            raise fail("Empty secret path in reference")
        resolver: Resolver | None = getattr(self.environment, "secret_resolver", None)
        if resolver is None:
            return  # checked again when rendered
        try:
            resolver.validate(conn, path)
        except SecretsError as exc:
            raise fail(exc.message, exc.hint) from None


def _internal_name(name: str, lineno: int) -> nodes.InternalName:
    """A name of the compiled code that is no template variable: not looked up
    in the context, not exported, not shown in Jinja's rewritten tracebacks.
    Made as ``Parser.free_identifier`` makes one, with a name chosen when the
    tokens were planned (the prefetch binds it, the run reads it)."""
    rv = object.__new__(nodes.InternalName)
    nodes.Node.__init__(rv, name, lineno=lineno)
    return rv


# -- what compiled templates call -------------------------------------------------------


@pass_context
def _prefetch_filter(
    context: Context, key: str, name: str | None, autoescape: bool, spec: tuple[Any, ...]
) -> Any:
    """The rendered runs of one scope: from the cache, else looked up and rendered."""
    cache: RenderCache | None = context.environment.secret_render_cache  # type: ignore[attr-defined]
    if cache is not None:
        # RenderCache.runs_hit, inlined: this is the whole cost of a warm render.
        entry = cache.runs.get(key)
        if entry is not None and entry[0] > cache.timer() and entry[1] == cache.secrets.generation:
            return entry[2]
    return _render_scope(context.environment, key, name, autoescape, spec)


def _render_scope(
    env: Environment, key: str, name: str | None, autoescape: bool, spec: tuple[Any, ...]
) -> Any:
    runs = runs_from_spec(spec[3])
    resolver: Resolver | None = env.secret_resolver  # type: ignore[attr-defined]
    if resolver is None:
        error = no_resolver(name, None)
        values = {ref.key: error for run in runs for ref in run.refs}
        policy: OnMissing = getattr(env, "secret_on_missing", None) or "error"
        return render_runs(runs, values, partial(missing_value, policy=policy), name, autoescape)[0]
    cache = render_cache(env, resolver)
    refs = dict.fromkeys(ref.key for run in runs for ref in run.refs)
    if spec[0] == MARK:
        # The whole tree in this round, but not the references of connections
        # that keep nothing (ttl 0): their templates read them when they render.
        tree = collect_static_refs(env, spec[1], spec[2], name)
        refs.update(dict.fromkeys(resolver.cacheable(tree)))
    generation = resolver.generation()
    decide = partial(missing_value, policy=on_missing_policy(env, resolver))
    finish = partial(_finish, cache, key, runs, decide, name, autoescape, generation)
    # Values already looked up in this render (the top level's round) or
    # recently are taken from the cache: a cold render makes one lookup.
    warm = cache.entries(refs)
    if warm is not None:
        return finish(warm)
    if env.is_async:
        return then(resolver.lookup_async(list(refs), template=name), finish)
    return finish(resolver.lookup(list(refs), template=name))


def _finish(
    cache: RenderCache,
    key: str,
    runs: tuple[Run, ...],
    decide: Any,
    name: str | None,
    autoescape: bool,
    generation: int,
    found: Mapping[tuple[str, str], tuple[str | SecretsError, float]],
) -> tuple[Any, ...]:
    expiries = {ref: exp for ref, (_, exp) in found.items()}
    values, expires = conceal_found(found)
    del found  # from here on, this frame holds values only as SecretText
    for ref, value in values.items():
        # secret() calls of the scope (constant or not) are then answered warm.
        if isinstance(value, SecretText):
            cache.store_value(ref, value, expiries[ref], generation)
    elements, complete = render_runs(runs, values, decide, name, autoescape)
    if complete:
        if expires == float("inf"):  # nothing looked up: keep for the default ttl
            expires = cache.timer() + cache.resolver.ttl
        cache.store_runs(key, elements, expires, generation)
    return elements


@pass_context
def _call_filter(context: Context, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``secret(...)`` as compiled: ``fn`` is whatever the name ``secret`` holds."""
    if fn is secret and len(args) == 2 and not kwargs:
        cache: RenderCache | None = context.environment.secret_render_cache  # type: ignore[attr-defined]
        if cache is not None:
            # RenderCache.value_hit, inlined: a warm call answered from a dict.
            try:
                entry = cache.values.get(args)
            except TypeError:  # unhashable arguments: secret() says what is wrong
                entry = None
            if (
                entry is not None
                and entry[0] > cache.timer()
                and entry[1] == cache.secrets.generation
            ):
                return entry[2]
        return secret(context, *args)
    env = context.environment
    if env.sandboxed:
        # What Jinja compiles a call to in a sandbox: its safety check first
        # (an unsafe callable bound to the name ``secret`` is refused there too).
        return env.call(context, fn, *args, **kwargs)  # type: ignore[attr-defined]
    return context.call(fn, *args, **kwargs)


@pass_eval_context
def _value_filter(eval_ctx: EvalContext, value: Any) -> Any:
    """A value of a split run, with a failed reference decided."""
    if isinstance(value, Pending):
        return value.printed(bool(eval_ctx.autoescape))
    return value


# -- imported templates ------------------------------------------------------------------

#: Names in compiled code that mark a template reading secrets besides its static
#: references (a ``secret()`` call, the ``resolve_secrets`` filter, and the
#: name ``secret`` looked up at all: ``{% set f = secret %}`` or ``(secret)(...)``
#: call it without the rewrite; a variable of that name only costs a fresh module).
_SECRET_NAMES = frozenset({CALL_FILTER, "resolve_secrets", "secret"})
#: The Environment methods compiled code loads templates with.
_LOADER_METHODS = frozenset({"get_template", "select_template", "get_or_select_template"})


def _loads_computed_names(codes: list[CodeType]) -> bool:
    """Whether compiled code loads a template by a name not written as one
    string constant (``{% include name %}``, ``{% import "a" ~ b as x %}``):
    what that template reads is unknown when this one compiles. Jinja calls
    ``get_template`` for a constant name, passed right after the method is
    loaded, and the other two methods for lists and computed names."""
    for code in codes:
        if not _LOADER_METHODS.intersection(code.co_names):
            continue
        instructions = list(dis.get_instructions(code))
        for i, ins in enumerate(instructions):
            if ins.argval not in _LOADER_METHODS or ins.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
                continue
            if ins.argval != "get_template":  # a list of names, or a computed one
                return True
            after = instructions[i + 1] if i + 1 < len(instructions) else None
            if after is None or after.opname != "LOAD_CONST" or not isinstance(after.argval, str):
                return True
    return False


class _Reads(NamedTuple):
    """How a compiled template reads secrets (memoized on the template)."""

    any: bool
    #: The render-cache key of its top-level runs, if it reads secrets only
    #: through them: a module made from those runs can be checked against it.
    only_runs: str | None


#: A template whose module is made on every import.
_ALWAYS_FRESH = _Reads(True, None)


def _reads_secrets(template: Template, seen: set[str] | None = None) -> _Reads:
    """Whether rendering ``template``, or a template it loads by a constant
    name, reads secrets, and whether only through its own top-level runs."""
    known: _Reads | None = template.__dict__.get("_apsecrets_reads")
    if known is not None:
        return known
    seen = set() if seen is None else seen
    seen.add(template.name or "")
    refs, deps = manifest_of(template)
    codes = code_objects(template)
    called = any(
        isinstance(const, str) and const in _SECRET_NAMES
        for code in codes
        for const in code.co_consts
    )
    # A template loaded by a computed name may read secrets with TTLs of its
    # own: never kept as if it were one of this template's runs.
    loaded = _loads_computed_names(codes)
    for dep in deps if not loaded else ():
        try:
            name = template.environment.join_path(dep, template.name or "")
            if name in seen:
                continue
            if _reads_secrets(template.environment.get_template(name), seen).any:
                loaded = True
                break
        except Exception:  # noqa: S112 - the tag that loads it reports that itself
            continue
    key = root_scope_key(template)
    # Runs in blocks have scopes (and cache entries) of their own.
    only_runs = key if not (called or loaded or template.blocks) else None
    known = _Reads(bool(refs) or called or loaded, only_runs)
    template.__dict__["_apsecrets_reads"] = known
    return known


class _FreshModules:
    """Jinja keeps an imported template's rendered module on the template (in
    the template cache) and serves it to every later ``{% import %}`` and
    ``{% from ... import %}``. A module of a template that reads secrets holds
    values (exported variables, macros bound to rendered runs), so it is never
    kept there (DESIGN rule 1): such a template's module is made on each
    import, as Jinja does for imports that see the context's globals.

    A template that reads secrets only through its top-level runs (a library
    of macros holding references) has its module kept in the render cache
    instead, beside the runs, and served while the warm runs are the ones it
    was made from (the same tuple: neither expired nor invalidated since).
    Templates that read no secrets keep Jinja's cache."""

    environment: Environment
    globals: Any
    make_module: Any
    make_module_async: Any

    def _fresh(self, ctx: Context | None) -> _Reads | None:
        """How the template reads secrets, or None where Jinja's own
        ``_get_default_module`` decides (no secrets; async mode in the sync
        call, which Jinja refuses; an import that sees the context's extra
        globals, for which Jinja makes a module it does not keep)."""
        reads = _reads_secrets(self)  # type: ignore[arg-type]
        if getattr(self.environment, "secret_resolve_values", False):
            # Variables read from the globals may hold values resolved with
            # TTLs of their own: the module is made on each import.
            reads = _ALWAYS_FRESH
        if not reads.any:
            return None
        if ctx is not None and ctx.globals_keys - self.globals.keys():
            return None
        return reads

    def _import_module(
        self, reads: _Reads, make: Callable[[], MaybeAwaitable[TemplateModule]]
    ) -> MaybeAwaitable[TemplateModule]:
        """The module to import: the one kept beside the warm runs it was made
        from, else one ``make`` makes (the sync or the async door's), kept
        when it may be."""
        key = reads.only_runs
        cache: RenderCache | None = getattr(self.environment, "secret_render_cache", None)
        if key is None or cache is None:
            return make()
        kept, runs = cache.module_hit(key, self)
        if kept is not None:
            return cast(TemplateModule, kept)

        def keep(module: TemplateModule) -> TemplateModule:
            cache.store_module(key, self, module, runs)
            return module

        return then(make(), keep)

    def _get_default_module(self, ctx: Context | None = None) -> TemplateModule:
        reads = None if self.environment.is_async else self._fresh(ctx)
        if reads is None:
            return super()._get_default_module(ctx)  # type: ignore[misc,no-any-return]
        return cast(TemplateModule, self._import_module(reads, self.make_module))

    async def _get_default_module_async(self, ctx: Context | None = None) -> TemplateModule:
        reads = self._fresh(ctx)
        if reads is None:
            return await super()._get_default_module_async(ctx)  # type: ignore[misc,no-any-return]
        return await settle(self._import_module(reads, self.make_module_async))


class SecretsTemplate(_FreshModules, Template):
    """``jinja2.Template`` whose imported module is not kept when it reads secrets."""


class SecretsNativeTemplate(_FreshModules, NativeTemplate):
    """``NativeTemplate`` whose imported module is not kept when it reads secrets."""


#: Template classes replaced when the extension is added; a user's own class
#: gets a subclass made for it (:func:`_fresh_class`).
_FRESH_MODULES: dict[type[Template], type[Template]] = {
    Template: SecretsTemplate,
    NativeTemplate: SecretsNativeTemplate,
}


class _FreshClass(type):
    """The metaclass of a subclass made for a user's template class: it is
    pickled as the call that makes it (an environment pickles its template
    class, and a class made at run time cannot be found by name)."""


def _fresh_class(base: type[Template]) -> type[Template]:
    """``base`` whose imported modules follow :class:`_FreshModules` (Jinja's
    own would keep a module holding values on the template: rule 1). A class
    with a metaclass of its own is kept as it is."""
    known = _FRESH_MODULES.get(base)
    if known is not None or issubclass(base, _FreshModules) or type(base) is not type:
        return known or base
    made = _FreshClass(f"Secrets{base.__name__}", (_FreshModules, base), {"__module__": __name__})
    _FRESH_MODULES[base] = cast("type[Template]", made)
    return _FRESH_MODULES[base]


def _reduce_fresh_class(cls: _FreshClass) -> tuple[Any, tuple[Any, ...]]:
    return _fresh_class, (cls.__bases__[1],)


copyreg.pickle(_FreshClass, _reduce_fresh_class)
