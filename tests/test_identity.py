"""Templates without references render byte-identically with and without the
extension, under every Environment option (README, security rule 4).

Generated templates mix text, tags, comments, raw blocks, whitespace control
and line statements, and also text that contains the separator without being
a reference (bare, in comments, raw blocks and string literals), so the
scanner runs too. The names ``secret`` and ``resolve_secrets`` are the
extension's documented global and filter, so generated names avoid them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jinja2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from jinja_apsecrets import Resolver

DELIMS = {
    "default": {},
    "custom": {
        "block_start_string": "<%",
        "block_end_string": "%>",
        "variable_start_string": "${",
        "variable_end_string": "}",
        "comment_start_string": "<#",
        "comment_end_string": "#>",
    },
}


def pieces(d: dict[str, str], line_statements: bool) -> st.SearchStrategy[str]:
    bs, be = d.get("block_start_string", "{%"), d.get("block_end_string", "%}")
    vs, ve = d.get("variable_start_string", "{{"), d.get("variable_end_string", "}}")
    cs, ce = d.get("comment_start_string", "{#"), d.get("comment_end_string", "#}")
    mod = st.sampled_from(["", "-", "+"])
    # Text never holds a delimiter (nor, with line statements, their prefix),
    # so comments and raw blocks stay closed where the generator closes them.
    delimiters = (bs, be, vs, ve, cs, ce, "{{", "<<", *(("#",) if line_statements else ()))
    text = st.text(alphabet="ab <>|{}%#:/\n\t\r-_'\"", max_size=12).filter(
        lambda t: not any(x in t for x in delimiters)
    )
    names = st.sampled_from(["x", "y", "items", "html"])
    var = st.builds(
        lambda m, n, e: f"{vs}{m} {n}{e} {ve}",
        mod.filter(lambda m: m != "+"),
        names,
        st.sampled_from(["", "|upper", "|e", " ~ 'a|ap_sep_v1|b'"]),
    )
    tag_if = st.builds(
        lambda m1, m2, body: f"{bs}{m1} if x {m2}{be}{body}{bs} endif {be}", mod, mod, text
    )
    tag_for = st.builds(
        lambda m, body: f"{bs}{m} for i in items {be}{body}{vs} i {ve}{bs} endfor {be}", mod, text
    )
    comment = st.builds(lambda t: f"{cs} {t} <<aws|ap_sep_v1|c:d>> {ce}", text)
    raw = st.builds(
        lambda t: f"{bs} raw {be}<<aws|ap_sep_v1|r:s>>{t}{{{{aws|ap_sep_v1|z}}}}{bs} endraw {be}",
        text,
    )
    strings = st.sampled_from(
        [
            f"{vs} '<<aws|ap_sep_v1|s:t>>' {ve}",
            f'{bs} set q = "<<aws|ap_sep_v1|q>>" {be}{vs} q {ve}',
        ]
    )
    near = st.sampled_from(
        [
            "aws|ap_sep_v1|prod:x",
            "<aws|ap_sep_v1|x>",
            "<< aws|ap_sep_v2|x >>",
            "<<|ap_sep_v1|x>>",
            "{aws|ap_sep_v1|x}",
        ]
    )
    line = st.sampled_from(["\n# if x\nL\n# endif\n", "\n  ## <<aws|ap_sep_v1|lc:x>>\n"])
    options = [text, var, tag_if, tag_for, comment, raw, strings, near]
    # Without a line comment prefix, "## <<...>>" is plain text: a reference.
    return st.one_of(*options, line) if line_statements else st.one_of(*options)


OPTIONS = st.fixed_dictionaries(
    {
        "trim_blocks": st.booleans(),
        "lstrip_blocks": st.booleans(),
        "keep_trailing_newline": st.booleans(),
        "autoescape": st.booleans(),
        "newline_sequence": st.sampled_from(["\n", "\r\n"]),
        "line_statements": st.booleans(),
        "delims": st.sampled_from(sorted(DELIMS)),
        "kind": st.sampled_from(["plain", "sandbox", "native", "async"]),
    }
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    opts = draw(OPTIONS)
    d = DELIMS[opts["delims"]]
    # Pieces are joined with a blank so that two of them never form a
    # reference together (a "{" followed by "{aws|ap_sep_v1|..." would).
    source = " ".join(draw(st.lists(pieces(d, opts["line_statements"]), max_size=8)))
    return source, opts


def render(
    source: str, opts: dict[str, Any], with_extension: bool, resolver: Resolver | None = None
) -> tuple[str, Any]:
    kind = opts["kind"]
    cls = {"sandbox": SandboxedEnvironment, "native": NativeEnvironment}.get(
        kind, jinja2.Environment
    )
    kwargs: dict[str, Any] = {
        k: opts[k]
        for k in (
            "trim_blocks",
            "lstrip_blocks",
            "keep_trailing_newline",
            "autoescape",
            "newline_sequence",
        )
    }
    kwargs.update(DELIMS[opts["delims"]])
    if opts["line_statements"]:
        kwargs.update(line_statement_prefix="#", line_comment_prefix="##")
    if kind == "async":
        kwargs["enable_async"] = True
    if with_extension:
        kwargs["extensions"] = ["jinja_apsecrets.SecretsExtension"]
    env = cls(**kwargs)
    if with_extension:
        env.install_secret_resolver(resolver or Resolver())  # type: ignore[attr-defined]
    context = {"x": True, "y": "<b>", "items": [1, 2], "html": "a&b"}
    try:
        template = env.from_string(source)
        if kind == "async":
            return "ok", asyncio.run(template.render_async(context))
        return "ok", template.render(context)
    except jinja2.TemplateSyntaxError as exc:
        # Invalid templates must fail alike, at the same line. The message may
        # differ when the generator splits a comment or tag so that its text
        # becomes a reference: such a template is not one without references.
        return "syntax", exc.lineno
    except Exception as exc:
        return "error", type(exc).__name__


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_templates_without_references_render_identically(case: tuple[str, dict[str, Any]]) -> None:
    source, opts = case
    assert render(source, opts, True) == render(source, opts, False)
