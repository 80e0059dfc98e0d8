"""dotenv files: parsed into lines that keep their layout, re-rendered with new values.

The syntax is the common one of docker compose, python-dotenv and node's
dotenv::

    # a comment                      kept as it is
    export DB_USER=app               'export' is allowed and kept
    DB_PASSWORD='<<aws|ap_sep_v1|prod/db:password>>'   # single quotes: literal
    GREETING="hello\\nworld"          double quotes: \\n \\t \\r \\" \\\\ \\$ \\` escapes
    URL=postgres://app@db/app  # ...  unquoted: up to a blank + '#', trimmed
    CERT="-----BEGIN ...             quoted values may span lines
    ...-----"

Values are taken literally: ``${VAR}`` is not expanded (a file whose meaning
changes with the environment it is read in is not what a secrets tool should
hand a process). A line that is none of the above is an error that names the
line, never its text (it may hold a value).

:func:`parse` gives a :class:`Dotenv`; :meth:`Dotenv.values` maps names to
values (later lines win); :meth:`Dotenv.render` writes the file again, every
line byte for byte except the values replaced, which are quoted when they need
it (:func:`quote`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Dotenv", "DotenvError", "Entry", "Line", "parse", "quote"]

Quote = Literal["", "'", '"']

_ENTRY = re.compile(
    r"[ \t]*(?P<export>export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.]*)[ \t]*(?P<eq>=?)[ \t]*"
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$", "'": "'", "`": "`"}
_SAFE_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=~^-]*")
#: What a shell (or compose) reads inside double quotes as more than itself.
_EXPANDED = "$`\\"


class DotenvError(ValueError):
    """A dotenv file that cannot be parsed; names the line, never its text."""

    def __init__(self, message: str, lineno: int) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


@dataclass
class Entry:
    """``NAME=value`` as written: the value and how it was quoted.

    ``value`` is ``None`` for a bare ``NAME`` line (no ``=``)."""

    name: str
    value: str | None = field(repr=False)  # a dotenv file may hold plain secrets
    quote: Quote = ""
    export: bool = False


@dataclass
class Line:
    """One logical line (a quoted value may span several) and its entry, if any.

    ``text`` is the line as written, its line break included. The value's
    text (quotes included) is ``text[span[0]:span[1]]``."""

    text: str = field(repr=False)
    lineno: int
    entry: Entry | None = None
    span: tuple[int, int] = (0, 0)


@dataclass
class Dotenv:
    """A parsed dotenv file: every line, in order."""

    lines: list[Line] = field(default_factory=list)

    @property
    def entries(self) -> list[Line]:
        """The lines that set a variable (``NAME=value``)."""
        return [ln for ln in self.lines if ln.entry is not None and ln.entry.value is not None]

    def values(self) -> dict[str, str]:
        """Name -> value; a name set twice takes its last value."""
        out: dict[str, str] = {}
        for line in self.entries:
            assert line.entry is not None
            assert line.entry.value is not None
            out[line.entry.name] = line.entry.value
        return out

    def render(self, new_values: Mapping[int, str] | None = None) -> str:
        """The file again; the lines numbered in ``new_values`` (by
        :attr:`Line.lineno`) get that value, quoted as :func:`quote` says."""
        new_values = new_values or {}
        out: list[str] = []
        for line in self.lines:
            if line.entry is None or line.lineno not in new_values:
                out.append(line.text)
                continue
            value = new_values[line.lineno]
            if value == line.entry.value:
                out.append(line.text)
                continue
            start, end = line.span
            out.append(line.text[:start] + quote(value, line.entry.quote) + line.text[end:])
        return "".join(out)


def quote(value: str, prefer: Quote = "") -> str:
    """``value`` as a dotenv value that reads back as ``value``.

    The quoting style ``prefer`` is kept when it can hold ``value``; a value
    that needs quotes gets single quotes if it holds no ``'`` and no line
    break (nothing in it is special there), else double quotes with escapes.
    Readers disagree on ``\\$``, so single quotes, which every reader takes
    literally, are used wherever they can be, and ``$`` and backticks are
    escaped only in a value they cannot hold. So a
    value holding ``$``, a backtick or a backslash gets single quotes even
    where the file had double quotes: there a shell sourcing the file (or
    compose interpolating it) would expand ``$VAR``, run ``$(...)`` or
    backticks, and a password like ``pa$word`` would arrive as ``pa``. A
    leading ``~`` is quoted too (a shell expands it).
    """
    if prefer == "" and _SAFE_BARE.fullmatch(value) and not value.startswith("~"):
        return value
    literal = "'" not in value and "\n" not in value and "\r" not in value
    if literal and (prefer in ("", "'") or any(c in value for c in _EXPANDED)):
        return f"'{value}'"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    # Only a value single quotes cannot hold (a ' or a line break) gets here:
    # \$ and \` are escaped, so a shell sourcing the file never expands or runs
    # it (a reader that knows no \$ keeps the backslash: a wrong value, never a
    # command run).
    escaped = escaped.replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def parse(text: str) -> Dotenv:
    """Parse dotenv ``text``; :class:`DotenvError` names a line that is not valid."""
    out = Dotenv()
    pos, lineno = 0, 1
    while pos < len(text):
        eol = _line_end(text, pos)
        body = text[pos:eol].rstrip("\r\n")
        if not body.strip() or body.lstrip().startswith("#"):
            out.lines.append(Line(text[pos:eol], lineno))
        else:
            end, entry, span = _entry(text, pos, eol, lineno)
            out.lines.append(Line(text[pos:end], lineno, entry, (span[0] - pos, span[1] - pos)))
            eol = end
        lineno += text.count("\n", pos, eol)
        pos = eol
    return out


def _line_end(text: str, pos: int) -> int:
    """The index after the line break of the line at ``pos`` (or the end)."""
    nl = text.find("\n", pos)
    return len(text) if nl < 0 else nl + 1


def _entry(text: str, pos: int, eol: int, lineno: int) -> tuple[int, Entry, tuple[int, int]]:
    """Parse ``NAME=value`` at ``pos``: where its logical line ends, the entry,
    and the span of its value's text."""
    m = _ENTRY.match(text, pos, eol)
    if m is None or m.end() == pos:
        raise DotenvError("expected NAME=value, a comment or a blank line", lineno)
    name, export = m["name"], bool(m["export"])
    start = m.end()
    if not m["eq"]:
        if text[start:eol].strip():
            # The "name" of a malformed line may be a pasted value: not quoted.
            raise DotenvError("expected NAME=value, a comment or a blank line", lineno)
        return eol, Entry(name, None, export=export), (start, start)
    opener = text[start : start + 1]
    if opener in ("'", '"'):
        close, value = _quoted(text, start, opener, lineno)
        rest_end = _line_end(text, close)
        rest = text[close + 1 : rest_end].strip()
        if rest and not rest.startswith("#"):
            raise DotenvError(f"unexpected text after the closing quote of {name}", lineno)
        q: Quote = "'" if opener == "'" else '"'
        return rest_end, Entry(name, value, q, export), (start, close + 1)
    line = text[start:eol].rstrip("\r\n")
    comment = re.search(r"[ \t]#", line)
    raw = line[: comment.start()] if comment else line
    raw = raw.rstrip(" \t")
    return eol, Entry(name, raw, "", export), (start, start + len(raw))


def _quoted(text: str, start: int, opener: str, lineno: int) -> tuple[int, str]:
    """The closing quote's index and the value of the quoted string at ``start``."""
    if opener == "'":
        close = text.find("'", start + 1)
        if close < 0:
            raise DotenvError("unterminated single-quoted value", lineno)
        return close, text[start + 1 : close]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return i, "".join(out)
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise DotenvError("unterminated double-quoted value", lineno)
