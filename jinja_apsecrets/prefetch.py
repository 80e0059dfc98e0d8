"""What a template will need, read from its token stream before it is parsed.

``SecretsExtension.filter_stream`` hands the whole token stream to
:func:`plan_tokens`, which reads it once and returns the stream the parser
gets, with everything the parser needs riding in it (nothing is handed over on
the side):

* each run tag written by ``preprocess`` (``__apsecrets__`` followed by the
  run's text and the layout of its references) becomes one token holding a
  :class:`PlannedRun`: the :class:`~jinja_apsecrets.runs.Run` and the internal
  names its elements are bound to;
* in front of the template, and right after each ``{% block %}`` tag that holds
  runs, a prefetch tag holding a :class:`Scope`: the runs of that template or
  block, compiled into one call that renders them all into a tuple bound to
  those names (see :mod:`jinja_apsecrets.runs`). Blocks have their own,
  because a block is its own function and may render without the template's
  top level (``extends``, or a block rendered alone);
* ``secret(...)`` calls become ``(secret | __apsecrets_call__(...))``: a filter
  is called directly, where a call goes through ``Context.call``. The name
  ``secret`` is still looked up as before, so a variable of that name wins
  over the global; the filter calls whatever it holds;
* the template's *manifest*: its static references (inline ones, and
  ``secret("conn", "path")`` with constant arguments) and the templates it
  loads by a constant name (``extends``, ``include``, ``import``, ``from``),
  compiled as a constant tuple marked with :data:`MARK`, so it survives the
  bytecode cache. :func:`manifest_of` reads it back from a loaded template and
  :func:`collect_static_refs` walks a whole tree, so the top-level prefetch
  fetches the references of the tree in one round.

If the lexer fails part way, the tokens read so far are handed on and the
error is raised after them, where the parser would have met it: a malformed
template reports the same error as without the extension.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from types import CodeType
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from jinja2 import Environment, Template
from jinja2.exceptions import TemplateSyntaxError
from jinja2.lexer import Token, TokenStream

from .runs import Piece, Ref, Run

__all__ = [
    "BLOCK_MARK",
    "CALL_FILTER",
    "INTERNAL_TAG",
    "MARK",
    "PREFETCH_FILTER",
    "PREFETCH_TAG",
    "RAW_FILTER",
    "RUN_TAG",
    "VALUE_FILTER",
    "PlannedRun",
    "Scope",
    "code_objects",
    "collect_static_refs",
    "manifest_of",
    "plan_tokens",
    "root_scope_key",
    "static_refs_of",
]

log = logging.getLogger("jinja_apsecrets")

MARK = "__apsecrets_manifest__"
BLOCK_MARK = "__apsecrets_block__"
#: The run tag preprocess writes. Its name holds a nonce drawn when this module
#: is imported, so a template cannot write one by hand: a run tag written by
#: hand would be planned as a run (a reference the template never wrote as
#: one). Compiled code holds no tag names, so the nonce may differ between
#: processes sharing a bytecode cache.
RUN_TAG = f"__apsecrets_{os.urandom(8).hex()}__"
#: The tag's name without the nonce, which a hand-written run tag would use:
#: a syntax error, like every internal name.
INTERNAL_TAG = "__apsecrets__"
PREFETCH_TAG = "__apsecrets_prefetch__"
CALL_FILTER = "__apsecrets_call__"
PREFETCH_FILTER = "__apsecrets_prefetch__"
VALUE_FILTER = "__apsecrets_value__"
RAW_FILTER = "__apsecrets_raw__"
#: Only plan_tokens may name these filters: written in a template, the prefetch
#: filter would store what the template chose under another template's cache
#: key, and the call filter would call anything.
_INTERNAL_FILTERS = frozenset({CALL_FILTER, PREFETCH_FILTER, VALUE_FILTER, RAW_FILTER})
#: Token types only this module creates: the lexer never yields them, so a
#: template cannot forge a run or a prefetch.
RUN_TOKEN = "apsecrets_run"
SCOPE_TOKEN = "apsecrets_scope"

_LOADERS = frozenset({"extends", "include", "import", "from"})
_TAG_BEGIN = ("block_begin", "linestatement_begin")
_TAG_END = ("block_end", "linestatement_end")
#: The token types the plan reads; any other token is passed on as it is.
_WATCHED = frozenset({"name", "lparen", "rparen", *_TAG_BEGIN, *_TAG_END})
#: ``secret(`` after these is not a call of the global: a macro named secret,
#: a filter or test of that name, an attribute.
_NOT_A_CALL = frozenset({"macro", "is", "filter"})

RefKey = tuple[str, str]


class PlannedRun(NamedTuple):
    """A run, its pieces, the names its elements are bound to, and the
    references to validate (those met first in this run: a reference is
    validated once per template, where it first appears)."""

    run: Run
    pieces: tuple[Piece, ...]
    names: tuple[str, ...]
    first: tuple[Ref, ...]


class Scope(NamedTuple):
    """What one prefetch renders: the runs of a template's top level or of a block.

    ``spec`` is the compiled constant ``(mark, refs, deps, runs)``; ``key``
    names it in the render cache.
    """

    key: str
    autoescape: bool
    names: tuple[str, ...]
    spec: tuple[Any, ...]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def _scope_digest(name: str | None, label: str, autoescape: bool, spec: tuple[Any, ...]) -> str:
    """A digest of a scope, as unambiguous as its ``repr`` and much cheaper:
    the runs' text goes in as it is (length first), where ``repr`` would
    escape it character by character (the whole template's text, once more
    than Jinja's code generator does)."""
    parts = [repr((name, label, autoescape, spec[:3]))]
    for run in spec[3]:
        parts += [f"{len(f)}:{f}" if isinstance(f, str) else repr(f) for f in run]
    return _digest("\0".join(parts))


def _read(stream: TokenStream) -> tuple[list[Token], TemplateSyntaxError | None]:
    """The tokens of ``stream``, and the lexer's error if it stopped on one.

    Read from the lexer's own iterator after the token the stream holds:
    through the TokenStream, each token would go through its lookahead.
    """
    tokens: list[Token] = []
    source = getattr(stream, "_iter", None)
    try:
        if source is None or getattr(stream, "_pushed", None):
            tokens.extend(stream)  # not Jinja's TokenStream as we know it
        else:
            if stream.current.type != "eof":
                tokens.append(stream.current)
            tokens.extend(source)
    except TemplateSyntaxError as exc:
        return tokens, exc
    return tokens, None


def _replay(tokens: Iterable[Token], error: TemplateSyntaxError | None) -> Iterator[Token]:
    yield from tokens
    if error is not None:
        raise error


class _OpenScope:
    def __init__(self, label: str, insert_at: int, lineno: int) -> None:
        self.label = label
        self.insert_at = insert_at
        self.lineno = lineno
        # index in the output, run, its pieces, its references met first
        self.runs: list[tuple[int, Run, tuple[Piece, ...], tuple[Ref, ...]]] = []


def _run_of(strings: list[Token], lineno: int, split: bool) -> tuple[Run, tuple[Piece, ...]] | None:
    """The run written by preprocess as two strings (its text and its layout),
    and its pieces."""
    if len(strings) != 2:
        return None
    run = Run(strings[0].value, strings[1].value, lineno, split)
    try:
        return run, run.pieces
    except (ValueError, IndexError):
        return None


def plan_tokens(
    stream: TokenStream, environment: Environment, *, split: bool
) -> Iterator[Token] | TokenStream:
    """``stream`` as the parser gets it (see the module docstring).

    ``split`` prints every value as its own element (``finalize``, native
    environments); runs inside ``{% autoescape %}`` tags are always split.
    """
    tokens, error = _read(stream)
    name = stream.name
    out: list[Token] = []
    root = _OpenScope("", 0, 1)
    scopes = [root]
    refs: dict[RefKey, None] = {}
    validated: set[RefKey] = set()  # references whose run validates them
    deps: dict[str, None] = {}
    closes: list[int] = []  # paren depths at which a rewritten secret( call ends
    depth = 0
    autoescape_depth = 0
    extends = False  # whether the template's top level prints only without a parent
    in_call_tag = False
    opens_block: str | None = None
    rewrote = False
    n = len(tokens)
    i = 0
    while i < n:
        token = tokens[i]
        kind = token.type
        if kind not in _WATCHED:  # most tokens (text, most of each tag) go as they are
            out.append(token)
            i += 1
            continue
        if kind == "name" and token.value in _INTERNAL_FILTERS:
            raise TemplateSyntaxError(
                f"{token.value} is internal to jinja_apsecrets", token.lineno, name, stream.filename
            )
        if kind in _TAG_BEGIN and i + 1 < n and tokens[i + 1].type == "name":
            tag = tokens[i + 1].value
            if tag == RUN_TAG:
                j = i + 2
                while j < n and tokens[j].type == "string":
                    j += 1
                inner = autoescape_depth > 0
                planned = _run_of(tokens[i + 2 : j], token.lineno, split or inner)
                if planned is not None and j < n and tokens[j].type in _TAG_END:
                    first = []
                    for piece in planned[1]:
                        if isinstance(piece, Ref):
                            key = piece[:2]  # piece.key, without a property call each
                            if key not in validated:
                                validated.add(key)
                                first.append(piece)
                            refs[key] = None
                    out.append(token)
                    # The parser meets the run under the name without the
                    # nonce (a parser that is not ours, like {% trans %}'s,
                    # names the tag it meets in its error); the run token
                    # after it, which no template can write, marks it a run.
                    out.append(Token(tokens[i + 1].lineno, "name", INTERNAL_TAG))
                    scopes[-1].runs.append((len(out), *planned, tuple(first)))
                    out.append(token)  # placeholder: the run token, once named
                    out.append(tokens[j])
                    i = j + 1
                    continue
            elif tag == "block" and i + 2 < n and tokens[i + 2].type == "name":
                opens_block = tokens[i + 2].value
            elif tag == "endblock" and len(scopes) > 1:
                _close(scopes.pop(), out, name, environment)
            elif tag == "autoescape":
                autoescape_depth += 1
            elif tag == "endautoescape":
                autoescape_depth = max(0, autoescape_depth - 1)
            elif tag == "call":
                in_call_tag = True
            extends = extends or tag == "extends"
            if tag in _LOADERS and i + 2 < n and tokens[i + 2].type == "string":
                deps[tokens[i + 2].value] = None
        elif kind in _TAG_END:
            in_call_tag = False
            if opens_block is not None:
                out.append(token)
                scopes.append(_OpenScope(opens_block, len(out), token.lineno))
                opens_block = None
                i += 1
                continue
        elif kind == "lparen":
            depth += 1
        elif kind == "rparen":
            depth -= 1
            if closes and closes[-1] == depth:
                closes.pop()
                out.append(token)
                out.append(Token(token.lineno, "rparen", ")"))
                i += 1
                continue
        elif (
            kind == "name"
            and token.value == "secret"
            and i + 1 < n
            and tokens[i + 1].type == "lparen"
            and not in_call_tag
            and _is_call(tokens, i)
        ):
            args = tokens[i + 2 : i + 6]
            if len(args) == 4 and [t.type for t in args] == ["string", "comma", "string", "rparen"]:
                refs[(args[0].value, args[2].value)] = None
            line = token.lineno
            out.append(Token(line, "lparen", "("))
            out.append(token)
            out.append(Token(line, "pipe", "|"))
            out.append(Token(line, "name", CALL_FILTER))
            closes.append(depth)
            rewrote = True
            i += 1
            continue
        out.append(token)
        i += 1
    while len(scopes) > 1:  # unclosed blocks: the parser reports them
        _close(scopes.pop(), out, name, environment)
    if not (root.runs or refs or deps or rewrote):
        return _replay(tokens, error)
    manifest = (tuple(refs), tuple(deps))
    _close(root, out, name, environment, manifest=manifest, raw=not extends)
    return _replay(out, error) if error is not None else iter(out)


def _is_call(tokens: list[Token], i: int) -> bool:
    if i == 0:
        return True
    before = tokens[i - 1]
    if before.type in ("dot", "pipe"):
        return False
    if before.type == "name" and before.value in _NOT_A_CALL:
        return False
    # ``x is not secret(...)`` is a test too.
    return not (
        before.type == "name"
        and before.value == "not"
        and i > 1
        and tokens[i - 2].type == "name"
        and tokens[i - 2].value == "is"
    )


def _token(lineno: int, kind: str, value: PlannedRun | Scope) -> Token:
    """A token of our own type, whose value is our own object (not text)."""
    return Token(lineno, kind, value)  # type: ignore[arg-type]


def _close(
    scope: _OpenScope,
    out: list[Token],
    name: str | None,
    environment: Environment,
    manifest: tuple[tuple[RefKey, ...], tuple[str, ...]] | None = None,
    raw: bool = True,
) -> None:
    """Name the scope's runs and put its prefetch tag in front of it.

    Under autoescape, the scope's joined runs are printed raw (see
    :mod:`.runs`) if ``raw``: a block's always, the top level's when the
    template has no ``extends``."""
    if not scope.runs and manifest is None:
        return
    auto = environment.autoescape
    autoescape = bool(auto(name) if callable(auto) else auto)
    if autoescape and raw:
        scope.runs = [
            (index, run if run.split else run._replace(raw=True), pieces, first)
            for index, run, pieces, first in scope.runs
        ]
    runs = tuple(tuple(run) for _, run, _, _ in scope.runs)
    if manifest is not None:
        spec: tuple[Any, ...] = (MARK, manifest[0], manifest[1], runs)
    else:
        spec = (BLOCK_MARK, (), (), runs)
    scope_id = _scope_digest(name, scope.label, autoescape, spec)
    all_names: list[str] = []
    for index, run, pieces, first in scope.runs:
        size = sum(isinstance(p, Ref) for p in pieces) if run.split else 1
        names = tuple(f"aps_{scope_id[:12]}_{len(all_names) + k}" for k in range(size))
        all_names.extend(names)
        out[index] = _token(out[index].lineno, RUN_TOKEN, PlannedRun(run, pieces, names, first))
    tag = [
        Token(scope.lineno, "block_begin", ""),
        Token(scope.lineno, "name", PREFETCH_TAG),
        _token(scope.lineno, SCOPE_TOKEN, Scope(scope_id, autoescape, tuple(all_names), spec)),
        Token(scope.lineno, "block_end", ""),
    ]
    out[scope.insert_at : scope.insert_at] = tag


# -- reading manifests back ---------------------------------------------------------

#: The top-level spec compiled into each template (None: the template has none).
_specs: WeakKeyDictionary[Template, tuple[Any, ...] | None] = WeakKeyDictionary()


def code_objects(template: Template) -> list[CodeType]:
    """The code of ``template``'s render functions (its top level and its
    blocks) and of every function nested in them (macros, loops' bodies)."""
    funcs = [template.root_render_func, *template.blocks.values()]
    todo = [f.__code__ for f in funcs if hasattr(f, "__code__")]
    found: list[CodeType] = []
    while todo:
        code = todo.pop()
        found.append(code)
        todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return found


def _root_spec(template: Template) -> tuple[Any, ...] | None:
    """The constant ``(MARK, refs, deps, runs)`` compiled into ``template``."""
    try:
        return _specs[template]
    except KeyError:
        pass
    found = next(
        (
            const
            for code in code_objects(template)
            for const in code.co_consts
            if isinstance(const, tuple) and len(const) == 4 and const[0] == MARK
        ),
        None,
    )
    _specs[template] = found
    return found


def manifest_of(template: Template) -> tuple[tuple[RefKey, ...], tuple[str, ...]]:
    """The static references and dependencies compiled into ``template``."""
    spec = _root_spec(template)
    return ((), ()) if spec is None else (spec[1], spec[2])


_root_keys: WeakKeyDictionary[Template, str | None] = WeakKeyDictionary()


def root_scope_key(template: Template) -> str | None:
    """The render-cache key of ``template``'s top-level runs, computed as
    :func:`_close` computed it (None if the template has no runs there)."""
    try:
        return _root_keys[template]
    except KeyError:
        pass
    key = None
    spec = _root_spec(template)
    if spec is not None and spec[3]:
        auto = template.environment.autoescape
        autoescape = bool(auto(template.name) if callable(auto) else auto)
        key = _scope_digest(template.name, "", autoescape, spec)
    _root_keys[template] = key
    return key


def collect_static_refs(
    environment: Environment, refs: Iterable[RefKey], deps: Iterable[str], parent: str | None
) -> list[RefKey]:
    """``refs`` plus the static references of every template reached from
    ``deps`` (names relative to ``parent``), recursively. Templates that cannot
    be loaded are skipped: the tag that loads them reports that itself."""
    found: dict[RefKey, None] = dict.fromkeys(refs)  # ordered: the same plan every time
    seen: set[str] = set()
    todo = [(dep, parent) for dep in reversed(list(deps))]
    while todo:
        dep, base = todo.pop()
        try:
            full = environment.join_path(dep, base) if base else dep
            if full in seen:
                continue
            seen.add(full)
            template = environment.get_template(full)
        except Exception as exc:  # best effort: the include itself will say why
            log.debug("prefetch skipped template %r: %s", dep, type(exc).__name__)
            continue
        more_refs, more_deps = manifest_of(template)
        found.update(dict.fromkeys(more_refs))
        todo.extend((d, template.name) for d in reversed(more_deps))
    return list(found)


def static_refs_of(environment: Environment, names: Iterable[str]) -> list[RefKey]:
    """The static references of the templates ``names`` and of every template
    they load, in one list (for fetching a whole tree in one round)."""
    return collect_static_refs(environment, (), names, None)
