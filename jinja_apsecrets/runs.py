"""Rendered runs: what one template (or one block) prints for its references.

A *run* is template text joined with the references in it (a config file of
``key = <<ref>>`` lines is one run). When a template renders, its first
statement looks up every reference of its runs in one round and renders them
all into a tuple of *elements*, which the compiled template binds to local
names; each run then prints its element. A run has one element (the joined
text) or, in the *split* form, one element per reference, printed between its
text pieces by Jinja itself (where ``finalize``, a native environment or an
``{% autoescape %}`` tag decide how each value prints).

:class:`RenderCache` keeps the element tuples, and the values of warm
``secret()`` calls, for the lifetime of their secrets and never past a change
of the resolver's :meth:`~jinja_apsecrets.resolver.Resolver.generation`.
It is held by the environment, never by the template cache, and does not
pickle its contents. A warm render costs one check of this cache.

A reference that failed is not decided here: its run becomes a
:class:`Pending` element, which applies the missing-secret policy when (and
only if) the template prints it, so an error names the run's line and a run in
a branch that is not taken never fails. Errors are decided before any text is
joined, and values stay :class:`~jinja_apsecrets.values.SecretText` until
joined, so no frame on an error's traceback shows a value.

A joined run is a plain ``str``: Jinja prints each element with ``str()``,
which returns a plain ``str`` as it is (and copies a ``str`` subclass). Under
autoescape, Jinja prints with ``escape()``, which copies even a ``Markup``
through two Python calls (the largest cost of a warm autoescaped render), so
an autoescaped run is *raw* wherever the template allows it: its element is
its escaped text as a plain ``str``, printed by a filter block whose filter is
``str`` (a filter block yields its filter's result unescaped). A run is raw
unless it sits outside blocks in a template that has ``extends`` (there Jinja
prints only while no parent template is set, a check a filter block lacks);
such a run is ``Markup``, printed through ``escape()``.

The compiled template binds the elements to internal names, which are neither
template variables nor context entries, so Jinja's rewritten tracebacks (whose
template frames show the template's variables) never show them; only this
cache holds them between renders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from markupsafe import Markup, escape

from .errors import SecretsError
from .values import SecretText

if TYPE_CHECKING:
    from .resolver import Resolver

__all__ = ["Pending", "Ref", "RenderCache", "Run", "conceal_found", "render_runs", "runs_from_spec"]


class Ref(NamedTuple):
    """A reference in a run: connection, path, the text as written, its line."""

    connection: str
    path: str
    text: str
    lineno: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.connection, self.path)


_new = tuple.__new__

#: A piece of a run: template text or a reference.
Piece = Union[str, Ref]  # noqa: UP007 - a runtime alias, also read by isinstance users


class Run(NamedTuple):
    """Template text and references, in order, as one printed unit.

    Written by ``preprocess`` as the run's text (``span``) and a ``layout`` of
    seven integers per reference, offsets into ``span``: the reference's text,
    connection and path (start and length each) and its line within the run.
    One string and one short index per run keep the lexer's work and the
    compiled constant small.
    """

    span: str
    layout: str
    lineno: int
    split: bool
    #: An autoescaped run printed as it is, not through ``escape()`` (see the
    #: module docstring): its element is its escaped text as a plain ``str``.
    raw: bool = False

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """Text and references in order (references with their template line)."""
        span, lineno = self.span, self.lineno
        pieces: list[Piece] = []
        append = pieces.append
        pos = 0
        numbers = list(map(int, self.layout.split()))
        if len(numbers) % 7:
            raise ValueError("a run's layout has seven numbers a reference")
        # Seven at a time, each Ref made as tuple.__new__ makes it: a dense
        # template has tens of thousands, read when it compiles.
        seven = iter(numbers)
        for start, length, co, cl, po, pl, dl in zip(*(seven,) * 7, strict=True):
            if start > pos:
                append(span[pos:start])
            pos = start + length
            append(
                _new(Ref, (span[co : co + cl], span[po : po + pl], span[start:pos], lineno + dl))
            )
        if pos < len(span):
            append(span[pos:])
        return tuple(pieces)

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.pieces if not isinstance(p, str))


def runs_from_spec(spec: tuple[tuple[Any, ...], ...]) -> tuple[Run, ...]:
    """The runs compiled as constants (each a plain tuple of a :class:`Run`'s
    fields; a bytecode cache may hold runs compiled before ``raw`` existed)."""
    return tuple(Run(*run) for run in spec)


Found = Mapping[tuple[str, str], "str | SecretsError"]
#: Decides a failed reference: ``(error, ref, template) -> printed value`` or raises.
Decide = Callable[[SecretsError, Ref, "str | None"], Any]


class Pending:
    """A run (or one value of a split run) with a failed reference.

    Printing it applies the missing-secret policy: it raises the error (with
    the template and line) or logs and prints the run with the reference as
    the policy says. ``values`` holds :class:`SecretText` and errors only.
    """

    __slots__ = ("autoescape", "decide", "pieces", "template", "values")

    def __init__(
        self,
        pieces: tuple[Piece, ...],
        values: Found,
        decide: Decide,
        template: str | None,
        autoescape: bool = False,
    ) -> None:
        self.pieces = pieces
        self.values = values
        self.decide = decide
        self.template = template
        #: How ``str()`` prints it: the run's own scope, for a run printed
        #: raw (an autoescaped run that Jinja does not pass to ``escape()``).
        self.autoescape = autoescape

    def printed(self, autoescape: bool) -> Any:
        """The text to print; raises under the ``error`` policy."""
        # Every failure is decided before anything is joined.
        replaced: dict[Ref, Any] = {}
        for piece in self.pieces:
            if not isinstance(piece, str):
                value = self.values[piece.key]
                if isinstance(value, SecretsError):
                    replaced[piece] = self.decide(value, piece, self.template)
        if len(self.pieces) == 1 and self.pieces[0] in replaced:
            # A value of its own (split form): a MissingSecret, or the kept
            # reference text, which is template text and never escaped.
            value = replaced[self.pieces[0]]
            return Markup(value) if autoescape and isinstance(value, str) else value  # noqa: S704
        return _join(self.pieces, self.values, autoescape, replaced)

    def __str__(self) -> str:
        return str(self.printed(self.autoescape))

    def __html__(self) -> Markup:
        return Markup(self.printed(True))  # noqa: S704 - escaped by _join

    def __repr__(self) -> str:
        return f"<Pending run of {len(self.pieces)} pieces>"


def _join(
    pieces: tuple[Piece, ...],
    values: Found,
    autoescape: bool,
    replaced: Mapping[Ref, Any],
    markup: bool = True,
) -> Any:
    """The run's text; escaped values under ``autoescape``, as ``Markup``
    unless ``markup`` is false (a raw run: escaped text as a plain ``str``)."""
    parts: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            # Template text is never escaped, as in plain Jinja2.
            parts.append(Markup(piece) if autoescape else piece)  # noqa: S704
            continue
        if piece in replaced:
            value = replaced[piece]
            # A missing value prints nothing; kept reference text is template text.
            text = value if isinstance(value, str) else ""
            parts.append(Markup(text) if autoescape else text)  # noqa: S704
            continue
        value = values[piece.key]
        parts.append(escape(value) if autoescape else value)  # type: ignore[arg-type]
    return Markup("").join(parts) if autoescape and markup else "".join(parts)


def render_runs(
    runs: tuple[Run, ...],
    values: Found,
    decide: Decide,
    template: str | None,
    autoescape: bool,
) -> tuple[tuple[Any, ...], bool]:
    """Each run's elements, and whether none of them is :class:`Pending`.

    ``values`` maps each reference to its :class:`SecretText` or error.
    """
    elements: list[Any] = []
    complete = True
    for run in runs:
        pieces = run.pieces
        if run.split:
            for ref in (p for p in pieces if not isinstance(p, str)):
                value = values[ref.key]
                if isinstance(value, SecretsError):
                    elements.append(Pending((ref,), values, decide, template, autoescape))
                    complete = False
                else:
                    elements.append(value)
        elif any(isinstance(values[p.key], SecretsError) for p in pieces if isinstance(p, Ref)):
            elements.append(Pending(pieces, values, decide, template, autoescape))
            complete = False
        else:
            elements.append(_join(pieces, values, autoescape, {}, markup=not run.raw))
    return tuple(elements), complete


class RenderCache:
    """Rendered element tuples and warm ``secret()`` values of one resolver,
    and the imported modules made from rendered runs.

    Plain dicts of ``key -> (expires, generation, value)``: a warm render reads
    one entry with one clock read and one generation check (a
    ``cachetools.TLRUCache`` costs ten times that per read, which is the
    whole budget of a warm render). Each dict is bounded by ``maxsize``,
    dropping its oldest entry first.
    """

    def __init__(self, resolver: Resolver, maxsize: int = 4096) -> None:
        self.resolver = resolver
        self.timer = resolver.timer
        # The resolver's secret cache, whose ``generation`` attribute is read
        # on every warm render (an attribute read, not a method call).
        self.secrets = resolver._cache
        self.maxsize = maxsize
        self.runs: dict[str, tuple[float, int, tuple[Any, ...]]] = {}
        self.values: dict[tuple[str, str], tuple[float, int, SecretText]] = {}
        #: Imported modules made from rendered runs: ``key -> (runs, template,
        #: module)``, served while ``runs`` is the warm entry under ``key``.
        self.modules: dict[str, tuple[tuple[Any, ...], Any, Any]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles empty: it holds secret values.
        return (type(self), (self.resolver, self.maxsize))

    def runs_hit(self, key: str) -> tuple[Any, ...] | None:
        entry = self.runs.get(key)
        if entry is not None and entry[0] > self.timer() and entry[1] == self.secrets.generation:
            return entry[2]
        return None

    def value_hit(self, ref: tuple[str, str]) -> SecretText | None:
        entry = self.values.get(ref)
        if entry is not None and entry[0] > self.timer() and entry[1] == self.secrets.generation:
            return entry[2]
        return None

    def entries(
        self, refs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str | SecretsError, float]] | None:
        """``{ref: (value, expires)}`` if every one of ``refs`` is warm, else None."""
        now = self.timer()
        generation = self.secrets.generation
        out: dict[tuple[str, str], tuple[str | SecretsError, float]] = {}
        for ref in refs:
            entry = self.values.get(ref)
            if entry is None or entry[0] <= now or entry[1] != generation:
                return None
            out[ref] = (entry[2], entry[0])
        return out

    def store_runs(
        self, key: str, elements: tuple[Any, ...], expires: float, generation: int
    ) -> None:
        self._store(self.runs, key, (expires, generation, elements))

    def store_value(
        self, ref: tuple[str, str], value: SecretText, expires: float, generation: int
    ) -> None:
        self._store(self.values, ref, (expires, generation, value))

    def module_hit(self, key: str, template: Any) -> tuple[Any, tuple[Any, ...] | None]:
        """The module kept for ``template`` under ``key`` if it was made from
        the warm runs there, and those runs (None if they are not warm)."""
        runs = self.runs_hit(key)
        kept = self.modules.get(key)
        if runs is not None and kept is not None and kept[0] is runs and kept[1] is template:
            return kept[2], runs
        return None, runs

    def store_module(
        self, key: str, template: Any, module: Any, runs: tuple[Any, ...] | None
    ) -> None:
        """Keep ``module`` if it was made from ``runs``: they are still the warm
        runs under ``key`` after it was made (a prefetch that found them stale
        would have stored new ones)."""
        if runs is not None and self.runs_hit(key) is runs:
            self._put(self.modules, key, (runs, template, module))

    def _store(self, table: dict[Any, Any], key: Any, entry: tuple[float, int, Any]) -> None:
        # Never keep what was looked up before an invalidation, or is already stale.
        if entry[1] != self.secrets.generation or entry[0] <= self.timer():
            return
        self._put(table, key, entry)

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if key not in table and len(table) >= self.maxsize:
            # No lock (a forked child could inherit it held): a single dict
            # operation is atomic, and a race here only evicts a little more
            # or a little less.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del table[next(iter(table))]
        table[key] = value


def conceal_found(
    found: Mapping[tuple[str, str], tuple[str | SecretsError, float]],
) -> tuple[dict[tuple[str, str], SecretText | SecretsError], float]:
    """A lookup's values as :class:`SecretText` (errors kept), and the earliest
    expiry of the values found (errors do not count)."""
    values: dict[tuple[str, str], SecretText | SecretsError] = {}
    expires = float("inf")
    for ref, (value, exp) in found.items():
        if isinstance(value, SecretsError):
            values[ref] = value
        else:
            values[ref] = SecretText(value)
            expires = min(expires, exp)
    return values, expires
