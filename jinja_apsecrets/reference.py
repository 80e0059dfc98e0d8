"""Find and parse secret references in text and in template source.

The grammar (public API: the README describes it)::

    <<CONNECTION|ap_sep_v1|PATH>>     primary form
    {{CONNECTION|ap_sep_v1|PATH}}     the spec's form

PATH runs to the closing delimiter on the same line; blanks around it are
trimmed, inner blanks kept. Anything else is not a reference and is left alone.

:func:`find_references` scans plain text (configuration values, trusted data).
:class:`TemplateScanner` scans Jinja source with the environment's own
delimiters and skips what Jinja itself does not treat as template data: raw
blocks, comments, line comments, and the inside of tags and line statements
(string literals, expressions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import SecretValidationError

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = [
    "SEPARATOR",
    "Reference",
    "Segment",
    "TemplateScanner",
    "find_references",
    "parse_bare",
    "validate_connection_name",
]

SEPARATOR = "ap_sep_v1"
CONNECTION_PATTERN = r"[A-Za-z0-9_.-]+"
_CONNECTION_RE = re.compile(CONNECTION_PATTERN + r"\Z")

# A reference is a head (opening delimiter, connection, separator) and the
# first closing delimiter after it on the same line. Heads are found by regex;
# closers by str.find, remembered across heads (see _Closer), so scanning stays
# linear however many heads a line holds.
_ANGLE_HEAD = re.compile(r"<<[ \t]*(?P<conn>" + CONNECTION_PATTERN + r")\|" + SEPARATOR + r"\|")
_EOL = re.compile(r"[\r\n]")


def _brace_head(start: str) -> re.Pattern[str]:
    return re.compile(
        re.escape(start)
        + r"(?P<ls>[-+]?)[ \t]*(?P<conn>"
        + CONNECTION_PATTERN
        + r")\|"
        + SEPARATOR
        + r"\|"
    )


_BRACE_HEAD = _brace_head("{{")


class _Closer:
    """The first ``close`` at or after a position, on the same line.

    Positions asked for must not decrease; the next closer and the next line
    end are remembered, so a long line of heads without a closer costs one
    pass, not one per head.
    """

    def __init__(self, text: str, close: str) -> None:
        self.text, self.close = text, close
        self._close = self._eol = -1

    def find(self, pos: int) -> int:
        """Index of the closer, or -1 if the line ends first."""
        text = self.text
        if self._close < pos:
            found = text.find(self.close, pos)
            self._close = found if found >= 0 else len(text) + 1
        if self._eol < pos:
            eol = _EOL.search(text, pos)
            self._eol = eol.start() if eol else len(text)
        return self._close if self._close + len(self.close) <= self._eol else -1


@dataclass(slots=True)
class Reference:
    """One reference as written: where it is and what it names."""

    connection: str
    path: str
    text: str
    start: int
    end: int
    lineno: int = 1
    form: Literal["angle", "brace"] = "angle"
    #: Jinja whitespace control on the brace form (``{{-`` / ``-}}``).
    strip_before: bool = False
    strip_after: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.connection, self.path)


def _match(
    head: re.Match[str] | None, closer: _Closer, form: Literal["angle", "brace"], lineno: int
) -> Reference | None:
    """The reference that starts with ``head``, if its closer is on the line."""
    if head is None:
        return None
    close = closer.find(head.end())
    if close < 0:
        return None
    body = closer.text[head.end() : close]
    strip_after = False
    if form == "brace" and len(body) >= 2 and body[-1] in "-+" and body[-2] in " \t":
        # A "-" right before the end delimiter, after a blank, is Jinja's
        # whitespace control, not part of the path.
        strip_after = body[-1] == "-"
        body = body[:-1]
    start, end = head.start(), close + len(closer.close)
    ref = Reference(
        head["conn"], body.strip(" \t"), closer.text[start:end], start, end, lineno, form
    )
    if form == "brace":
        ref.strip_before = head["ls"] == "-"
        ref.strip_after = strip_after
    return ref


def find_references(text: str) -> list[Reference]:
    """Every reference in plain ``text``, in order, in either form.

    Fast when there is none: text without the separator is not scanned.
    """
    if SEPARATOR not in text:
        return []
    found: list[Reference] = []
    closers = {"angle": _Closer(text, ">>"), "brace": _Closer(text, "}}")}
    heads = {"angle": _ANGLE_HEAD, "brace": _BRACE_HEAD}
    pos = line_pos = 0
    lineno = 1
    a = _ANGLE_HEAD.search(text)
    b = _BRACE_HEAD.search(text)
    while True:
        # Search again only for the form whose next head was passed.
        if a is not None and a.start() < pos:
            a = _ANGLE_HEAD.search(text, pos)
        if b is not None and b.start() < pos:
            b = _BRACE_HEAD.search(text, pos)
        if a is None and b is None:
            return found
        head, form = (a, "angle") if a and (not b or a.start() <= b.start()) else (b, "brace")
        assert head is not None
        lineno += text.count("\n", line_pos, head.start())
        line_pos = head.start()
        ref = _match(heads[form].match(text, head.start()), closers[form], form, lineno)  # type: ignore[arg-type]
        if ref is None:
            pos = head.start() + 1
            continue
        found.append(ref)
        pos = ref.end


def parse_bare(text: str) -> Reference | None:
    """Parse one reference given alone: delimited, or bare ``conn|ap_sep_v1|path``."""
    stripped = text.strip()
    refs = find_references(stripped)
    if len(refs) == 1 and refs[0].text == stripped:
        return refs[0]
    conn, sep, path = stripped.partition("|" + SEPARATOR + "|")
    if sep and _CONNECTION_RE.match(conn) and path.strip() and "\n" not in path:
        return Reference(conn, path.strip(" \t"), stripped, 0, len(stripped))
    return None


def validate_connection_name(name: str) -> None:
    """Raise VALIDATION unless ``name`` is a valid connection name."""
    if not isinstance(name, str) or not _CONNECTION_RE.match(name):
        raise SecretValidationError(
            f"Invalid connection name {name!r}: use letters, digits, '_', '.' and '-'"
        )


# -- template source -------------------------------------------------------------


@dataclass(slots=True)
class Segment:
    """A piece of template source, as the scanner sees it.

    ``kind`` is ``"data"`` (plain template text, no Jinja syntax), ``"ref"`` (a
    reference, in :attr:`ref`) or ``"jinja"`` (anything Jinja interprets: tags,
    comments, raw blocks, line statements; left exactly as it is).
    """

    kind: Literal["data", "ref", "jinja"]
    start: int
    end: int
    ref: Reference | None = None


_STRING = r"'[^'\\]*(?:\\.[^'\\]*)*'|\"[^\"\\]*(?:\\.[^\"\\]*)*\""


class TemplateScanner:
    """Finds references in Jinja source, using an environment's syntax settings.

    It mirrors what Jinja's lexer treats as template data: references inside
    ``{% raw %}``, comments, line comments, tags, line statements and string
    literals are not references and are never touched.
    """

    def __init__(self, environment: Environment) -> None:
        e = re.escape
        env = environment
        self.block_start, self.block_end = env.block_start_string, env.block_end_string
        self.variable_start, self.variable_end = env.variable_start_string, env.variable_end_string
        self.comment_start, self.comment_end = env.comment_start_string, env.comment_end_string
        rules: list[tuple[int, str, str]] = [
            (len(self.comment_start), "comment", e(self.comment_start)),
            (len(self.block_start), "block", e(self.block_start)),
            (len(self.variable_start), "variable", e(self.variable_start)),
            (2, "angle", "<<"),
        ]
        if self.variable_start != "{{":
            rules.append((2, "brace", r"\{\{"))
        if env.line_statement_prefix is not None:
            rules.append(
                (
                    len(env.line_statement_prefix),
                    "linestmt",
                    r"^[ \t\v]*" + e(env.line_statement_prefix),
                )
            )
        if env.line_comment_prefix is not None:
            rules.append(
                (
                    len(env.line_comment_prefix),
                    "linecomment",
                    r"(?:^|(?<=\S))[^\S\r\n]*" + e(env.line_comment_prefix),
                )
            )
        # Same order as Jinja's lexer: longest delimiter first at one position.
        rules.sort(key=lambda r: r[0], reverse=True)
        self._start = re.compile("|".join(f"(?P<{k}>{p})" for _, k, p in rules), re.M)
        bs, be = e(self.block_start), e(self.block_end)
        self._raw_begin = re.compile(bs + r"(\-|\+|)\s*raw\s*(?:\-" + be + r"\s*|" + be + ")")
        self._raw_end = re.compile(
            bs + r"(\-|\+|)\s*endraw\s*(?:\+" + be + r"|\-" + be + r"\s*|" + be + ")"
        )
        self._var_head = _brace_head(self.variable_start)
        self._delims = tuple(
            d for d in {self.block_start, self.variable_start, self.comment_start} if d
        )
        self._tag_tokens: dict[str, re.Pattern[str]] = {}

    def _tag_re(self, end: str) -> re.Pattern[str]:
        pattern = self._tag_tokens.get(end)
        if pattern is None:
            pattern = re.compile(
                f"(?P<end>{re.escape(end)})|(?P<str>{_STRING})|(?P<open>[\\[({{])|(?P<close>[\\])}}])",
                re.S,
            )
            self._tag_tokens[end] = pattern
        return pattern

    def _skip_tag(self, source: str, pos: int, end: str) -> int:
        """Position after the tag that ends with ``end`` (Jinja's balancing rules)."""
        pattern = self._tag_re(end)
        depth = 0
        while True:
            m = pattern.search(source, pos)
            if m is None:
                return len(source)
            kind = m.lastgroup
            if kind == "end":
                if depth == 0:
                    return m.end()
                # Inside brackets Jinja does not see end delimiters.
                pos = m.start() + 1
                if source[m.start()] in ")]}":
                    depth -= 1
                continue
            pos = m.end()
            if kind == "open":
                depth += 1
            elif kind == "close" and depth:
                depth -= 1

    def _skip_line(self, source: str, pos: int) -> int:
        return self._skip_tag(source, pos, "\n")

    def scan(self, source: str) -> Iterator[Segment]:
        """Split ``source`` into data, reference and Jinja segments, in order."""
        pos = data_start = line_pos = 0
        lineno = 1
        n = len(source)
        closers = {
            "angle": _Closer(source, ">>"),
            "brace": _Closer(source, "}}"),
            "variable": _Closer(source, self.variable_end),
        }
        heads = {"angle": _ANGLE_HEAD, "brace": _BRACE_HEAD, "variable": self._var_head}
        while pos < n:
            m = self._start.search(source, pos)
            if m is None:
                break
            kind = m.lastgroup
            start = m.start()
            ref: Reference | None = None
            if kind in ("angle", "brace", "variable"):
                assert kind is not None
                form: Literal["angle", "brace"] = "angle" if kind == "angle" else "brace"
                lineno += source.count("\n", line_pos, start)
                line_pos = start
                ref = _match(heads[kind].match(source, start), closers[kind], form, lineno)
                if ref is None and kind != "variable":
                    pos = start + 1
                    continue
            if start > data_start:
                yield Segment("data", data_start, start)
            if ref is not None:
                yield Segment("ref", ref.start, ref.end, ref)
                pos = data_start = ref.end
                continue
            if kind == "comment":
                end = source.find(self.comment_end, m.end())
                stop = n if end < 0 else end + len(self.comment_end)
            elif kind == "block":
                raw = self._raw_begin.match(source, start)
                if raw is not None:
                    close = self._raw_end.search(source, raw.end())
                    stop = n if close is None else close.end()
                else:
                    stop = self._skip_tag(source, m.end(), self.block_end)
            elif kind == "variable":
                stop = self._skip_tag(source, m.end(), self.variable_end)
            elif kind == "linestmt":
                stop = self._skip_line(source, m.end())
            else:  # linecomment
                nl = source.find("\n", m.end())
                stop = n if nl < 0 else nl
            yield Segment("jinja", start, stop)
            pos = data_start = stop
        if data_start < n:
            yield Segment("data", data_start, n)

    def dynamic_path_error(self, ref: Reference) -> str | None:
        """A message if the path holds Jinja syntax (paths are static text)."""
        for delim in self._delims:
            if delim in ref.path:
                return (
                    f"Reference paths are static text; found {delim!r} in {ref.path!r}. "
                    "For a computed path use the function form: "
                    f"secret({ref.connection!r}, <expression>)"
                )
        return None
