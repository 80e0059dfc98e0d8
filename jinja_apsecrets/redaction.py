"""Scrubbing secret values, and pieces of them, out of messages.

Jinja2 and Python quote what they fail on: ``{% include secret(..) %}`` raises
``TemplateNotFound: <the value>``, ``{{ d[secret(..)] }}`` an ``UndefinedError``
naming the key, ``int(secret(..))`` a ``ValueError`` quoting it. Such a
message may hold a *derived* value: ``| upper``, a slice, ``| reverse``.
Matching the exact value misses those, so a :class:`Redactor` remembers every
4-character window of each value it is given, case-folded, and of the value
reversed. A message is clean when none of its 4-character windows is one of
those; else every character covered by a matching window is replaced by the
placeholder. Values shorter than 4 characters are matched whole (any case,
reversed too): anywhere for 3 characters, as a separate word for 1 or 2 (a
1-character value would otherwise erase every message). Messages that hold no
piece of a value are returned unchanged, so ``can only concatenate str (not
"int") to str`` is still shown in full.

A value spread out by a one-character separator (``value | join("-")``) is
caught too: the same windows are looked for in every second character. What
this does not catch: a value spread wider, encoded (base64, hex) or cut into
pieces of fewer than 4 characters. Base64 is caught too (the library's own
``b64encode`` filter makes it, and ``{{ d[secret(..) | b64encode] }}`` quotes it):
each value's base64 text is remembered as well, standard and URL-safe, at the
three alignments a value can have inside a longer encoded text, keeping only
the characters that depend on the value alone. Callers that show
an error to people who must not see values should still prefer messages built
from names and paths (as :class:`~jinja_apsecrets.errors.SecretsError` is).

A redactor holds values, so it lives exactly as long as the work it protects
(one CLI run, one resolver) and :meth:`Redactor.clear` forgets them. It is
never pickled with its values: a pickled redactor comes back empty.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any

from . import forksafe

__all__ = ["PIECE", "PLACEHOLDER", "Redactor", "fold"]

#: Length of the pieces of a value that count as quoting it.
PIECE = 4
PLACEHOLDER = "<redacted>"


def _fold_char(char: str) -> str:
    # upper() then lower() maps the long s (U+017F) and 's' alike (| upper turns it
    # into 'S'); characters whose case mapping changes length stay as they
    # are, so that positions in the folded text are positions in the original.
    up = char.upper()
    if len(up) == 1:
        low = up.lower()
        if len(low) == 1:
            return low
    low = char.lower()
    return low if len(low) == 1 else char


def fold(text: str) -> str:
    """``text`` case-folded character by character (same length as ``text``)."""
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(c) for c in text)


class Redactor:
    """Remembers secret values and removes them (and pieces of them) from text.

    :meth:`add` is the resolver's ``on_value`` hook: the resolver calls it with
    every value it hands out. ``maxsize`` bounds how many distinct values are
    kept (the oldest are forgotten first), for long-lived processes where
    values rotate. Thread-safe.
    """

    def __init__(self, *, placeholder: str = PLACEHOLDER, maxsize: int = 10_000) -> None:
        self.placeholder = placeholder
        self.maxsize = maxsize
        self._lock = threading.Lock()
        # value -> None, in insertion order (a bounded, ordered set)
        self._values: dict[str, None] = {}
        self._pieces: dict[str, int] = {}  # folded 4-character window -> values holding it
        self._short: dict[str, int] = {}  # folded values shorter than PIECE
        self._pattern: re.Pattern[str] | None = None
        forksafe.track(self)

    def _after_fork(self) -> None:
        """In a forked child: a new lock (a thread of the parent may have held
        the old one while it forked); the values are kept."""
        self._lock = threading.Lock()

    # -- remembering ---------------------------------------------------------------

    def add(self, value: str) -> None:
        """Remember ``value`` (a no-op for an empty or already known value)."""
        if not isinstance(value, str) or not value:
            return
        with self._lock:
            if value in self._values:
                return
            self._values[value] = None
            self._count(value, 1)
            for form in _encoded(value):
                self._count(form, 1, reverse=False)
            while len(self._values) > self.maxsize:
                oldest = next(iter(self._values))
                del self._values[oldest]
                self._count(oldest, -1)
                for form in _encoded(oldest):
                    self._count(form, -1, reverse=False)

    def update(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    __call__ = add

    def _count(self, value: str, step: int, *, reverse: bool = True) -> None:
        folded = fold(value)
        if len(folded) < PIECE:
            keys: Iterable[str] = {folded, folded[::-1]}
            table = self._short
            self._pattern = None
        else:
            keys = {folded[i : i + PIECE] for i in range(len(folded) - PIECE + 1)}
            if reverse:
                keys = keys | {k[::-1] for k in keys}
            table = self._pieces
        for key in keys:
            left = table.get(key, 0) + step
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._values.clear()
            self._pieces.clear()
            self._short.clear()
            self._pattern = None

    close = clear

    def __len__(self) -> int:
        return len(self._values)

    # -- scrubbing -----------------------------------------------------------------

    def _short_pattern(self) -> re.Pattern[str] | None:
        if self._pattern is None and self._short:
            alternatives = []
            for short in sorted(self._short, key=len, reverse=True):
                escaped = re.escape(short)
                # 3 characters: anywhere; 1 or 2: only as a word of its own.
                alternatives.append(escaped if len(short) == 3 else rf"(?<!\w){escaped}(?!\w)")
            self._pattern = re.compile("|".join(alternatives))
        return self._pattern

    def _spans(self, text: str) -> list[tuple[int, int]]:
        folded = fold(text)
        covered = bytearray(len(text))
        with self._lock:
            pieces = self._pieces
            if pieces:
                for i in range(len(folded) - PIECE + 1):
                    if folded[i : i + PIECE] in pieces:
                        covered[i : i + PIECE] = b"\1" * PIECE
                # Every second character: a value joined with a one-character
                # separator (``value | join("-")``, ``join(" ")``).
                for offset in (0, 1):
                    spread = folded[offset::2]
                    for j in range(len(spread) - PIECE + 1):
                        if spread[j : j + PIECE] in pieces:
                            first = offset + 2 * j
                            covered[first : first + 2 * PIECE - 1] = b"\1" * (2 * PIECE - 1)
            pattern = self._short_pattern()
        if pattern is not None:
            for m in pattern.finditer(folded):
                covered[m.start() : m.end()] = b"\1" * (m.end() - m.start())
        return _runs(covered)

    def holds_value(self, text: str) -> bool:
        """Whether ``text`` holds a remembered value or a piece of one."""
        return bool(self._spans(text))

    def redact(self, text: str) -> str:
        """``text`` with every piece of a remembered value replaced by the placeholder."""
        return self._replace(text, self._spans(text))

    def redact_values(self, text: str) -> str:
        """``text`` with every whole remembered value (of at least :data:`PIECE`
        characters, any case, or reversed) replaced by the placeholder.

        For the library's own errors, whose paths are written by the template
        and so may be computed from a value (``secret("aws", "db:" ~
        secret(..) | lower)``); pieces are not looked for there, since a path
        often shares a few characters with a value (``app`` in ``app:user``)."""
        if not text:
            return text
        folded = fold(text)
        with self._lock:
            values = [fold(v) for v in self._values if len(v) >= PIECE]
        covered = bytearray(len(text))
        for value in values:
            for needle in (value, value[::-1]):
                i = folded.find(needle)
                while i >= 0:
                    covered[i : i + len(needle)] = b"\1" * len(needle)
                    i = folded.find(needle, i + 1)
        return self._replace(text, _runs(covered))

    def _replace(self, text: str, spans: list[tuple[int, int]]) -> str:
        if not spans:
            return text
        out, pos = [], 0
        for start, end in spans:
            out += [text[pos:start], self.placeholder]
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def redact_exception(self, error: BaseException) -> BaseException:
        """Redact the messages of ``error`` and of the exceptions it chains to,
        in place (their ``args``, and ``name``/``templates`` of Jinja's
        ``TemplateNotFound``); returns ``error``.

        The library's own errors are built from names and paths: only whole
        values are taken out of them (a path may be computed from a value), see
        :meth:`redact_values`.
        """
        from .errors import SecretsError

        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, SecretsError):
                self._redact_library_error(current)
            else:
                self._redact_one(current)
            current = current.__cause__ or current.__context__
        return error

    def _redact_library_error(self, error: Any) -> None:
        # Built from names and paths; a path computed from a value holds it whole.
        error.args = tuple(self.redact_values(a) if isinstance(a, str) else a for a in error.args)
        for attr in ("path", "hint"):
            value = getattr(error, attr, None)
            if isinstance(value, str):
                setattr(error, attr, self.redact_values(value))

    def _redact_one(self, error: BaseException) -> None:
        def scrub(item: Any) -> Any:
            return self.redact(item) if isinstance(item, str) else item

        try:
            error.args = tuple(scrub(a) for a in error.args)
            for attr in ("name", "message"):
                value = error.__dict__.get(attr)
                if isinstance(value, str):
                    setattr(error, attr, self.redact(value))
            templates = error.__dict__.get("templates")
            if isinstance(templates, list):
                error.templates = [scrub(t) for t in templates]  # type: ignore[attr-defined]
            notes = getattr(error, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [scrub(n) for n in notes]
        except (AttributeError, TypeError):  # an exception type with read-only fields
            pass

    # -- safety --------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Redactor values={len(self._values)}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Never pickle the values: an unpickled redactor starts empty.
        return (_rebuild, (self.placeholder, self.maxsize))


def _runs(covered: bytearray) -> list[tuple[int, int]]:
    """The ``(start, end)`` runs of set flags in ``covered``."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, flag in enumerate(covered):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(covered)))
    return spans


_URLSAFE = str.maketrans("+/", "-_")


def _encoded(value: str) -> set[str]:
    """The base64 texts of ``value`` (standard and URL-safe) that hold at
    least :data:`PIECE` characters depending on the value alone.

    Inside a longer encoded text the value starts at a byte offset ``k`` of 0,
    1 or 2 within a 3-byte group; character ``i`` of the encoding covers bits
    ``6i`` to ``6i + 6``, so the characters fully inside the value's bits
    ``8k`` to ``8(k + n)`` are the same whatever surrounds it."""
    raw = value.encode("utf-8", "surrogatepass")
    forms: set[str] = set()
    for k in range(3):
        text = base64.b64encode(b"\0" * k + raw).decode("ascii")
        first = -(-8 * k // 6)  # ceil: the first character with no bit before the value
        last = 8 * (k + len(raw)) // 6  # the characters with no bit after it
        part = text[first:last]
        if len(part) >= PIECE:
            forms.add(part)
            forms.add(part.translate(_URLSAFE))
    return forms


def _rebuild(placeholder: str, maxsize: int) -> Redactor:
    return Redactor(placeholder=placeholder, maxsize=maxsize)
