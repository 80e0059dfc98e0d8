"""What a template will need, known when it is compiled: its prefetch manifest.

Every template that holds references (inline, or ``secret("conn", "path")``
with constant arguments) or loads others by a constant name (``extends``,
``include``, ``import``, ``from``) gets a manifest: its static references and
the templates it depends on. The manifest is written into the compiled code as
a constant tuple marked with :data:`MARK`, so it survives the bytecode cache,
and is read back from any loaded template with :func:`manifest_of`.

At render time the template's first statement fetches the references of the
whole tree (itself and the templates it loads, recursively) in one round,
before the first byte renders. Whatever is met later still goes through the
same cache.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from types import CodeType
from typing import Any
from weakref import WeakKeyDictionary

from jinja2 import Environment, Template
from jinja2.lexer import Token, TokenStream

__all__ = [
    "MARK",
    "Manifest",
    "collect_static_refs",
    "manifest_of",
    "watch_stream",
    "worth_watching",
]

log = logging.getLogger("jinja_apsecrets")

MARK = "__apsecrets_manifest__"
_LOADERS = frozenset({"extends", "include", "import", "from"})
_NONE = Token(0, "", "")
_HINT = re.compile(r"\bsecret\s*\(|\b(?:include|extends|import|from)\s+[\"']")

Ref = tuple[str, str]


class _Items(list):  # type: ignore[type-arg]
    """A list filled while the template is parsed, written into code as a tuple."""

    def __repr__(self) -> str:
        return repr(tuple(self))


class Manifest(list):  # type: ignore[type-arg]
    """``[MARK, refs, deps]``; compiled as ``(MARK, (refs...), (deps...))``.

    The parser creates the node before the rest of the template is read; the
    token filter keeps appending to ``refs`` and ``deps`` until the end, and
    the code generator, which runs last, writes the complete tuple.
    """

    def __init__(self, refs: list[Ref]) -> None:
        super().__init__([MARK, _Items(dict.fromkeys(refs)), _Items()])

    @property
    def refs(self) -> list[Ref]:
        return self[1]  # type: ignore[no-any-return]

    @property
    def deps(self) -> list[str]:
        return self[2]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return repr(tuple(self))


def worth_watching(source: str) -> bool:
    """Cheap pre-check: could the source call secret() or load other templates?"""
    return _HINT.search(source) is not None


def watch_stream(stream: TokenStream, manifest: Manifest, tag: str) -> Iterator[Token]:
    """``stream`` with the prefetch tag in front, noting static references and
    template names in ``manifest`` as the tokens go by."""
    yield Token(1, "block_begin", "")
    yield Token(1, "name", tag)
    yield Token(1, "block_end", "")
    seen_refs = set(manifest.refs)
    # The last six tokens, oldest first: enough for ``secret ( "a" , "b" )``
    # and for ``{% include "name"``.
    t1 = t2 = t3 = t4 = t5 = _NONE
    for t6 in _unbuffered(stream):
        kind = t6.type
        if kind == "rparen":
            if (
                t1.value == "secret"
                and t1.type == "name"
                and t2.type == "lparen"
                and t3.type == "string"
                and t4.type == "comma"
                and t5.type == "string"
                and (t3.value, t5.value) not in seen_refs
            ):
                seen_refs.add((t3.value, t5.value))
                manifest.refs.append((t3.value, t5.value))
        elif (
            kind == "string"
            and t5.type == "name"
            and t5.value in _LOADERS
            and t4.type in ("block_begin", "linestatement_begin")
            and t6.value not in manifest.deps
        ):
            manifest.deps.append(t6.value)
        t1, t2, t3, t4, t5 = t2, t3, t4, t5, t6
        yield t6


def _unbuffered(stream: TokenStream) -> Iterator[Token]:
    """The tokens of ``stream`` without its one-token lookahead.

    Read through the TokenStream, the lexer would run two tokens ahead of the
    parser (one lookahead per stream), and a malformed template could then
    report a later error than plain Jinja2 does. So the tokens come from the
    lexer's own iterator, after the one the stream already holds.
    """
    source = getattr(stream, "_iter", None)
    if source is None or getattr(stream, "_pushed", None):
        yield from stream  # not Jinja's TokenStream as we know it: plain iteration
        return
    if stream.current.type != "eof":
        yield stream.current
    yield from source


_manifests: WeakKeyDictionary[Template, tuple[tuple[Ref, ...], tuple[str, ...]]] = (
    WeakKeyDictionary()
)


def manifest_of(template: Template) -> tuple[tuple[Ref, ...], tuple[str, ...]]:
    """The static references and dependencies compiled into ``template``."""
    found = _manifests.get(template)
    if found is None:
        found = ((), ())
        # The root function holds it, or a block's or a macro's (nested code).
        funcs = [template.root_render_func, *template.blocks.values()]
        todo = [f.__code__ for f in funcs if hasattr(f, "__code__")]
        while todo and found == ((), ()):
            for const in todo.pop().co_consts:
                if isinstance(const, tuple) and len(const) == 3 and const[0] == MARK:
                    found = (const[1], const[2])
                    break
                if isinstance(const, CodeType):
                    todo.append(const)
        _manifests[template] = found
    return found


def collect_static_refs(
    environment: Environment, refs: Any, deps: Any, parent: str | None
) -> list[Ref]:
    """``refs`` plus the static references of every template reached from
    ``deps``, recursively. Templates that cannot be loaded are skipped: the
    tag that loads them reports that itself, when it runs."""
    found: dict[Ref, None] = dict.fromkeys(refs)  # ordered: the same plan every time
    seen: set[str] = set()
    todo = [(name, parent) for name in reversed(deps)]
    while todo:
        name, base = todo.pop()
        try:
            full = environment.join_path(name, base) if base else name
            if full in seen:
                continue
            seen.add(full)
            template = environment.get_template(full)
        except Exception as exc:  # best effort: the include itself will say why
            log.debug("prefetch skipped template %r: %s", name, type(exc).__name__)
            continue
        more_refs, more_deps = manifest_of(template)
        found.update(dict.fromkeys(more_refs))
        todo.extend((dep, template.name) for dep in reversed(more_deps))
    return list(found)
