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
    "RefSpan",
    "Reference",
    "Segment",
    "Span",
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

#: A reference as :meth:`TemplateScanner.spans` finds it, as offsets into the
#: source: ``(start, end, connection start, connection end, path start, path
#: end, strip_before, strip_after, brace)``: Jinja's whitespace control on the
#: brace form (``{{-`` / ``-}}``), and whether it is the brace form.
RefSpan = tuple[int, int, int, int, int, int, bool, bool, bool]
#: What :meth:`TemplateScanner.spans` yields: ``(start, end, ref)``, where
#: ``ref`` is None for Jinja syntax.
Span = tuple[int, int, "RefSpan | None"]

#: The inside of a tag whose end is simply its first end delimiter outside
#: brackets: no string literal, no brackets but ``(...)`` and ``[...]`` pairs
#: holding none (such as ``{{ port | default(80) }}``). Each character has one
#: way to match, so a tag that does not fit fails fast (and is walked in Python).
_PLAIN = r"[^'\"()\[\]{}]"
_FLAT = rf"(?:{_PLAIN}|\({_PLAIN}*\)|\[{_PLAIN}*\])*?"


def _ref_pattern(tag: str, close: str, *, brace: bool) -> str:
    """A whole reference after its opening delimiter: the first ``close`` (a
    regex) on the same line ends it, as :class:`_Closer` finds it."""
    conn = rf"(?P<{tag}_conn>{CONNECTION_PATTERN})\|{SEPARATOR}\|"
    if brace:
        # Whitespace control is read from the body in Python (_brace_span).
        return rf"(?P<{tag}_ls>[-+]?)[ \t]*{conn}(?P<{tag}_body>[^\r\n]*?){close}"
    # The angle form's path, blanks around it left out (the shortest body
    # that blanks and the closer follow ends at the first closer).
    return rf"[ \t]*{conn}[ \t]*(?P<{tag}_body>[^\r\n]*?)[ \t]*{close}"


def _brace_span(m: re.Match[str], tag: str) -> RefSpan:
    """The :data:`RefSpan` of a brace-form reference matched by _ref_pattern."""
    text = m.string
    body_start, body_end = m.span(tag + "_body")
    strip_after = False
    if body_end - body_start >= 2 and text[body_end - 1] in "-+" and text[body_end - 2] in " \t":
        # A "-" right before the end delimiter, after a blank, is Jinja's
        # whitespace control, not part of the path.
        strip_after = text[body_end - 1] == "-"
        body_end -= 1
    body = text[body_start:body_end]
    path_start = body_start + len(body) - len(body.lstrip(" \t"))
    path_end = max(path_start, body_end - (len(body) - len(body.rstrip(" \t"))))
    conn_start, conn_end = m.span(tag + "_conn")
    ls = m.group(tag + "_ls") == "-"
    return (m.start(), m.end(), conn_start, conn_end, path_start, path_end, ls, strip_after, True)


class TemplateScanner:
    """Finds references in Jinja source, using an environment's syntax settings.

    It mirrors what Jinja's lexer treats as template data: references inside
    ``{% raw %}``, comments, line comments, tags, line statements and string
    literals are not references and are never touched.

    One regex finds the next thing that is not plain text. Its alternatives
    are Jinja's start delimiters, longest first as in Jinja's lexer, and in
    front of each sits a longer alternative that takes the whole thing in one
    match where it can: a whole reference in front of the delimiter it opens
    with (``<<``, ``{{``), a whole comment, a whole tag without string literals
    or brackets (such as ``{{ name }}``, which ends at its first end
    delimiter). Only what those leave (tags with strings or brackets, raw
    blocks, line statements, a ``<<`` that starts no reference) is walked in
    Python. A lookahead of the characters that can start anything lets the
    regex engine skip plain text quickly.
    """

    def __init__(self, environment: Environment) -> None:
        e = re.escape
        env = environment
        self.block_start, self.block_end = env.block_start_string, env.block_end_string
        self.variable_start, self.variable_end = env.variable_start_string, env.variable_end_string
        self.comment_start, self.comment_end = env.comment_start_string, env.comment_end_string
        bs, be = e(self.block_start), e(self.block_end)
        ve, ce = e(self.variable_end), e(self.comment_end)
        # A reference's closer ends on its line; one holding a line break never does.
        var_ref = "\n" not in self.variable_end and "\r" not in self.variable_end
        # (kind, delimiter, [(suffix, what follows the delimiter in a whole thing)])
        rules: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("comment", self.comment_start, [("whole", r"[\s\S]*?" + ce)]),
            (
                "block",
                self.block_start,
                [("whole", r"(?![-+]?\s*raw\s*-?" + be + ")" + _FLAT + be)],
            ),
            (
                "variable",
                self.variable_start,
                [("ref", _ref_pattern("v", ve, brace=True))] * var_ref + [("whole", _FLAT + ve)],
            ),
            ("angle", "<<", [("ref", _ref_pattern("a", ">>", brace=False))]),
        ]
        if self.variable_start != "{{":
            rules.append(("brace", "{{", [("ref", _ref_pattern("b", r"\}\}", brace=True))]))
        # Same order as Jinja's lexer: longest delimiter first at one position.
        # A whole-thing alternative matches only where its delimiter does, so
        # putting it right before keeps the delimiters' order.
        rules.sort(key=lambda r: len(r[1]), reverse=True)
        line_rules = []
        if env.line_statement_prefix is not None:
            prefix = env.line_statement_prefix
            line_rules.append((len(prefix), "linestmt", r"^[ \t\v]*" + e(prefix)))
        if env.line_comment_prefix is not None:
            prefix = env.line_comment_prefix
            line_rules.append((len(prefix), "linecomment", r"(?:^|(?<=\S))[^\S\r\n]*" + e(prefix)))
        if line_rules or not all(d for _, d, _ in rules):
            # Line rules start at blanks too (a line comment at any Unicode
            # blank): the delimiters' alternatives in Jinja's order, as they are.
            ordered = [(len(d), kind, e(d), wholes) for kind, d, wholes in rules]
            ordered += [(length, kind, p, []) for length, kind, p in line_rules]
            ordered.sort(key=lambda r: r[0], reverse=True)
            alternatives = []
            for _, kind, delimiter, wholes in ordered:
                alternatives += [f"(?P<{kind}_{sfx}>{delimiter}{p})" for sfx, p in wholes]
                alternatives.append(f"(?P<{kind}>{delimiter})")
            lookahead = ""
            if all(d for _, d, _ in rules):  # (Jinja refuses empty delimiters)
                # Only where one of them can start is the regex tried at all.
                first = {d[0] for _, d, _ in rules} | {" ", "\t", "\v"}
                first |= {p[:1] for p in (env.line_statement_prefix, env.line_comment_prefix) if p}
                blank = r"\s" if env.line_comment_prefix is not None else ""
                lookahead = "(?=[" + "".join(e(c) for c in sorted(first)) + blank + "])"
            self._start = re.compile(lookahead + "(?:" + "|".join(alternatives) + ")", re.M)
        else:
            # Grouped by their first character, which the regex engine then
            # looks for quickly through plain text (it cannot when the
            # alternatives start with groups). Delimiters that start alike
            # keep their order.
            by_first: dict[str, list[str]] = {}
            for kind, d, wholes in rules:
                rest = e(d[1:])
                group = by_first.setdefault(d[0], [])
                group += [f"(?P<{kind}_{sfx}>{rest}{p})" for sfx, p in wholes]
                group.append(f"(?P<{kind}>{rest})")
            self._start = re.compile(
                "|".join(e(c) + "(?:" + "|".join(alts) + ")" for c, alts in by_first.items())
            )
        self._raw_begin = re.compile(bs + r"(\-|\+|)\s*raw\s*(?:\-" + be + r"\s*|" + be + ")")
        self._raw_end = re.compile(
            bs + r"(\-|\+|)\s*endraw\s*(?:\+" + be + r"|\-" + be + r"\s*|" + be + ")"
        )
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

    def spans(self, source: str) -> list[Span]:
        """What in ``source`` is not plain text, in order: each reference
        (with its :data:`RefSpan`) and each piece of Jinja syntax (with None)."""
        found: list[Span] = []
        add = found.append  # (a list: a generator costs more per item)
        pos = 0
        n = len(source)
        search = self._start.search
        while pos < n:
            m = search(source, pos)
            if m is None:
                break
            kind = m.lastgroup
            start = m.start()
            if kind == "angle_ref":
                pos = m.end()
                conn_start, conn_end = m.span("a_conn")
                path_start, path_end = m.span("a_body")
                ref = (start, pos, conn_start, conn_end, path_start, path_end, False, False, False)
                add((start, pos, ref))
                continue
            if kind in ("variable_whole", "block_whole", "comment_whole"):
                pos = m.end()
            elif kind == "variable_ref" or kind == "brace_ref":
                pos = m.end()
                add((start, pos, _brace_span(m, kind[0])))
                continue
            elif kind == "angle" or kind == "brace":
                pos = start + 1  # no reference starts here: plain text
                continue
            elif kind == "comment":
                end = source.find(self.comment_end, m.end())
                pos = n if end < 0 else end + len(self.comment_end)
            elif kind == "block":
                raw = self._raw_begin.match(source, start)
                if raw is not None:
                    close = self._raw_end.search(source, raw.end())
                    pos = n if close is None else close.end()
                else:
                    pos = self._skip_tag(source, m.end(), self.block_end)
            elif kind == "variable":
                pos = self._skip_tag(source, m.end(), self.variable_end)
            elif kind == "linestmt":
                pos = self._skip_line(source, m.end())
            else:  # linecomment
                nl = source.find("\n", m.end())
                pos = n if nl < 0 else nl
            add((start, pos, None))
        return found

    def scan(self, source: str) -> Iterator[Segment]:
        """Split ``source`` into data, reference and Jinja segments, in order."""
        data_start = line_pos = 0
        lineno = 1
        for start, end, span in self.spans(source):
            if start > data_start:
                yield Segment("data", data_start, start)
            data_start = end
            if span is None:
                yield Segment("jinja", start, end)
                continue
            lineno += source.count("\n", line_pos, start)
            line_pos = start
            _, _, conn_start, conn_end, path_start, path_end, strip_before, strip_after, brace = (
                span
            )
            form: Literal["angle", "brace"] = "brace" if brace else "angle"
            ref = Reference(
                source[conn_start:conn_end],
                source[path_start:path_end],
                source[start:end],
                start,
                end,
                lineno,
                form,
                strip_before,
                strip_after,
            )
            yield Segment("ref", start, end, ref)
        if data_start < len(source):
            yield Segment("data", data_start, len(source))

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
