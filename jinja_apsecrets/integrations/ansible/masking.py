"""Inline references in an Ansible template, and ``--diff`` views without values.

Ansible renders templates with its own Jinja environment, which knows nothing
of references. The ``apsecrets.core.template`` action never lets it see a
value: each reference in the template *source* is replaced by a placeholder
(plain text carrying a random nonce per render, so no variable can forge one),
Ansible renders that, and only the rendered text gets the values, in one regex
pass (a value is never parsed again, neither as a template nor as a
reference). The same rendered text with each reference's own text in place of
its placeholder is the ``--diff`` "after" view: it holds no value by
construction.

The "before" view comes from the file on disk, which holds the values of its
last render; those may have rotated since, so they cannot all be recognised.
Each line of it is shown only if it is a line of the after view, or has the
shape of one (the same text around the references, whatever stands where the
references are, shown as a marker). Every other line is hidden. So the before
view holds nothing that is not in the after view, apart from markers.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jinja2 import Environment

from ...errors import SecretValidationError
from ...reference import SEPARATOR, Reference, TemplateScanner

__all__ = ["MaskedSource", "before_view", "mask_source", "mask_values"]

HIDDEN = "[apsecrets: {n} line(s) hidden: not mapped back to a reference]\n"
PREVIOUS = "[previous value of {ref}]"


@dataclass(frozen=True)
class MaskedSource:
    """A template source with its references replaced by placeholders."""

    text: str
    refs: tuple[Reference, ...]
    pattern: re.Pattern[str]

    def present(self, rendered: str) -> list[int]:
        """Indexes (into :attr:`refs`) of the placeholders ``rendered`` holds, in order."""
        return list(dict.fromkeys(int(m[1]) for m in self.pattern.finditer(rendered)))

    def fill(self, rendered: str, values: Mapping[int, str]) -> str:
        """``rendered`` with the values in place of the placeholders (one pass)."""
        return self.pattern.sub(lambda m: values[int(m[1])], rendered)

    def view(self, rendered: str) -> str:
        """``rendered`` with each reference's own text in place of its placeholder."""
        return self.pattern.sub(lambda m: self.refs[int(m[1])].text, rendered)


def mask_source(source: str, environment: Environment, *, nonce: str | None = None) -> MaskedSource:
    """Replace the references Jinja would see as template data by placeholders.

    ``environment`` supplies the delimiters (an Ansible task may change them).
    References inside raw blocks, comments and expressions are left alone, as
    the extension leaves them. A path holding Jinja syntax is a VALIDATION
    error (paths are static text).
    """
    nonce = nonce or secrets.token_hex(8)
    scanner = TemplateScanner(environment)
    refs: list[Reference] = []
    out: list[str] = []
    if SEPARATOR not in source:  # nothing to mask
        return MaskedSource(source, (), _pattern(nonce))
    for segment in scanner.scan(source):
        if segment.kind != "ref" or segment.ref is None:
            out.append(source[segment.start : segment.end])
            continue
        ref = segment.ref
        problem = scanner.dynamic_path_error(ref)
        if problem is not None:
            raise SecretValidationError(
                problem, provider=ref.connection, path=ref.path, lineno=ref.lineno
            )
        placeholder = f"__apsecret_{nonce}_{len(refs)}__"
        refs.append(ref)
        if ref.form == "brace" and ref.text.startswith(environment.variable_start_string):
            # Keep Jinja's whitespace control ({{- ... -}}) of the brace form:
            # print the placeholder from an expression with the same markers.
            out.append(
                environment.variable_start_string
                + ("-" if ref.strip_before else "")
                + f" '{placeholder}' "
                + ("-" if ref.strip_after else "")
                + environment.variable_end_string
            )
        else:
            out.append(placeholder)
    return MaskedSource("".join(out), tuple(refs), _pattern(nonce))


def _pattern(nonce: str) -> re.Pattern[str]:
    return re.compile(rf"__apsecret_{nonce}_(\d+)__")


def mask_values(text: str, known: Mapping[str, str]) -> str:
    """``text`` with each known value replaced by its reference text, longest
    value first, in one pass (a replacement is never searched again)."""
    values = sorted((v for v in known if v), key=len, reverse=True)
    if not values or not text:
        return text
    pattern = re.compile("|".join(re.escape(v) for v in values))
    return pattern.sub(lambda m: known[m.group()], text)


def before_view(before: str, masked: MaskedSource, rendered: str, known: Mapping[str, str]) -> str:
    """The file on disk as the diff's "before" side, without any value.

    ``rendered`` is the render with placeholders, ``known`` maps every value
    known in this process (this render's and other lookups') to its reference
    text. A line is shown if, with the known values masked, it equals a line
    of the after view or matches the shape of one; other lines are hidden,
    runs of them as one marker line.
    """
    shown_before = mask_values(before, known)
    with_placeholders = [_body(line) for line in mask_values(rendered, known).splitlines()]
    after_lines = {masked.view(line) for line in with_placeholders}
    shapes = [_Shape(line, masked) for line in dict.fromkeys(with_placeholders)]
    shapes = [s for s in shapes if s.indexes]
    out: list[str] = []
    hidden = 0
    for line in shown_before.splitlines(keepends=True):
        body = _body(line)
        view = body if body in after_lines else _first(s.show(body) for s in shapes)
        if view is None:
            hidden += 1
            continue
        if hidden:
            out.append(HIDDEN.format(n=hidden))
            hidden = 0
        out.append(view + line[len(body) :])
    if hidden:
        out.append(HIDDEN.format(n=hidden))
    return "".join(out)


def _body(line: str) -> str:
    """A line without its line ending (compared apart: the last line may have none)."""
    return line.rstrip("\r\n")


def _first(items: Iterable[str | None]) -> str | None:
    return next((item for item in items if item is not None), None)


class _Shape:
    """A rendered line with placeholders, as a pattern for lines of the old file."""

    def __init__(self, line: str, masked: MaskedSource) -> None:
        self.masked = masked
        self.parts: list[str] = []  # literal text, around the placeholders
        self.indexes: list[int] = []
        pos = 0
        regex = []
        for m in masked.pattern.finditer(line):
            self.parts.append(line[pos : m.start()])
            self.indexes.append(int(m[1]))
            regex.append(re.escape(line[pos : m.start()]) + "(.*?)")
            pos = m.end()
        self.parts.append(line[pos:])
        regex.append(re.escape(line[pos:]))
        self.regex = re.compile("".join(regex), re.S)

    def show(self, line: str) -> str | None:
        """``line`` in this shape, with references or markers where the values
        stand; None if it does not have this shape."""
        m = self.regex.fullmatch(line)
        if m is None:
            return None
        out = [self.parts[0]]
        for n, index in enumerate(self.indexes):
            ref = self.masked.refs[index].text
            # The current value was masked to the reference's text already;
            # anything else there is an older value: a marker, never the text.
            out.append(ref if m[n + 1] == ref else PREVIOUS.format(ref=ref))
            out.append(self.parts[n + 1])
        return "".join(out)
