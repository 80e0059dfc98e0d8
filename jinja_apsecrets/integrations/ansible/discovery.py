"""References a play will need, found statically in its data.

The prefetch callback walks a play (its vars, task arguments and the templates
its tasks render) and hands every string to these functions. They find:

- inline references (``<<conn|ap_sep_v1|path>>`` and the ``{{...}}`` form) in
  data, as the ``apsecrets.core.resolve`` filter will meet them;
- the terms of ``lookup``/``query`` calls of ``apsecrets.core.secret`` (or the
  legacy ``apsecret``) written with literal string arguments;
- inline references in template sources, with the scanner the template action
  uses, so the two agree on what is a reference.

Anything computed at run time (a term built from a variable) is not found
here; it is fetched when met, as without the callback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import Environment

from ...reference import SEPARATOR, TemplateScanner, find_references, parse_bare

__all__ = [
    "LOOKUP_NAMES",
    "TEMPLATE_DELIMITERS",
    "lookup_terms",
    "refs_in_data",
    "refs_in_template",
    "refs_in_text",
]

Ref = tuple[str, str]

#: Names the collection's lookup answers to in a playbook.
LOOKUP_NAMES = ("apsecrets.core.secret", "apsecret")

#: The template task's arguments that change Jinja's delimiters (the action
#: renders with them, the prefetch callback reads templates with them).
TEMPLATE_DELIMITERS = (
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
)

_STRING = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_CALL = re.compile(
    r"\b(?:lookup|query|q)\s*\(\s*(['\"])(?:"
    + "|".join(re.escape(n) for n in LOOKUP_NAMES)
    + r")\1\s*,(?P<args>(?:"
    + _STRING
    + r"|[^()'\"]|\([^()]*\))*)\)"
)
_LITERAL = re.compile(r"(?<![=\w])\s*(?P<lit>" + _STRING + r")")


def refs_in_text(text: str) -> Iterator[Ref]:
    """References inline in ``text`` and in literal terms of lookup calls."""
    for ref in find_references(text):
        yield ref.key
    yield from lookup_terms(text)


def lookup_terms(text: str) -> Iterator[Ref]:
    """The references among the literal terms of lookup calls in ``text``."""
    if "(" not in text:
        return
    for call in _CALL.finditer(text):
        for lit in _LITERAL.finditer(call["args"]):
            # Keyword arguments (config='...') are skipped by the lookbehind.
            term = parse_bare(_unquote(lit["lit"]))
            if term is not None:
                yield term.key


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", r"\1", body) if "\\" in body else body


def refs_in_data(obj: Any) -> Iterator[Ref]:
    """:func:`refs_in_text` for every string in nested dicts, lists and tuples
    (keys included: a vars file may build a dict key from a lookup)."""
    if isinstance(obj, str):
        yield from refs_in_text(obj)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from refs_in_data(key)
            yield from refs_in_data(value)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            yield from refs_in_data(item)


def refs_in_template(source: str, environment: Environment | None = None) -> Iterator[Ref]:
    """Inline references a template action will resolve in ``source``, then the
    literal lookup terms in its expressions."""
    scanner = TemplateScanner(environment or Environment())  # noqa: S701 (delimiters only)
    if SEPARATOR in source:  # without the separator there is nothing to scan
        for segment in scanner.scan(source):
            if segment.ref is not None:
                yield segment.ref.key
    yield from lookup_terms(source)
