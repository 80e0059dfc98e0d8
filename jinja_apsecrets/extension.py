"""The Jinja2 extension: references in template text become render-time calls.

How a template is compiled:

1. ``preprocess`` scans the source with the environment's own delimiters
   (:class:`~jinja_apsecrets.reference.TemplateScanner`). Each run of
   references separated only by plain text becomes one internal tag,
   ``{%+ __apsecrets__ "conn" "path" "as written" "text" ... +%}``, on the same
   lines, so line numbers do not move, and with ``+`` so that ``trim_blocks``
   and ``lstrip_blocks`` leave the surrounding text exactly as it was. Source
   without the separator ``ap_sep_v1`` is returned untouched.
2. ``filter_stream`` puts a prefetch tag naming all the template's references
   in front of the token stream, so they are fetched together, in one round,
   before the first byte renders.
3. ``parse`` validates each reference offline (unknown connection, malformed
   path: a :class:`SecretReferenceSyntaxError` with template and line) and
   emits calls to :meth:`SecretsExtension._run` and ``_prefetch``.

Nothing is resolved at compile time: compiled code holds connection names,
paths and template text, never a value. A rendered run (text joined with its
values) is cached by the resolver for the lifetime of its secrets, so warm
renders cost about what plain Jinja2 costs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from functools import partial
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.environment import Environment
from jinja2.ext import Extension
from jinja2.lexer import TokenStream
from jinja2.parser import Parser
from jinja2.runtime import Context
from markupsafe import Markup, escape

from .errors import (
    SecretReferenceSyntaxError,
    SecretsError,
)
from .functions import (
    install_secret_resolver,
    missing_value,
    no_resolver,
    on_missing_policy,
    printed_value,
    resolve_secrets,
    secret,
)
from .prefetch import Manifest, collect_static_refs, watch_stream, worth_watching
from .reference import SEPARATOR, Reference, TemplateScanner
from .resolver import Resolver
from .undefined import MissingSecret

__all__ = ["SecretsExtension"]

log = logging.getLogger("jinja_apsecrets")

RUN_TAG = "__apsecrets__"
PREFETCH_TAG = "__apsecrets_prefetch__"
# Internal filters the compiled code calls: a filter is called directly, where
# a method call would go through Context.call on every render.
RUN_FILTER = "__apsecrets_run__"
REF_FILTER = "__apsecrets_ref__"
PREFETCH_FILTER = "__apsecrets_prefetch__"

#: One piece of a run: template text, or (connection, path, text as written, line).
Piece = Any

#: Hands what preprocess found to filter_stream and parse, which Jinja calls
#: right after it, in the same thread, for the same source.
_pending = threading.local()
_NEWLINES = re.compile(r"\r\n|\r|\n")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (the lexer reads it back exactly)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SecretsExtension(Extension):
    """Resolve ``<<conn|ap_sep_v1|path>>`` and ``{{conn|ap_sep_v1|path}}`` at render time.

    Adds to the environment (through ``environment.extend``):
    ``install_secret_resolver(resolver, *, on_missing=None, resolve_values=False)``,
    and the attributes ``secret_resolver``, ``secret_on_missing`` and
    ``secret_resolve_values``. Adds the ``secret(connection, path)`` global and
    the ``resolve_secrets`` filter.
    """

    tags = {RUN_TAG, PREFETCH_TAG}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.extend(
            secret_resolver=None,
            secret_on_missing=None,
            secret_resolve_values=False,
            install_secret_resolver=partial(install_secret_resolver, environment),
        )
        environment.globals.setdefault("secret", secret)
        environment.filters.setdefault("resolve_secrets", resolve_secrets)
        environment.filters[RUN_FILTER] = _run_filter
        environment.filters[REF_FILTER] = _ref_filter
        environment.filters[PREFETCH_FILTER] = _prefetch_filter
        self._scanner: tuple[tuple[Any, ...], TemplateScanner] | None = None
        self._piece_cache: dict[tuple[str, int], tuple[Piece, ...]] = {}

    def bind(self, environment: Environment) -> SecretsExtension:
        """A copy for an overlay environment, whose install method and caches
        are its own (its delimiters may differ)."""
        rv = super().bind(environment)
        rv._scanner = None
        rv._piece_cache = {}
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
        _pending.refs = _pending.runs = _pending.manifest = None
        _pending.watch = worth_watching(source)
        if SEPARATOR not in source:
            return source
        original = source
        # Jinja's lexer reads "\r\n" and a lone "\r" as line breaks (and
        # prints every line break as newline_sequence): scan what it will see.
        source = _NEWLINES.sub("\n", source)
        segments = list(self._get_scanner().scan(source))
        refs = [s.ref for s in segments if s.ref is not None]
        if not refs:
            return original
        env = self.environment
        out: list[str] = []
        run: list[Reference] = []
        runs: dict[tuple[str, int], tuple[Piece, ...]] = {}
        pos = 0  # source is copied up to here

        def normalize(text: str) -> str:
            return _NEWLINES.sub(env.newline_sequence, text)

        def close() -> None:
            nonlocal pos
            if run:
                first, last = run[0], run[-1]
                begin = env.block_start_string + ("-" if first.strip_before else "+")
                end = ("-" if last.strip_after else "+") + env.block_end_string
                start = self._tag_start(source, pos, first.start, begin)
                span = source[start : last.end]
                out.append(f"{source[pos:start]}{begin} {RUN_TAG} {_literal(span)} {end}")
                # parse() takes the run's pieces from here instead of scanning again;
                # keys and text are newline-normalized as the lexer normalizes them.
                items: list[Piece] = [source[start : first.start]] if start < first.start else []
                for i, ref in enumerate(run):
                    if i:
                        items.append(normalize(source[run[i - 1].end : ref.start]))
                    items.append((ref.connection, ref.path, ref.text, ref.lineno))
                runs[(normalize(span), first.lineno)] = tuple(items)
                pos = last.end
                run.clear()

        for seg in segments:
            if seg.ref is not None:
                # References joined only by plain text form one run; Jinja
                # syntax or whitespace control between them ends it.
                if run and (seg.ref.strip_before or run[-1].strip_after):
                    close()
                run.append(seg.ref)
            elif seg.kind == "jinja":
                close()
        close()
        out.append(source[pos:])
        _pending.refs = refs
        _pending.runs = runs
        return "".join(out)

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

    def filter_stream(self, stream: TokenStream) -> TokenStream | Any:
        refs: list[Reference] | None = getattr(_pending, "refs", None)
        watch = getattr(_pending, "watch", False)
        _pending.refs = None
        _pending.watch = False
        if not refs and not watch:
            return stream
        manifest = Manifest([r.key for r in refs or ()])
        _pending.manifest = manifest
        runs = getattr(_pending, "runs", None) or {}
        if not watch and len(runs) == 1 and self.environment.finalize is None:
            # One run and nothing else to fetch: the run is the whole round,
            # and carries the manifest for templates that load this one.
            return stream
        return watch_stream(stream, manifest, PREFETCH_TAG)

    def parse(self, parser: Parser) -> nodes.Node:
        tag = next(parser.stream)
        strings: list[tuple[str, int]] = []
        while parser.stream.current.type != "block_end":
            token = parser.stream.expect("string")
            strings.append((token.value, token.lineno))
        if tag.value == PREFETCH_TAG:
            manifest: Manifest | None = getattr(_pending, "manifest", None)
            _pending.manifest = None
            if manifest is None or strings:
                parser.fail(f"{PREFETCH_TAG} is internal to jinja_apsecrets", tag.lineno)
            key = "p:" + _digest(f"{parser.name}:{manifest.refs!r}")
            args: list[nodes.Expr] = [nodes.Const(manifest)]
            call = nodes.Filter(nodes.Const(key), PREFETCH_FILTER, args, [], None, None)
            return nodes.ExprStmt(call, lineno=tag.lineno)
        ((span, lineno),) = strings
        known: dict[tuple[str, int], tuple[Piece, ...]] | None = getattr(_pending, "runs", None)
        pieces = known.get((span, lineno)) if known else None
        if pieces is None:
            pieces = self._pieces(span, lineno)
        for piece in pieces:
            if not isinstance(piece, str):
                self._validate(parser, *piece)
        if self.environment.finalize is not None:
            # finalize applies to each printed value, never to template text.
            children: list[nodes.Expr] = []
            for piece in pieces:
                if isinstance(piece, str):
                    children.append(nodes.TemplateData(piece))
                else:
                    ref_args: list[nodes.Expr] = [nodes.Const(p) for p in piece[1:]]
                    call = nodes.Filter(nodes.Const(piece[0]), REF_FILTER, ref_args, [], None, None)
                    children.append(call)
            return nodes.Output(children, lineno=tag.lineno)
        # The span is its own cache key: the same text and references render
        # the same, and the constant's hash is computed once.
        run_args: list[nodes.Expr] = [nodes.Const(lineno)]
        manifest = getattr(_pending, "manifest", None)
        if manifest is not None:  # no prefetch tag took it: this run carries it
            _pending.manifest = None
            run_args.append(nodes.Const(manifest))
        run = nodes.Filter(nodes.Const(span), RUN_FILTER, run_args, [], None, None, lineno=lineno)
        return nodes.Output([run], lineno=tag.lineno)

    def _pieces(self, span: str, lineno: int) -> tuple[Piece, ...]:
        """A run's text and references, in order; lines counted from ``lineno``."""
        pieces: list[Piece] = []
        for seg in self._get_scanner().scan(span):
            ref = seg.ref
            if ref is None:
                pieces.append(span[seg.start : seg.end])
            else:
                pieces.append((ref.connection, ref.path, ref.text, lineno + ref.lineno - 1))
        return tuple(pieces)

    def _cached_pieces(self, span: str, lineno: int) -> tuple[Piece, ...]:
        pieces = self._piece_cache.get((span, lineno))
        if pieces is None:
            if len(self._piece_cache) > 4096:
                self._piece_cache.clear()
            pieces = self._piece_cache[(span, lineno)] = self._pieces(span, lineno)
        return pieces

    def _validate(self, parser: Parser, conn: str, path: str, text: str, lineno: int) -> None:
        def fail(message: str, hint: str | None = None) -> SecretReferenceSyntaxError:
            return SecretReferenceSyntaxError(
                message, lineno, parser.name, parser.filename, provider=conn, path=path, hint=hint
            )

        scanner = self._get_scanner()
        ref = Reference(conn, path, text, 0, 0, lineno)
        dynamic = scanner.dynamic_path_error(ref)
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

    # -- render time ----------------------------------------------------------------

    def _resolver(self, template: str | None, lineno: int | None) -> Resolver:
        resolver: Resolver | None = self.environment.secret_resolver  # type: ignore[attr-defined]
        if resolver is None:
            raise no_resolver(template, lineno)
        return resolver

    def _prefetch(self, context: Context, key: str, manifest: tuple[Any, ...]) -> Any:
        """Fetch the static references of this template and of those it loads
        (the slow path of the prefetch filter, which checked for a warm cache)."""
        resolver = self._resolver(context.name, None)
        generation = resolver.generation()
        _, own, deps = manifest
        # References that are not cached (ttl 0: env, file) are left to the
        # render itself: prefetching them would only read them twice.
        refs = resolver.cacheable(collect_static_refs(self.environment, own, deps, context.name))
        if not refs:
            resolver.store_run(key, True, resolver.timer() + resolver.ttl, generation)
            return None
        if self.environment.is_async:
            return self._prefetch_async(resolver, context, key, refs, generation)
        found = resolver.lookup(refs, template=context.name)
        self._store_prefetch(resolver, key, found, generation)
        return None

    async def _prefetch_async(
        self, resolver: Resolver, context: Context, key: str, refs: Any, generation: int
    ) -> None:
        found = await resolver.lookup_async(refs, template=context.name)
        self._store_prefetch(resolver, key, found, generation)

    @staticmethod
    def _store_prefetch(resolver: Resolver, key: str, found: Any, generation: int) -> None:
        if found and all(not isinstance(v, SecretsError) for v, _ in found.values()):
            resolver.store_run(key, True, min(exp for _, exp in found.values()), generation)

    def _run(self, context: Context, span: str, lineno: int) -> Any:
        """A run of references and text, rendered (the slow path of the run filter)."""
        key = span
        pieces = self._cached_pieces(span, lineno)
        refs = [p for p in pieces if not isinstance(p, str)]
        resolver = self._resolver(context.name, lineno)
        generation = resolver.generation()
        if self.environment.is_async:
            return self._run_async(resolver, context, key, pieces, refs, generation)
        found = resolver.lookup([r[:2] for r in refs], template=context.name)
        return self._join(resolver, context, key, pieces, found, generation)

    async def _run_async(
        self, resolver: Resolver, context: Context, key: str, pieces: Any, refs: Any, gen: int
    ) -> Any:
        found = await resolver.lookup_async([r[:2] for r in refs], template=context.name)
        return self._join(resolver, context, key, pieces, found, gen)

    def _join(
        self, resolver: Resolver, context: Context, key: str, pieces: Any, found: Any, gen: int
    ) -> Any:
        autoescape = bool(context.eval_ctx.autoescape)
        policy = on_missing_policy(self.environment, resolver)
        parts: list[str] = []
        expires = float("inf")
        for piece in pieces:
            if isinstance(piece, str):
                # Template text is never escaped, as in plain Jinja2.
                parts.append(Markup(piece) if autoescape else piece)  # noqa: S704
                continue
            value, exp = found[piece[:2]]
            if isinstance(value, SecretsError):
                value = missing_value(value, piece, policy, context.name)
                exp = 0.0
                if isinstance(value, MissingSecret):
                    value = ""
                elif autoescape:
                    value = Markup(value)  # noqa: S704 - kept reference text is template text
            parts.append(escape(value) if autoescape else value)
            expires = min(expires, exp)
        text = Markup("").join(parts) if autoescape else "".join(parts)
        resolver.store_run(key, text, expires, gen, escaped=autoescape)
        return text

    def _ref(self, context: Context, conn: str, path: str, text: str, lineno: int) -> Any:
        """One reference printed on its own (when the environment has a finalize)."""
        resolver = self._resolver(context.name, lineno)
        piece = (conn, path, text, lineno)
        if self.environment.is_async:
            return self._ref_async(resolver, context, piece)
        found = resolver.lookup([(conn, path)], template=context.name)
        return self._value(resolver, context, piece, found)

    async def _ref_async(self, resolver: Resolver, context: Context, piece: Any) -> Any:
        found = await resolver.lookup_async([piece[:2]], template=context.name)
        return self._value(resolver, context, piece, found)

    def _value(self, resolver: Resolver, context: Context, piece: Any, found: Any) -> Any:
        policy = on_missing_policy(self.environment, resolver)
        return printed_value(found[piece[:2]][0], piece, policy, context.name)


# -- the filters compiled templates call ---------------------------------------------


def _extension(context: Context) -> SecretsExtension:
    """The environment's SecretsExtension (or subclass) instance."""
    extensions = context.environment.extensions
    ext = extensions.get(SecretsExtension.identifier)
    if not isinstance(ext, SecretsExtension):
        ext = next(e for e in extensions.values() if isinstance(e, SecretsExtension))
    return ext


@pass_context
def _run_filter(context: Context, span: str, lineno: int, manifest: Any = None) -> Any:
    # ``manifest`` is only there to be found in the compiled code (manifest_of).
    resolver: Resolver | None = context.environment.secret_resolver  # type: ignore[attr-defined]
    if resolver is not None:
        hit = resolver.cached_run(span, bool(context.eval_ctx.autoescape))
        if hit is not None:
            return hit
    return _extension(context)._run(context, span, lineno)


@pass_context
def _ref_filter(context: Context, conn: str, path: str, text: str, lineno: int) -> Any:
    return _extension(context)._ref(context, conn, path, text, lineno)


@pass_context
def _prefetch_filter(context: Context, key: str, manifest: tuple[Any, ...]) -> Any:
    resolver: Resolver | None = context.environment.secret_resolver  # type: ignore[attr-defined]
    if resolver is None or resolver.cached_run(key) is not None:
        return None  # nothing to fetch, or fetched within the TTL
    return _extension(context)._prefetch(context, key, manifest)
