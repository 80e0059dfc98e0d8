"""TemplateScanner, and the run tags preprocess writes, held to a model.

The scanner finds references with one regex whose alternatives take whole
references, comments and plain tags in one match (see reference.py). The model
here finds them the plain way: position by position, Jinja's delimiters in the
lexer's order (longest first), a reference's closer searched on its line, tags
walked character by character (string literals, brackets). Generated templates
mix references in both forms with tags, comments, raw blocks, line statements,
whitespace control and near misses, under several syntax settings.

End to end, a template with references renders as plain Jinja2 renders the
same template with each reference (where the model finds one) replaced by its
value. The backend is the in-memory provider of ``support.py`` (a test double).
"""

from __future__ import annotations

import re
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import STORE, MemoryProvider

from jinja_apsecrets import Resolver
from jinja_apsecrets.prefetch import root_scope_key
from jinja_apsecrets.reference import SEPARATOR, TemplateScanner

SYNTAX: list[dict[str, Any]] = [
    {},
    {"trim_blocks": True, "lstrip_blocks": True},
    {"keep_trailing_newline": True, "newline_sequence": "\r\n"},
    {"variable_start_string": "[[", "variable_end_string": "]]"},
    {"variable_start_string": "${", "variable_end_string": "}"},
    {
        "block_start_string": "<%",
        "block_end_string": "%>",
        "variable_start_string": "<<",
        "variable_end_string": ">>",
        "comment_start_string": "<#",
        "comment_end_string": "#>",
    },
    {"comment_start_string": "{{#", "comment_end_string": "#}}"},
    {"line_statement_prefix": "#", "line_comment_prefix": "##"},
    {"line_statement_prefix": "%", "line_comment_prefix": "#", "trim_blocks": True},
]

ModelSegment = tuple[str, int, int, "tuple[Any, ...] | None"]


def _string_end(source: str, i: int) -> int | None:
    """End of the string literal opening at ``i``, or None if it is not closed."""
    quote, k = source[i], i + 1
    while k < len(source):
        if source[k] == "\\":
            k += 2
        elif source[k] == quote:
            return k + 1
        else:
            k += 1
    return None


def _skip_tag(source: str, i: int, end: str) -> int:
    """Where a tag ends: its end delimiter outside brackets (Jinja's lexer)."""
    depth = 0
    while i < len(source):
        if source.startswith(end, i):
            if depth == 0:
                return i + len(end)
            if source[i] in ")]}":  # inside brackets the delimiter's bracket counts
                depth -= 1
            i += 1
            continue
        c = source[i]
        if c in "'\"":
            closed = _string_end(source, i)
            if closed is not None:
                i = closed
                continue
        elif c in "([{":
            depth += 1
        elif c in ")]}" and depth:
            depth -= 1
        i += 1
    return len(source)


def _model_ref(source: str, i: int, opener: str, closer: str, brace: bool) -> Any:
    """The reference opening at ``i`` as a tuple of its fields, or None."""
    j = i + len(opener)
    strip_before = False
    if brace and source[j : j + 1] in ("-", "+"):
        strip_before = source[j] == "-"
        j += 1
    while source[j : j + 1] in (" ", "\t"):
        j += 1
    conn_start = j
    while j < len(source) and (source[j].isascii() and (source[j].isalnum() or source[j] in "_.-")):
        j += 1
    conn = source[conn_start:j]
    if not conn or not source.startswith(f"|{SEPARATOR}|", j):
        return None
    body_start = j + len(SEPARATOR) + 2
    line_end = min(
        [k for k in (source.find("\n", body_start), source.find("\r", body_start)) if k >= 0]
        or [len(source)]
    )
    close = source.find(closer, body_start)
    if close < 0 or close + len(closer) > line_end:
        return None
    body, strip_after = source[body_start:close], False
    if brace and len(body) >= 2 and body[-1] in "-+" and body[-2] in " \t":
        strip_after, body = body[-1] == "-", body[:-1]
    end = close + len(closer)
    lineno = source.count("\n", 0, i) + 1
    form = "brace" if brace else "angle"
    return (conn, body.strip(" \t"), source[i:end], i, end, lineno, form, strip_before, strip_after)


def model_scan(env: jinja2.Environment, source: str) -> list[ModelSegment]:
    """Data, reference and Jinja segments, found position by position."""
    vs, ve = env.variable_start_string, env.variable_end_string
    starts = [
        (env.comment_start_string, "comment"),
        (env.block_start_string, "block"),
        (vs, "variable"),
        ("<<", "angle"),
    ]
    if vs != "{{":
        starts.append(("{{", "brace"))
    if env.line_statement_prefix:
        starts.append((env.line_statement_prefix, "linestmt"))
    if env.line_comment_prefix:
        starts.append((env.line_comment_prefix, "linecomment"))
    starts.sort(key=lambda s: len(s[0]), reverse=True)  # Jinja's order: longest first
    bs, be = re.escape(env.block_start_string), re.escape(env.block_end_string)
    raw_begin = re.compile(bs + r"(\-|\+|)\s*raw\s*(?:\-" + be + r"\s*|" + be + ")")
    raw_end = re.compile(bs + r"(\-|\+|)\s*endraw\s*(?:\+" + be + r"|\-" + be + r"\s*|" + be + ")")
    out: list[ModelSegment] = []
    i = data = 0
    n = len(source)

    def starts_at(i: int, d: str, kind: str) -> int | None:
        """End of the delimiter of ``kind`` at ``i``, if one starts there."""
        if kind == "linestmt":
            if i and source[i - 1] != "\n":
                return None
            m = re.compile(r"[ \t\v]*" + re.escape(d)).match(source, i)
        elif kind == "linecomment":
            if i and source[i - 1] != "\n" and source[i - 1].isspace():
                return None
            m = re.compile(r"[^\S\r\n]*" + re.escape(d)).match(source, i)
        else:
            return i + len(d) if source.startswith(d, i) else None
        return None if m is None else m.end()

    while i < n:
        found = next(
            ((kind, after) for d, kind in starts if (after := starts_at(i, d, kind)) is not None),
            None,
        )
        if found is None:
            i += 1
            continue
        kind, after = found
        if kind in ("angle", "brace", "variable"):
            opener, closer = {"angle": ("<<", ">>"), "brace": ("{{", "}}")}.get(kind, (vs, ve))
            ref = _model_ref(source, i, opener, closer, kind != "angle")
            if ref is not None:
                if i > data:
                    out.append(("data", data, i, None))
                out.append(("ref", i, ref[4], ref))
                i = data = ref[4]
                continue
            if kind != "variable":
                i += 1
                continue
        if kind == "comment":
            close = source.find(env.comment_end_string, after)
            stop = n if close < 0 else close + len(env.comment_end_string)
        elif kind == "block" and (raw := raw_begin.match(source, i)) is not None:
            close_raw = raw_end.search(source, raw.end())
            stop = n if close_raw is None else close_raw.end()
        elif kind == "block":
            stop = _skip_tag(source, after, env.block_end_string)
        elif kind == "variable":
            stop = _skip_tag(source, after, ve)
        elif kind == "linestmt":
            stop = _skip_tag(source, after, "\n")
        else:
            nl = source.find("\n", after)
            stop = n if nl < 0 else nl
        if i > data:
            out.append(("data", data, i, None))
        out.append(("jinja", i, stop, None))
        i = data = stop
    if data < n:
        out.append(("data", data, n, None))
    return out


def scanned(scanner: TemplateScanner, source: str) -> list[ModelSegment]:
    out: list[ModelSegment] = []
    for seg in scanner.scan(source):
        r = seg.ref
        fields = None
        if r is not None:
            fields = (r.connection, r.path, r.text, r.start, r.end, r.lineno, r.form)
            fields += (r.strip_before, r.strip_after)
        out.append((seg.kind, seg.start, seg.end, fields))
    return out


FRAGMENTS = [
    *("<<", ">>", "{{", "}}", "{%", "%}", "{#", "#}", "<%", "%>", "<#", "#>", "[[", "]]", "${"),
    *("}", "{", "(", ")", "[", "]", "'", '"', "\\", " ", "\t", "\n", "\r\n", "\r", "-", "+"),
    *("#", "##", "%", ":", "x", "a.b", "raw", "endraw", SEPARATOR, "|", "mem", "\u00a0", "é"),
    "<<mem|ap_sep_v1|s:k1>>",
    "<< mem|ap_sep_v1| s:k2 >>",
    "{{mem|ap_sep_v1|s:k3}}",
    "{{- mem|ap_sep_v1|s:k1 -}}",
    "{{ mem|ap_sep_v1|s:k2 + }}",
    "[[mem|ap_sep_v1|s:k3]]",
    "${mem|ap_sep_v1|s:k1}",
    "<%mem|ap_sep_v1|s:k1%>",
    "<<mem|ap_sep_v1|",
    "<<ap_sep_v1|ap_sep_v1|ap>>",
    "<<mem|ap_sep_v1|  >>",
    "<<mem|ap_sep_v1|s:k1>>>",
    "{{ x }}",
    "{{- x -}}",
    "{{ f('}}') }}",
    "{{ port | default(80) }}",
    "{{ x[1] }}",
    "{% if f(1, [2]) %}",
    "{% raw %}",
    "{%- raw -%}",
    "{% endraw %}",
    "{%+ endraw +%}",
    "{# c #}",
]


@settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=24), st.sampled_from(SYNTAX))
def test_scanner_matches_the_model(fragments: list[str], syntax: dict[str, Any]) -> None:
    env = jinja2.Environment(**syntax)
    source = "".join(fragments)
    assert scanned(TemplateScanner(env), source) == model_scan(env, source)


@pytest.mark.parametrize("syntax", SYNTAX)
def test_near_misses_and_long_lines(syntax: dict[str, Any]) -> None:
    env = jinja2.Environment(**syntax)
    source = (
        "<<mem|ap_sep_v1|a\n>> <<" * 50
        + "<<mem|ap_sep_v1|b>>" * 50
        + "{{ (a }}) }} {{ 'x}}' }} {{ [a] }} {# no end"
    )
    assert scanned(TemplateScanner(env), source) == model_scan(env, source)


# -- end to end ---------------------------------------------------------------------

VALUES = {"k1": "V1", "k2": "V2", "k3": "V3"}


@st.composite
def templates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A template that compiles, and its syntax settings."""
    syntax = draw(st.sampled_from(SYNTAX))
    env = jinja2.Environment(**syntax)
    bs, be = env.block_start_string, env.block_end_string
    vs, ve = env.variable_start_string, env.variable_end_string
    cs, ce = env.comment_start_string, env.comment_end_string
    delimiters = {bs, be, vs, ve, cs, ce, "{{", "<<"}
    delimiters |= {env.line_statement_prefix or bs, env.line_comment_prefix or bs}
    text = st.text(alphabet="ab <>|{}%#:/\n\t-_'\"", max_size=8).filter(
        lambda t: not any(d in t for d in delimiters) and not t.endswith(("<", "{", "-", "#", "%"))
    )
    key = st.sampled_from(sorted(VALUES))
    mod = st.sampled_from(["", "-", "+"])
    angle = st.builds(
        lambda b, k, a: f"<<{b}mem|{SEPARATOR}|{b}s:{k}{a}>>",
        st.sampled_from(["", " "]),
        key,
        st.sampled_from(["", "\t"]),
    )
    brace = st.builds(
        lambda m1, k, m2: f"{{{{{m1} mem|{SEPARATOR}|s:{k} {m2}}}}}",
        mod.filter(lambda m: m != "+"),
        key,
        mod,
    )
    var = st.builds(
        lambda m1, m2: f"{vs}{m1} x {m2}{ve}",
        mod.filter(lambda m: m != "+"),
        mod.filter(lambda m: m != "+"),
    )
    block = st.builds(
        lambda m1, m2, body: f"{bs}{m1} if x {m2}{be}{body}{bs}{m1} endif {m2}{be}", mod, mod, text
    )
    loop = st.builds(
        lambda body, r: f"{bs} for i in items {be}{body}{r}{vs} i {ve}{bs} endfor {be}", text, angle
    )
    comment = st.builds(lambda r: f"{cs} {r} {ce}", angle)
    raw = st.builds(lambda r: f"{bs} raw {be}{r}{bs} endraw {be}", angle)
    literal = st.builds(lambda k: f"{vs} '<<mem|{SEPARATOR}|s:{k}>>' {ve}", key)
    parts = [text, angle, angle, brace, var, block, loop, comment, raw, literal]
    if env.line_statement_prefix:
        parts.append(
            st.builds(
                lambda t: (
                    f"\n{env.line_statement_prefix} if x\n{t}\n{env.line_statement_prefix} endif\n"
                ),
                angle,
            )
        )
    source = "".join(draw(st.lists(st.one_of(parts), max_size=14)))
    return source, syntax


def replaced(env: jinja2.Environment, source: str) -> str:
    """``source`` with each reference (as the model finds it) written as its value."""
    out = []
    for kind, start, end, ref in model_scan(env, source):
        if kind != "ref":
            out.append(source[start:end])
            continue
        assert ref is not None
        value = VALUES[ref[1].split(":")[1]]
        if ref[7] or ref[8]:  # whitespace control: a variable tag with the same
            vs, ve = env.variable_start_string, env.variable_end_string
            out.append(f"{vs}{'-' if ref[7] else ''} '{value}' {'-' if ref[8] else ''}{ve}")
        else:
            out.append(value)
    return "".join(out)


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(templates())
def test_renders_as_plain_jinja_with_values_written_in(case: tuple[str, dict[str, Any]]) -> None:
    source, syntax = case
    saved = dict(STORE)
    STORE.clear()
    STORE["s"] = dict(VALUES)
    resolver = Resolver({"mem": MemoryProvider("mem")})
    try:
        ours = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"], **syntax)
        ours.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        plain = jinja2.Environment(**syntax)
        variables = {"x": True, "items": [1, 2]}
        expected = plain.from_string(replaced(plain, source)).render(variables)
        assert ours.from_string(source).render(variables) == expected
    finally:
        resolver.close()
        STORE.clear()
        STORE.update(saved)


@pytest.mark.parametrize("autoescape", [False, True])
def test_root_scope_key_is_the_key_the_runs_are_kept_under(autoescape: bool) -> None:
    """The digest is computed in two places (when compiling, and when reading a
    compiled template back): both must give the same key."""
    saved = dict(STORE)
    STORE.clear()
    STORE["s"] = dict(VALUES)
    resolver = Resolver({"mem": MemoryProvider("mem")})
    try:
        env = jinja2.Environment(
            extensions=["jinja_apsecrets.SecretsExtension"], autoescape=autoescape
        )
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        template = env.from_string('a "<<mem|ap_sep_v1|s:k1>>"\n{{ x }} <<mem|ap_sep_v1|s:k2>>\\')
        assert template.render(x=1) == 'a "V1"\n1 V2\\'
        assert list(env.secret_render_cache.runs) == [root_scope_key(template)]  # type: ignore[attr-defined]
    finally:
        resolver.close()
        STORE.clear()
        STORE.update(saved)
