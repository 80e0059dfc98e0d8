"""Autoescaped runs printed raw (issue 12, shape E).

Under autoescape, Jinja prints every expression through ``markupsafe.escape``,
which copies even a ``Markup``. A run of references and text is escaped once,
when its scope renders, so the compiled template prints it *raw*: a filter
block whose filter is ``str`` (Jinja yields a filter block's result as it is).
Outside blocks in a template with ``extends``, Jinja prints only while no
parent template is set, a check a filter block lacks: such runs keep the
escaped ``Output``. Each case here is checked against plain Jinja2 rendering
the same templates with the escaped values written in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from markupsafe import escape

from jinja_apsecrets import SecretNotFoundError

MakeEnv = Callable[..., jinja2.Environment]

HTML = "<<mem|ap_sep_v1|html:value>>"
USER = "<<mem|ap_sep_v1|prod/db:username>>"
VALUES = {HTML: str(escape("<b>&'\"")), USER: "admin"}

CASES: dict[str, dict[str, str]] = {
    "top level": {"t": f"<p>{HTML}</p>\nuser={USER}\n"},
    "a block": {"t": f"<p>{{% block b %}}a={HTML} b={USER}{{% endblock %}}</p>"},
    "extends: blocks and the layout's top level": {
        "layout": f"<head>{HTML}</head>{{% block body %}}<i>{USER}</i>{{% endblock %}}",
        "t": f'{{% extends "layout" %}}{{% block body %}}{{{{ super() }}}}|{HTML}{{% endblock %}}',
    },
    "extends: text outside blocks prints nothing": {
        "layout": "L{% block body %}{% endblock %}",
        "t": f'{HTML}{{% extends "layout" %}}{HTML}{{% block body %}}{USER}{{% endblock %}}{HTML}',
    },
    "conditional extends": {
        "layout": "L{% block body %}{% endblock %}",
        "t": (
            f'{HTML}{{% if parent %}}{{% extends "layout" %}}{{% endif %}}'
            f"{{% block body %}}{USER}{{% endblock %}}{HTML}"
        ),
    },
    "macro, call, set and filter blocks": {
        "t": (
            f"{{% macro m() %}}[{HTML}]{{{{ caller() if caller }}}}{{% endmacro %}}"
            f"{{{{ m() }}}}{{% call m() %}}<{USER}>{{% endcall %}}"
            f"{{% set s %}}{HTML}{{% endset %}}{{{{ s }}}}{{{{ s | length }}}}"
            f"{{% filter upper %}}{HTML}{{% endfilter %}}"
        ),
    },
    "loops, conditions, includes and imports": {
        "part": f"({HTML})",
        "macros": f"{{% macro m() %}}{USER}{HTML}{{% endmacro %}}",
        "t": (
            f"{{% for i in range(2) %}}{{% if i %}}{HTML}{{% else %}}{USER}{{% endif %}}"
            f'{{% endfor %}}{{% include "part" %}}{{% import "macros" as x %}}{{{{ x.m() }}}}'
        ),
    },
    "autoescape tags around runs": {
        "t": (
            f"{{% autoescape false %}}{HTML}{{% endautoescape %}}{HTML}"
            f"{{% autoescape true %}}{HTML}{{% endautoescape %}}"
        ),
    },
}


def _written(source: str) -> str:
    """``source`` with each reference replaced by its escaped value (what the
    run prints under autoescape: values escaped, template text as written)."""
    for ref, value in VALUES.items():
        source = source.replace(ref, value)
    return source


def _written_unescaped(source: str) -> str:
    return source.replace(HTML, "<b>&'\"").replace(USER, "admin")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_runs_print_as_plain_jinja_prints_the_values(
    make_env: MakeEnv, case: str, is_async: bool
) -> None:
    templates = CASES[case]
    env = make_env(loader=jinja2.DictLoader(templates), autoescape=True, enable_async=is_async)
    plain = jinja2.Environment(
        loader=jinja2.DictLoader({name: _written(src) for name, src in templates.items()}),
        autoescape=True,
        enable_async=is_async,
    )

    def render(template: jinja2.Template, parent: bool) -> str:
        if is_async:
            return asyncio.run(template.render_async(parent=parent))
        return template.render(parent=parent)

    for parent in (False, True):
        want = render(plain.get_template("t"), parent)
        if case == "autoescape tags around runs":
            # Inside {% autoescape false %} the value prints as it is.
            want = want.replace(VALUES[HTML], "<b>&'\"", 1)
        for _ in range(2):  # cold, then from the render cache
            assert render(env.get_template("t"), parent) == want


def test_a_run_outside_blocks_of_an_extending_template_is_not_raw(make_env: MakeEnv) -> None:
    env = make_env(autoescape=True)
    code = env.compile(f'{HTML}{{% extends "l" %}}{{% block b %}}{HTML}{{% endblock %}}', raw=True)
    assert code.count("escape(aps_") == 1  # the top level's run; the block's is raw
    code = env.compile(f"{HTML}{{% block b %}}{HTML}{{% endblock %}}", raw=True)
    assert "escape(aps_" not in code


def test_without_autoescape_runs_print_through_str(make_env: MakeEnv) -> None:
    code = make_env().compile(f"a={HTML}", raw=True)
    assert "__apsecrets_raw__" not in code
    assert "str(aps_" in code


def test_select_autoescape_with_a_layout_of_another_kind(make_env: MakeEnv) -> None:
    """The layout's runs are escaped by the layout's name (as Jinja escapes
    its text), whatever the name of the page that extends it."""
    templates = {
        "layout.html": f"<h>{HTML}</h>{{% block b %}}{HTML}{{% endblock %}}",
        "page.txt": f'{{% extends "layout.html" %}}{{% block b %}}{HTML}|{{{{ "<x>" }}}}{{% endblock %}}',
    }
    auto = jinja2.select_autoescape(["html"])
    env = make_env(loader=jinja2.DictLoader(templates), autoescape=auto)
    plain = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                "layout.html": _written(templates["layout.html"]),
                "page.txt": _written_unescaped(templates["page.txt"]),
            }
        ),
        autoescape=auto,
    )
    assert env.get_template("page.txt").render() == plain.get_template("page.txt").render()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("keep", f"<p>{VALUES[HTML]} <<mem|ap_sep_v1|nope:x>></p>"), ("undefined", "<p>&lt;b&gt;")],
)
def test_a_failed_reference_in_a_raw_run(make_env: MakeEnv, policy: str, expected: str) -> None:
    """The missing-secret policy decides when the run prints: found values
    escaped, the kept reference text as written (it is template text)."""
    env = make_env(autoescape=True)
    env.install_secret_resolver(env.secret_resolver, on_missing=policy)  # type: ignore[attr-defined]
    out = env.from_string(f"<p>{HTML} <<mem|ap_sep_v1|nope:x>></p>").render()
    if policy == "keep":
        assert out == expected
    else:
        assert out == f"<p>{VALUES[HTML]} </p>"


def test_a_failed_reference_in_a_raw_run_raises_with_its_line(make_env: MakeEnv) -> None:
    env = make_env(autoescape=True)
    template = env.from_string(
        f"{{% block b %}}\n\n{HTML} <<mem|ap_sep_v1|nope:x>>{{% endblock %}}"
    )
    with pytest.raises(SecretNotFoundError) as info:
        template.render()
    assert info.value.lineno == 3


def test_the_raw_filter_cannot_be_written_by_hand(make_env: MakeEnv) -> None:
    env = make_env(autoescape=True)
    with pytest.raises(jinja2.TemplateSyntaxError, match="internal to jinja_apsecrets"):
        env.from_string("{{ '<x>' | __apsecrets_raw__ }}")


def test_raw_runs_survive_the_bytecode_cache(make_env: MakeEnv, tmp_path: Any) -> None:
    source = f"<p>{HTML}</p>{{% block b %}}{USER}{{% endblock %}}"
    for _ in range(2):
        env = make_env(
            autoescape=True,
            loader=jinja2.DictLoader({"t": source}),
            bytecode_cache=jinja2.FileSystemBytecodeCache(str(tmp_path)),
        )
        assert env.get_template("t").render() == f"<p>{VALUES[HTML]}</p>admin"
    cached = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"<b>&'" not in cached
    assert b"&lt;b&gt;" not in cached
