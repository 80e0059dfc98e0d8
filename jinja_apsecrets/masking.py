"""Mask secret values in a byte stream that arrives in pieces.

``jinja-apsecrets run`` passes its child's output through, with every
resolved value replaced by :data:`CONCEALED`. A pipe delivers output in reads
of any size, so a value may be split across two reads: :class:`StreamMasker`
holds back the end of a read only while it could still be the beginning of a
value, and so gives, for any split of the input, exactly what masking the
whole input at once gives (:func:`mask`).

The rule for "masking the whole" is the one of a regular expression that
alternates the values, longer ones first: scanning left to right, at the first
position where some value occurs, the longest value occurring there is
replaced, and the scan goes on after it. Replacements are never scanned again.
(The implementation finds occurrences with ``bytes.find``, many times faster
than such an expression; the tests hold it to the expression.)

Besides each value as a whole, its trimmed form and each line of a multi-line
value are masked (:func:`maskable`): programs strip and split what they print.

What is held back is at most ``len(longest value) - 1`` bytes, and only bytes
that could start a value given more input: output with no value in it passes
through as soon as it is read, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

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


def _occurrences(buf: bytes, values: list[bytes]) -> dict[int, int]:
    """Where each value occurs in ``buf`` (overlaps included): start -> length
    of the longest value starting there (``values`` come longest first).

    One ``bytes.find`` pass per value: C-speed scanning, where a regular
    expression alternating many literals tries each of them at every byte.
    """
    found: dict[int, int] = {}
    for value in values:
        i = buf.find(value)
        while i >= 0:
            found.setdefault(i, len(value))
            i = buf.find(value, i + 1)
    return found


def _sweep(
    buf: bytes,
    found: dict[int, int],
    replacement: bytes,
    out: list[bytes],
    limit: Callable[[int], int] | None = None,
) -> int:
    """Append ``buf`` masked to ``out``, scanning left to right: the first
    occurrence at or after the scan position is replaced, the scan goes on
    after it. ``limit(pos)``, if given, is where the decided part of ``buf``
    ends for a scan at ``pos``; the scan stops there. Returns where it stopped
    (everything before is in ``out``)."""
    pos = 0
    cut = len(buf) if limit is None else limit(0)
    for start in sorted(found):
        if start < pos:
            continue  # inside the previous replacement
        if pos > cut and limit is not None:  # a match ran past the limit: look again
            cut = limit(pos)
        if start >= cut:
            break
        # A match before the limit is final: no longer value can start there,
        # whatever comes next.
        out.append(buf[pos:start])
        out.append(replacement)
        pos = start + found[start]
    if pos > cut and limit is not None:
        cut = limit(pos)
    cut = max(cut, pos)
    out.append(buf[pos:cut])
    return cut


def mask(data: bytes, values: Iterable[str], replacement: bytes = CONCEALED) -> bytes:
    """``data`` with every value of ``values`` replaced, all at once."""
    forms = maskable(values)
    if not forms:
        return data
    out: list[bytes] = []
    _sweep(data, _occurrences(data, forms), replacement, out)
    return b"".join(out)


class StreamMasker:
    """Masks values in a stream fed in chunks; :meth:`feed` each chunk, then
    :meth:`flush` at the end of the stream.

    The concatenated output of all calls equals :func:`mask` of the
    concatenated input, however the input was split.
    """

    def __init__(self, values: Iterable[str], replacement: bytes = CONCEALED) -> None:
        self._values = maskable(values)
        self._replacement = replacement
        self._longest = len(self._values[0]) if self._values else 0
        self._pending = b""

    @property
    def pending(self) -> int:
        """How many bytes are held back (always below the longest value's length)."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> bytes:
        """The output that ``chunk`` completes (possibly empty)."""
        if not self._values:
            return chunk
        buf = self._pending + chunk
        out: list[bytes] = []
        cut = _sweep(
            buf,
            _occurrences(buf, self._values),
            self._replacement,
            out,
            lambda pos: self._undecided(buf, pos),
        )
        self._pending = buf[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The rest of the stream: what was held back, masked."""
        rest, self._pending = self._pending, b""
        if not self._values or not rest:
            return rest
        out: list[bytes] = []
        _sweep(rest, _occurrences(rest, self._values), self._replacement, out)
        return b"".join(out)

    def _undecided(self, buf: bytes, start: int) -> int:
        """The first position from ``start`` where a value may begin that runs
        past the end of ``buf`` (``buf[p:]`` is a proper prefix of a value);
        ``len(buf)`` if there is none.

        Only the last ``len(value) - 1`` bytes can start a value that runs
        past the end; of those, only the ones equal to its first byte (found
        with ``bytes.find``) are compared with it."""
        size = best = len(buf)
        for value in self._values:
            first = value[:1]
            p = buf.find(first, max(start, size - len(value) + 1), best)
            while p >= 0:
                if value.startswith(buf[p:]):
                    best = p
                    break
                p = buf.find(first, p + 1, best)
        return best
