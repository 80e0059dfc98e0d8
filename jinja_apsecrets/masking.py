"""Mask secret values in a byte stream that arrives in pieces.

``jinja-apsecrets run`` passes its child's output through, with every
resolved value replaced by :data:`CONCEALED`. A pipe delivers output in reads
of any size, so a value may be split across two reads: :class:`StreamMasker`
holds back the end of a read only while it could still be the beginning of a
value, and so gives, for any split of the input, exactly what masking the
whole input at once gives (:func:`mask`).

The rule for "masking the whole" is the one of a regular expression that
tries longer values first: scanning left to right, at the first position where
some value occurs, the longest value occurring there is replaced, and the scan
goes on after it. Replacements are never scanned again.

Besides each value as a whole, its trimmed form and each line of a multi-line
value are masked (:func:`maskable`): programs strip and split what they print.

What is held back is at most ``len(longest value) - 1`` bytes, and only bytes
that could start a value given more input: output with no value in it passes
through as soon as it is read, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["CONCEALED", "MIN_LENGTH", "StreamMasker", "mask", "maskable"]

#: What a value is replaced with.
CONCEALED = b"<concealed by jinja-apsecrets>"

#: Shorter values are not masked: masking "1" or "no" would garble any output
#: and tell a reader which short strings the secret is.
MIN_LENGTH = 3


def _variants(value: str) -> Iterator[str]:
    """``value`` and the forms a program is likely to print it in: without
    surrounding blanks (a value stored with its file's trailing newline), and
    each line of a multi-line value (a PEM key logged line by line)."""
    yield value
    yield value.strip()
    if "\n" in value or "\r" in value:
        for line in value.splitlines():
            yield line.strip()


def maskable(values: Iterable[str]) -> list[bytes]:
    """The UTF-8 bytes to mask for ``values`` (each value and its
    :func:`_variants`, at least :data:`MIN_LENGTH` characters), without
    duplicates, longest first."""
    found = {
        form.encode("utf-8")
        for value in values
        if isinstance(value, str)
        for form in _variants(value)
        if len(form) >= MIN_LENGTH
    }
    return sorted(found, key=lambda b: (-len(b), b))


def _pattern(values: list[bytes]) -> re.Pattern[bytes] | None:
    # Alternatives are tried in order, so longest first gives the longest
    # value at a position.
    return re.compile(b"|".join(re.escape(v) for v in values)) if values else None


def mask(data: bytes, values: Iterable[str], replacement: bytes = CONCEALED) -> bytes:
    """``data`` with every value of ``values`` replaced, all at once."""
    pattern = _pattern(maskable(values))
    return data if pattern is None else pattern.sub(lambda _: replacement, data)


class StreamMasker:
    """Masks values in a stream fed in chunks; :meth:`feed` each chunk, then
    :meth:`flush` at the end of the stream.

    The concatenated output of all calls equals :func:`mask` of the
    concatenated input, however the input was split.
    """

    def __init__(self, values: Iterable[str], replacement: bytes = CONCEALED) -> None:
        self._values = maskable(values)
        self._pattern = _pattern(self._values)
        self._replacement = replacement
        self._longest = len(self._values[0]) if self._values else 0
        self._starts = frozenset(v[:1] for v in self._values)
        self._pending = b""

    @property
    def pending(self) -> int:
        """How many bytes are held back (always below the longest value's length)."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> bytes:
        """The output that ``chunk`` completes (possibly empty)."""
        if self._pattern is None:
            return chunk
        buf = self._pending + chunk
        out: list[bytes] = []
        pos = 0
        cut = self._undecided(buf, 0)
        while True:
            if pos > cut:  # a match ran past the undecided position: look again after it
                cut = self._undecided(buf, pos)
            match = self._pattern.search(buf, pos)
            if match is None or match.start() >= cut:
                break
            # A match before the first undecided position is final: no longer
            # value can start there, whatever comes next.
            out.append(buf[pos : match.start()])
            out.append(self._replacement)
            pos = match.end()
        out.append(buf[pos:cut])
        self._pending = buf[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The rest of the stream: what was held back, masked."""
        rest, self._pending = self._pending, b""
        if self._pattern is None or not rest:
            return rest
        return self._pattern.sub(lambda _: self._replacement, rest)

    def _undecided(self, buf: bytes, start: int) -> int:
        """The first position from ``start`` where a value may begin that runs
        past the end of ``buf`` (``buf[p:]`` is a proper prefix of a value);
        ``len(buf)`` if there is none."""
        size = len(buf)
        for p in range(max(start, size - self._longest + 1), size):
            if buf[p : p + 1] not in self._starts:
                continue
            tail = buf[p:]
            if any(len(v) > len(tail) and v.startswith(tail) for v in self._values):
                return p
        return size
