"""Resolved values: what templates print with them, and what tracebacks show.

Issue 10 items 7 and 9, issue 15 items 2 (filters) and 13. The backend is the
in-memory test provider of ``support.py`` (a double of a secret manager).
"""

from __future__ import annotations

import asyncio
import base64
import json
import pprint
from collections.abc import Callable
from types import TracebackType
from typing import Any

import jinja2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import SandboxedEnvironment
from support import STORE, MemoryProvider

from jinja_apsecrets import Resolver, SecretNotFoundError, SecretText
from jinja_apsecrets.values import in_template

MakeEnv = Callable[..., jinja2.Environment]

VALUE = "pw-Secret-1"
HTML = "<b>&'\""

#: Expressions over ``x``; each renders the same with x a secret or a plain str.
CONSTRUCTS = [
    "{{ x }}",
    "{{ [x] }}",
    "{{ [x, 'b', 1] }}",
    "{{ {'a': x} }}",
    "{{ {'a': [x, (x,)]} }}",
    "{{ (x,) }}",
    "{{ (x, 1) }}",
    "{{ x | pprint }}",
    "{{ [x] | pprint }}",
    "{{ {'k': x} | pprint }}",
    "{{ x | tojson }}",
    "{{ {'k': [x]} | tojson }}",
    "{{ [x, 'b'] | join(',') }}",
    "{{ '%s-%r' | format(x, x) }}",
    "{{ '%r' % x }}",
    "{{ '{!r}'.format(x) }}",
    "{{ x ~ '!' }}",
    "{{ 'a' ~ x ~ 'b' }}",
    "{{ x + 'y' }}",
    "{{ x.upper() }}",
    "{{ x.split('-') }}",
    "{{ x[1:4] }}",
    "{{ x[::-1] }}",
    "{{ x | string }}",
    "{{ x | string | pprint }}",
    "{{ x | list }}",
    "{{ x | reverse }}",
    "{{ x | length }}",
    "{{ x | e }}",
    "{{ x | replace('S', 's') }}",
    "{{ x | center(20) }}",
    "{{ x | indent(2, true) }}",
    "{{ x | truncate(5, true, '') }}",
    "{{ x | urlencode }}",
    "{{ [x] | map('upper') | list }}",
    "{{ [x, x] | unique | list }}",
    "{{ dict(a=x) }}",
    "{{ {'z': 1, 'a': x} | dictsort }}",
    "{{ x is string }}",
    "{% set y = [x] %}{{ y }}{{ y | first }}",
    "{% for c in x %}{{ c }}|{% endfor %}",
    "{% macro m(v) %}{{ [v] }}{% endmacro %}{{ m(x) }}",
    "{% set ns = namespace(v=x) %}{{ ns.v }}{{ [ns.v] }}",
]

SOURCES = {
    "secret()": "{% set x = secret('mem', PATH) %}",
    "resolve_secrets": "{% set x = ref | resolve_secrets %}",
}


def _plain_env(env: jinja2.Environment) -> jinja2.Environment:
    return type(env)(autoescape=env.autoescape, enable_async=env.is_async)


def _render(template: jinja2.Template, **variables: Any) -> str:
    if template.environment.is_async:
        return asyncio.run(template.render_async(**variables))
    return template.render(**variables)


@pytest.mark.parametrize(
    "options",
    [{}, {"autoescape": True}, {"enable_async": True}, {"cls": SandboxedEnvironment}],
    ids=["plain", "autoescape", "async", "sandbox"],
)
@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize(("path", "value"), [("prod/db:password", VALUE), ("html:value", HTML)])
@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_a_value_renders_as_plain_jinja_renders_the_string(
    make_env: MakeEnv,
    options: dict[str, Any],
    source: str,
    path: str,
    value: str,
    construct: str,
) -> None:
    options = dict(options)
    env = make_env(options.pop("cls", jinja2.Environment), **options)
    head = SOURCES[source].replace("PATH", repr(path))
    ours = _render(env.from_string(head + construct), ref=f"<<mem|ap_sep_v1|{path}>>")
    theirs = _render(_plain_env(env).from_string("{% set x = v %}" + construct), v=value)
    assert ours == theirs


def test_resolve_values_variables_render_as_plain_strings(make_env: MakeEnv) -> None:
    env = make_env()
    env.install_secret_resolver(env.secret_resolver, resolve_values=True)  # type: ignore[attr-defined]
    src = "{{ [x] }} {{ {'a': x} }} {{ x | pprint }}"
    ours = env.from_string(src).render(x="<<mem|ap_sep_v1|prod/db:password>>")
    assert ours == jinja2.Environment().from_string(src).render(x=VALUE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(min_size=1, max_size=100), construct=st.sampled_from(CONSTRUCTS))
def test_any_value_renders_as_plain_jinja(value: str, construct: str) -> None:
    STORE["h"] = {"v": value}
    try:
        with Resolver({"mem": MemoryProvider("mem")}) as resolver:
            env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
            env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
            ours = env.from_string("{% set x = secret('mem', 'h:v') %}" + construct).render()
    finally:
        STORE.pop("h", None)
    theirs = jinja2.Environment().from_string("{% set x = v %}" + construct).render(v=value)
    assert ours == theirs


class TestHiding:
    def test_repr_hides_outside_templates(self) -> None:
        assert VALUE not in repr(SecretText(VALUE))
        assert VALUE not in repr([SecretText(VALUE)])
        assert not in_template()

    def test_repr_shows_inside_a_template(self, env: jinja2.Environment) -> None:
        env.globals["show"] = lambda v: repr(v)
        assert env.from_string("{{ show(secret('mem', 'plain')) }}").render() == "'plain-Secret-3'"

    def test_pprint_wraps_a_long_value_as_plain_jinja(
        self, env: jinja2.Environment, store: Any
    ) -> None:
        store["long"] = "word " * 40
        src = "{% set x = secret('mem', 'long') %}{{ x | pprint }}{{ [x] | pprint }}"
        plain = "{% set x = v %}{{ x | pprint }}{{ [x] | pprint }}"
        assert env.from_string(src).render() == jinja2.Environment().from_string(plain).render(
            v="word " * 40
        )
        assert "word" not in pprint.pformat(SecretText("word " * 40))

    def test_variables_hold_the_hiding_type(self, env: jinja2.Environment) -> None:
        module = env.from_string("{% set x = secret('mem', 'plain') %}").module
        assert isinstance(module.x, SecretText)  # type: ignore[attr-defined]
        assert "plain-Secret-3" not in repr(module.x)  # type: ignore[attr-defined]


def _frames(tb: TracebackType | None) -> list[Any]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _shown(exc: BaseException) -> list[tuple[str, str, str]]:
    """(module, local, repr) of every local of every frame on the traceback."""
    out = []
    for frame in _frames(exc.__traceback__):
        module = str(frame.f_globals.get("__name__"))
        if module == __name__:
            continue
        for name, value in frame.f_locals.items():
            out.append((module, name, repr(value)))
    return out


class TestTracebacks:
    """No frame on the traceback of a failed render shows a value (issue 10 item 9)."""

    VALUES = ["admin", VALUE, "tok-Secret-2", "plain-Secret-3", "5432"]

    def page(self, n: int = 20) -> str:
        refs = [
            "<<mem|ap_sep_v1|prod/db:username>>",
            "<<mem|ap_sep_v1|prod/db:password>>",
            "<<mem|ap_sep_v1|prod/api:token>>",
            "<<mem|ap_sep_v1|plain>>",
            "<<mem|ap_sep_v1|prod/db:port>>",
        ]
        lines = [f"k{i} = {refs[i % len(refs)]}" for i in range(n)]
        lines.insert(n // 2, "gone = <<mem|ap_sep_v1|prod/db:nope>>")
        return "\n".join(lines)

    def assert_hidden(self, exc: BaseException) -> None:
        shown = _shown(exc)
        assert any(m.startswith("jinja_apsecrets") for m, _, _ in shown), "no library frame"
        for module, name, text in shown:
            for value in self.VALUES:
                assert value not in text, f"{module}: {name} shows a value"

    def render_error(self, template: jinja2.Template, **variables: Any) -> BaseException:
        with pytest.raises(SecretNotFoundError) as info:
            _render(template, **variables)
        return info.value

    def test_inline_run_with_one_missing(self, env: jinja2.Environment) -> None:
        self.assert_hidden(self.render_error(env.from_string(self.page())))

    def test_function_form_with_one_missing(self, env: jinja2.Environment) -> None:
        src = (
            "{% set a = secret('mem', 'plain') %}{% for p in paths %}"
            "{{ a }}{{ secret('mem', p) }}{% endfor %}"
        )
        paths = ["prod/db:password", "prod/api:token", "prod/db:nope"]
        self.assert_hidden(self.render_error(env.from_string(src), paths=paths))

    def test_finalize_and_async(self, make_env: MakeEnv) -> None:
        env = make_env(finalize=lambda v: v, enable_async=True)
        self.assert_hidden(self.render_error(env.from_string(self.page())))

    def test_resolve_secrets_with_one_missing(self, env: jinja2.Environment) -> None:
        data = {"a": "<<mem|ap_sep_v1|prod/db:password>>", "b": "x <<mem|ap_sep_v1|gone>>"}
        template = env.from_string("{{ data | resolve_secrets }}")
        self.assert_hidden(self.render_error(template, data=data))

    def test_resolve_values_with_one_missing(self, make_env: MakeEnv, resolver: Resolver) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
        data = ["<<mem|ap_sep_v1|prod/db:password>>", "<<mem|ap_sep_v1|prod/db:nope>>"]
        self.assert_hidden(self.render_error(env.from_string("{{ data }}"), data=data))


class TestOneRule:
    """``Resolver.resolve`` and ``secret()`` give values of one type (issue 15 item 13)."""

    def test_resolve_returns_secret_text(self, resolver: Resolver) -> None:
        out = resolver.resolve(
            {"a": "<<mem|ap_sep_v1|plain>>", "b": ["x <<mem|ap_sep_v1|prod/db:password>>"]}
        )
        assert isinstance(out["a"], SecretText)
        assert isinstance(out["b"][0], SecretText)
        assert out == {"a": "plain-Secret-3", "b": [f"x {VALUE}"]}
        assert "plain-Secret-3" not in repr(out)

    def test_resolved_data_dumps_as_plain_strings(self, resolver: Resolver) -> None:
        out = resolver.resolve({"a": "<<mem|ap_sep_v1|plain>>"})
        assert yaml.safe_dump(out) == "a: plain-Secret-3\n"
        assert json.dumps(out) == '{"a": "plain-Secret-3"}'

    def test_secret_returns_secret_text(self, env: jinja2.Environment) -> None:
        module = env.from_string("{% set x = secret('mem', 'plain') %}").module
        assert type(module.x) is SecretText  # type: ignore[attr-defined]


class TestBase64:
    def test_encode_and_decode(self, env: jinja2.Environment) -> None:
        out = env.from_string("{{ secret('mem', 'plain') | b64encode }}").render()
        assert out == base64.b64encode(b"plain-Secret-3").decode()
        assert env.from_string("{{ v | b64decode }}").render(v=out) == "plain-Secret-3"

    def test_a_kubernetes_secret_manifest(self, env: jinja2.Environment) -> None:
        src = "data:\n  password: {{ secret('mem', 'prod/db:password') | b64encode }}\n"
        doc = yaml.safe_load(env.from_string(src).render())
        assert base64.b64decode(doc["data"]["password"]).decode() == VALUE

    def test_encoded_secret_stays_hidden(self, env: jinja2.Environment) -> None:
        module = env.from_string("{% set e = secret('mem', 'plain') | b64encode %}").module
        assert isinstance(module.e, SecretText)  # type: ignore[attr-defined]

    def test_bad_input_is_not_quoted(self, env: jinja2.Environment) -> None:
        with pytest.raises(ValueError, match="not base64") as info:
            env.from_string("{{ 'not base64 at all!' | b64decode }}").render()
        assert "at all" not in str(info.value)

    def test_existing_filters_are_kept(self, resolver: Resolver) -> None:
        env = jinja2.Environment()
        env.filters["b64encode"] = lambda v: "theirs"
        env.add_extension("jinja_apsecrets.SecretsExtension")
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        assert env.from_string("{{ 'a' | b64encode }} {{ 'YQ==' | b64decode }}").render() == (
            "theirs a"
        )
