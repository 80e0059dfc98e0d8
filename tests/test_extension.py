"""The extension: syntax, Environment options, compile-time safety, policies."""

from __future__ import annotations

import asyncio
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import SandboxedEnvironment

from jinja_apsecrets import (
    MissingSecret,
    Resolver,
    SecretNotFoundError,
    SecretReferenceSyntaxError,
    SecretValidationError,
)

REF = "<<mem|ap_sep_v1|prod/db:password>>"
PW = "pw-Secret-1"

MakeEnv = Callable[..., jinja2.Environment]


class TestSyntax:
    def test_angle_form(self, env: jinja2.Environment) -> None:
        assert env.from_string(f"password = {REF}").render() == f"password = {PW}"

    def test_spec_brace_form(self, env: jinja2.Environment) -> None:
        t = env.from_string("x={{mem|ap_sep_v1|prod/api:token}}.")
        assert t.render() == "x=tok-Secret-2."

    def test_blanks_around_path_are_trimmed(self, env: jinja2.Environment) -> None:
        assert env.from_string("{{ mem|ap_sep_v1| prod/db:username }}").render() == "admin"

    def test_brace_whitespace_control(self, env: jinja2.Environment) -> None:
        assert env.from_string("a  {{- mem|ap_sep_v1|plain -}}  b").render() == "aplain-Secret-3b"

    def test_many_references_and_plain_text(self, env: jinja2.Environment) -> None:
        src = "u=<<mem|ap_sep_v1|prod/db:username>>;p=<<mem|ap_sep_v1|prod/db:port>><<mem|ap_sep_v1|plain>>"
        assert env.from_string(src).render() == "u=admin;p=5432plain-Secret-3"

    def test_non_string_values_print_as_json(self, env: jinja2.Environment) -> None:
        assert env.from_string("<<mem|ap_sep_v1|prod/api:nested>>").render() == '{"a":[1,2]}'

    @pytest.mark.parametrize(
        "src",
        [
            "mem|ap_sep_v1|prod/db:password",
            "{% raw %}<<mem|ap_sep_v1|prod/db:password>>{% endraw %}",
            "{%- raw -%} {{mem|ap_sep_v1|plain}} {%- endraw %}",
            "{# <<mem|ap_sep_v1|prod/db:password>> #}",
            "{{ '<<mem|ap_sep_v1|prod/db:password>>' }}",
            '{% set x = "<<mem|ap_sep_v1|plain>>" %}{{ x }}',
            "<< mem|ap_sep_v1|plain",
            "<<mem|ap_sep_v1|plain\n>>",
            "<mem|ap_sep_v1|plain>",
            "{mem|ap_sep_v1|plain}",
            "<<mem|other|plain>>",
        ],
    )
    def test_not_references_are_left_alone(self, make_env: MakeEnv, src: str) -> None:
        plain = jinja2.Environment()
        assert make_env().from_string(src).render() == plain.from_string(src).render()

    def test_line_numbers_unchanged(self, env: jinja2.Environment) -> None:
        src = f"a {REF} b\nc {REF}\n\n{{{{ 1 // 0 }}}}"
        with pytest.raises(ZeroDivisionError) as info:
            env.from_string(src).render()
        frames = [f for f in traceback.extract_tb(info.tb) if f.filename == "<template>"]
        assert frames[-1].lineno == 4

    def test_syntax_error_line_unchanged(self, env: jinja2.Environment) -> None:
        with pytest.raises(jinja2.TemplateSyntaxError) as info:
            env.from_string(f"{REF}\n{REF} x\n{{% if %}}")
        assert info.value.lineno == 3

    def test_dynamic_path_is_rejected(self, env: jinja2.Environment) -> None:
        with pytest.raises(SecretReferenceSyntaxError, match="static"):
            env.from_string("<<mem|ap_sep_v1|{{ name }}:password>>")


class TestOptions:
    def test_custom_delimiters(self, make_env: MakeEnv) -> None:
        env = make_env(
            block_start_string="<%",
            block_end_string="%>",
            variable_start_string="${",
            variable_end_string="}",
            comment_start_string="<#",
            comment_end_string="#>",
        )
        src = (
            "${x} <<mem|ap_sep_v1|plain>> ${mem|ap_sep_v1|prod/db:username} {{mem|ap_sep_v1|plain}}"
        )
        assert env.from_string(src).render(x=1) == "1 plain-Secret-3 admin plain-Secret-3"

    @pytest.mark.parametrize(
        "opts",
        [
            {"trim_blocks": True},
            {"lstrip_blocks": True},
            {"trim_blocks": True, "lstrip_blocks": True},
        ],
    )
    def test_trim_and_lstrip_keep_reference_whitespace(
        self, make_env: MakeEnv, opts: dict[str, bool]
    ) -> None:
        src = "{% if 1 %}\n  a: {{ v }}\n  b: <<mem|ap_sep_v1|plain>>\n    <<mem|ap_sep_v1|plain>>\n{% endif %}\n"
        expected = (
            jinja2.Environment(**opts)
            .from_string(src.replace("<<mem|ap_sep_v1|plain>>", "plain-Secret-3"))
            .render(v=1)
        )
        assert make_env(**opts).from_string(src).render(v=1) == expected

    def test_line_statements_and_comments(self, make_env: MakeEnv) -> None:
        env = make_env(line_statement_prefix="#", line_comment_prefix="##")
        src = "# for i in [1]\n<<mem|ap_sep_v1|plain>> ## <<mem|ap_sep_v1|nope>>\n# endfor\n# set s = '<<mem|ap_sep_v1|nope>>'\n"
        assert env.from_string(src).render() == "plain-Secret-3\n"

    def test_autoescape_escapes_values_not_text(self, make_env: MakeEnv) -> None:
        env = make_env(autoescape=True)
        out = env.from_string("<p><<mem|ap_sep_v1|html:value>></p>").render()
        assert out == "<p>&lt;b&gt;&amp;&#39;&#34;</p>"

    def test_autoescape_block_toggles(self, make_env: MakeEnv) -> None:
        src = "{% autoescape true %}<<mem|ap_sep_v1|html:value>>{% endautoescape %}|<<mem|ap_sep_v1|html:value>>"
        assert make_env().from_string(src).render() == "&lt;b&gt;&amp;&#39;&#34;|<b>&'\""

    def test_async(self, make_env: MakeEnv) -> None:
        env = make_env(enable_async=True)
        t = env.from_string(f"{REF} {{{{ secret('mem', 'plain') }}}}")
        assert asyncio.run(t.render_async()) == f"{PW} plain-Secret-3"
        assert t.render() == f"{PW} plain-Secret-3"

    def test_sandbox(self, make_env: MakeEnv) -> None:
        env = make_env(SandboxedEnvironment)
        assert (
            env.from_string(f"{REF}{{{{ secret('mem', 'plain') }}}}").render()
            == PW + "plain-Secret-3"
        )

    def test_native(self, make_env: MakeEnv) -> None:
        env = make_env(NativeEnvironment)
        assert env.from_string("<<mem|ap_sep_v1|prod/db:port>>").render() == 5432
        assert env.from_string(f"{REF}").render() == PW

    def test_finalize_applies_to_values_not_text(self, make_env: MakeEnv) -> None:
        env = make_env(finalize=lambda v: v.upper() if isinstance(v, str) else v)
        assert env.from_string(f"pw {REF} {{{{ 'x' }}}}").render() == f"pw {PW.upper()} X"


class TestCompileTime:
    def test_no_value_in_compiled_code(self, env: jinja2.Environment) -> None:
        code = env.compile(f"{REF} {{{{mem|ap_sep_v1|plain}}}}", raw=True)
        assert PW not in code
        assert "plain-Secret-3" not in code

    def test_no_value_in_template_cache_or_bytecode_cache(
        self, make_env: MakeEnv, tmp_path: Path
    ) -> None:
        (tmp_path / "t.j2").write_text(f"{REF}\n")
        cache_dir = tmp_path / "bcc"
        cache_dir.mkdir()
        env = make_env(
            loader=jinja2.FileSystemLoader(tmp_path),
            bytecode_cache=jinja2.FileSystemBytecodeCache(str(cache_dir)),
        )
        assert env.get_template("t.j2").render() == PW
        assert list(cache_dir.iterdir())
        for f in cache_dir.iterdir():
            assert PW.encode() not in f.read_bytes()
        for template in env.cache.values():  # type: ignore[union-attr]
            assert PW not in repr(vars(template))

    def test_rendering_twice_fetches_once(self, env: jinja2.Environment, mem: Any) -> None:
        t = env.from_string(
            f"{REF} <<mem|ap_sep_v1|prod/db:username>> <<mem|ap_sep_v1|prod/api:token>>"
        )
        t.render()
        t.render()
        assert mem.fetched == 1
        assert sorted(s.name for s in mem.calls[0]) == ["prod/api", "prod/db"]


class TestValidation:
    def test_unknown_connection_fails_at_compile(self, env: jinja2.Environment) -> None:
        with pytest.raises(SecretReferenceSyntaxError) as info:
            env.from_string("ok\n<<nope|ap_sep_v1|x:y>>")
        err = info.value
        assert isinstance(err, jinja2.TemplateSyntaxError)
        assert isinstance(err, SecretValidationError)
        assert err.code == "VALIDATION"
        assert err.lineno == 2
        assert "mem" in err.message

    def test_malformed_path_names_template_and_line(self, make_env: MakeEnv) -> None:
        env = make_env(loader=jinja2.DictLoader({"app.conf": "\n\n<<mem|ap_sep_v1|a:>>"}))
        with pytest.raises(SecretReferenceSyntaxError) as info:
            env.get_template("app.conf")
        assert (info.value.name, info.value.lineno) == ("app.conf", 3)
        assert info.value.to_dict()["request"] == {"path": "a:"}

    def test_missing_secret_at_render_names_template_and_line(self, make_env: MakeEnv) -> None:
        env = make_env(loader=jinja2.DictLoader({"a.txt": "x\ny <<mem|ap_sep_v1|prod/db:nokey>>"}))
        with pytest.raises(SecretNotFoundError) as info:
            env.get_template("a.txt").render()
        assert (info.value.template, info.value.lineno) == ("a.txt", 2)
        assert info.value.message == "Secret value for key nokey not found"

    def test_without_resolver(self) -> None:
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        with pytest.raises(SecretValidationError, match="install_secret_resolver"):
            env.from_string(REF).render()


class TestFunctionsAndPolicies:
    def test_secret_global_with_filter(self, env: jinja2.Environment) -> None:
        t = env.from_string("k:\n  {{ secret('mem', 'prod/db:' ~ key) | indent(2) }}")
        assert t.render(key="password") == f"k:\n  {PW}"

    def test_resolve_secrets_filter(self, env: jinja2.Environment) -> None:
        data = {"a": "<<mem|ap_sep_v1|plain>>", "b": ["x {{mem|ap_sep_v1|prod/db:port}} y"]}
        t = env.from_string(
            "{{ (d | resolve_secrets).a }} {{ (d | resolve_secrets).b[0] }} {{ s | resolve_secrets }}"
        )
        assert (
            t.render(d=data, s="1<<mem|ap_sep_v1|plain>>2")
            == "plain-Secret-3 x 5432 y 1plain-Secret-32"
        )

    def test_variables_are_data_not_references(
        self, env: jinja2.Environment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APSECRETS_TEST_X", "leaked")
        value = "<<env|ap_sep_v1|APSECRETS_TEST_X>>"
        assert env.from_string("{{ v }}").render(v=value) == value
        assert env.from_string("{{ v }}").render(v=REF) == REF

    def test_resolve_values_opt_in(self, make_env: MakeEnv, resolver: Resolver) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
        assert env.from_string("{{ v }}|{{ n }}").render(v=f"pw={REF}", n=3) == f"pw={PW}|3"

    def test_values_are_never_parsed_again(self, make_env: MakeEnv, resolver: Resolver) -> None:
        tricky = "<<mem|ap_sep_v1|prod/db:password>> {{ 7 * 6 }} {% if x %}"
        for env in (make_env(), make_env(finalize=lambda v: v)):
            env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
            assert env.from_string("<<mem|ap_sep_v1|tricky:value>>").render() == tricky
            assert env.from_string("{{ secret('mem', 'tricky:value') }}").render() == tricky
            assert (
                env.from_string("{{ v | resolve_secrets }}").render(
                    v="<<mem|ap_sep_v1|tricky:value>>"
                )
                == tricky
            )

    def test_derived_values_are_never_parsed_again(
        self, make_env: MakeEnv, resolver: Resolver
    ) -> None:
        tricky = "<<mem|ap_sep_v1|prod/db:password>> {{ 7 * 6 }} {% if x %}"
        env = make_env()
        env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
        for src in (
            "{{ secret('mem', 'tricky:value') ~ '' }}",
            "{{ secret('mem', 'tricky:value') | trim }}",
            "{% set x %}<<mem|ap_sep_v1|tricky:value>>{% endset %}{{ x }}",
            "{{ secret('mem', 'tricky:value') | resolve_secrets }}",
            "{% set y = secret('mem', 'tricky:value') ~ '' %}{{ y }}",
        ):
            assert env.from_string(src).render() == tricky, src

    def test_resolve_values_reads_nested_variables(
        self, make_env: MakeEnv, resolver: Resolver
    ) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
        cfg = {"db": {"pw": REF}, "hosts": ["a", "<<mem|ap_sep_v1|plain>>"]}
        t = env.from_string(
            "{{ cfg.db.pw }} {{ cfg.hosts | join(',') }}{% for h in cfg.hosts %}|{{ h }}{% endfor %}"
        )
        assert t.render(cfg=cfg) == f"{PW} a,plain-Secret-3|a|plain-Secret-3"
        assert pickle.loads(pickle.dumps(env)).from_string("{{ v }}").render(v=REF) == PW
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        assert env.from_string("{{ v }}").render(v=REF) == REF

    def test_on_missing_keep(self, make_env: MakeEnv, resolver: Resolver) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, on_missing="keep")  # type: ignore[attr-defined]
        assert (
            env.from_string("a <<mem|ap_sep_v1|gone:x>> b").render()
            == "a <<mem|ap_sep_v1|gone:x>> b"
        )

    def test_on_missing_undefined_works_with_default(
        self, make_env: MakeEnv, resolver: Resolver
    ) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, on_missing="undefined")  # type: ignore[attr-defined]
        t = env.from_string(
            "[<<mem|ap_sep_v1|gone:x>>] {{ secret('mem', 'gone:x') | default('fallback') }}"
        )
        assert t.render() == "[] fallback"
        value = env.from_string("{{ f() }}").render(f=lambda: None)
        assert value == "None"
        missing = env.globals["secret"]
        assert missing  # the global itself is defined

    def test_missing_secret_message_names_reference(self) -> None:
        undefined = MissingSecret("aws", "prod/x:y", "Secret value for key y not found")
        with pytest.raises(jinja2.UndefinedError, match=r"aws\|ap_sep_v1\|prod/x:y"):
            undefined.upper()
        assert str(undefined) == ""

    def test_connection_failure_is_never_lenient(
        self, make_env: MakeEnv, resolver: Resolver, mem: Any
    ) -> None:
        resolver.add_connection(type(mem)("down", {"fail": True}))
        env = make_env()
        env.install_secret_resolver(resolver, on_missing="keep")  # type: ignore[attr-defined]
        with pytest.raises(ConnectionError, match="No token received"):
            env.from_string("<<down|ap_sep_v1|a:b>>").render()


class TestPickle:
    def test_environment_with_resolver_pickles_without_values(
        self, env: jinja2.Environment
    ) -> None:
        assert env.from_string(REF).render() == PW
        blob = pickle.dumps(env)
        assert PW.encode() not in blob
        clone = pickle.loads(blob)
        assert clone.from_string(REF).render() == PW

    def test_plain_environment_pickles_too(self) -> None:
        pickle.loads(pickle.dumps(jinja2.Environment()))


class TestPrefetch:
    TEMPLATES = {
        "base.j2": "db=<<mem|ap_sep_v1|prod/db:password>>\n{% block body %}{% endblock %}",
        "child.j2": (
            '{% extends "base.j2" %}{% import "macros.j2" as m %}'
            "{% block body %}{% include 'part.j2' %} {{ m.token() }} "
            "{{ secret('mem', 'plain') }}{% endblock %}"
        ),
        "part.j2": "user=<<mem|ap_sep_v1|prod/db:username>>",
        "macros.j2": "{% macro token() %}<<mem|ap_sep_v1|prod/api:token>>{% endmacro %}",
    }
    EXPECTED = f"db={PW}\nuser=admin tok-Secret-2 plain-Secret-3"

    def test_whole_tree_fetched_in_one_round(self, make_env: MakeEnv, mem: Any) -> None:
        env = make_env(loader=jinja2.DictLoader(self.TEMPLATES))
        assert env.get_template("child.j2").render() == self.EXPECTED
        assert len(mem.calls) == 1
        assert sorted(s.name for s in mem.calls[0]) == ["plain", "prod/api", "prod/db"]

    def test_manifest_in_a_block_of_a_single_run_layout(self, make_env: MakeEnv, mem: Any) -> None:
        env = make_env(
            loader=jinja2.DictLoader(
                {
                    "layout.j2": "{% block b %}<<mem|ap_sep_v1|plain>>{% endblock %}",
                    "page.j2": '{% extends "layout.j2" %}{% block b %}{{ super() }} '
                    "<<mem|ap_sep_v1|prod/db:port>>{% endblock %}",
                }
            )
        )
        assert env.get_template("page.j2").render() == "plain-Secret-3 5432"
        assert len(mem.calls) == 1

    def test_async_tree_fetched_in_one_round(self, make_env: MakeEnv, mem: Any) -> None:
        env = make_env(loader=jinja2.DictLoader(self.TEMPLATES), enable_async=True)
        assert asyncio.run(env.get_template("child.j2").render_async()) == self.EXPECTED
        assert len(mem.calls) == 1

    def test_manifest_survives_the_bytecode_cache(
        self, make_env: MakeEnv, mem: Any, tmp_path: Path
    ) -> None:
        for name, text in self.TEMPLATES.items():
            (tmp_path / name).write_text(text)
        cache = jinja2.FileSystemBytecodeCache(str(tmp_path))
        make_env(loader=jinja2.FileSystemLoader(tmp_path), bytecode_cache=cache).get_template(
            "child.j2"
        )
        env = make_env(loader=jinja2.FileSystemLoader(tmp_path), bytecode_cache=cache)
        assert env.get_template("child.j2").render() == self.EXPECTED
        assert len(mem.calls) == 1

    def test_missing_include_still_reported_by_the_include(self, make_env: MakeEnv) -> None:
        env = make_env(
            loader=jinja2.DictLoader({"a.j2": "<<mem|ap_sep_v1|plain>>{% include 'nope.j2' %}"})
        )
        with pytest.raises(jinja2.TemplateNotFound):
            env.get_template("a.j2").render()

    def test_100_concurrent_async_renders_share_fetches(self, make_env: MakeEnv, mem: Any) -> None:
        env = make_env(enable_async=True)
        t = env.from_string(f"{REF} <<mem|ap_sep_v1|prod/api:token>> <<mem|ap_sep_v1|plain>>")

        async def main() -> list[str]:
            return await asyncio.gather(*(t.render_async() for _ in range(100)))

        assert set(asyncio.run(main())) == {f"{PW} tok-Secret-2 plain-Secret-3"}
        assert sum(len(c) for c in mem.calls) == 3


def test_subclassed_extension_works(resolver: Resolver) -> None:
    from jinja_apsecrets import SecretsExtension

    class MyExtension(SecretsExtension):
        pass

    env = jinja2.Environment(extensions=[MyExtension])
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    assert (
        env.from_string(f"{REF} {{{{ secret('mem', 'plain') }}}}").render()
        == f"{PW} plain-Secret-3"
    )


def test_uncached_connections_are_read_once_per_render(
    make_env: MakeEnv, resolver: Resolver, mem: Any
) -> None:
    from support import memory

    fresh = memory("fresh")
    resolver.add_connection(fresh, ttl=0)
    env = make_env()
    t = env.from_string("{{ x }}<<fresh|ap_sep_v1|plain>>{{ x }}<<mem|ap_sep_v1|prod/db:port>>")
    assert t.render(x="-") == "-plain-Secret-3-5432"
    assert t.render(x="-") == "-plain-Secret-3-5432"
    assert fresh.fetched == 2  # once per render
    assert mem.fetched == 1  # cached


def test_overlay_has_its_own_resolver(
    env: jinja2.Environment, resolver: Resolver, mem: Any
) -> None:
    other = Resolver({"mem": type(mem)("mem")})
    overlay = env.overlay(variable_start_string="[[", variable_end_string="]]")
    overlay.install_secret_resolver(other)  # type: ignore[attr-defined]
    assert env.secret_resolver is resolver  # type: ignore[attr-defined]
    assert overlay.from_string("[[mem|ap_sep_v1|plain]] [[ 1 ]]").render() == "plain-Secret-3 1"


@pytest.mark.parametrize(
    "src", ["{<<mem|ap_sep_v1|plain>>}", "${<<mem|ap_sep_v1|plain>>}", "{ <<mem|ap_sep_v1|plain>>"]
)
def test_text_before_a_reference_never_joins_the_tag(env: jinja2.Environment, src: str) -> None:
    expected = src.replace("<<mem|ap_sep_v1|plain>>", "plain-Secret-3").replace(
        "{{mem|ap_sep_v1|plain}}", "plain-Secret-3"
    )
    assert env.from_string(src).render() == expected


def test_text_before_a_reference_with_custom_delimiters(make_env: MakeEnv) -> None:
    env = make_env(
        block_start_string="[%",
        block_end_string="%]",
        variable_start_string="[[",
        variable_end_string="]]",
    )
    assert env.from_string("a[<<mem|ap_sep_v1|plain>>]").render() == "a[plain-Secret-3]"


@pytest.mark.parametrize("arg", ["123", "['A']", "none"])
def test_secret_with_a_non_string_path_is_a_validation_error(
    env: jinja2.Environment, arg: str
) -> None:
    with pytest.raises(SecretValidationError, match="both strings"):
        env.from_string(f"\n{{{{ secret('mem', {arg}) }}}}").render()


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_carriage_returns_are_line_breaks_as_for_jinja(make_env: MakeEnv, newline: str) -> None:
    env = make_env(line_comment_prefix="##", line_statement_prefix="%")
    src = f"<<mem|ap_sep_v1|plain>>{newline}## note <<mem|ap_sep_v1|gone:x>>{newline}% if 1{newline}b <<mem|ap_sep_v1|plain>>{newline}% endif{newline}"
    assert env.from_string(src).render() == "plain-Secret-3\n\nb plain-Secret-3\n"


def test_malformed_template_reports_the_same_error_as_plain_jinja(make_env: MakeEnv) -> None:
    src = "{%x\n\\ <<{% include 'p' %}"
    errors = []
    for env in (jinja2.Environment(line_statement_prefix="%"), make_env(line_statement_prefix="%")):
        with pytest.raises(jinja2.TemplateSyntaxError) as info:
            env.from_string(src)
        errors.append((info.value.message, info.value.lineno))
    assert errors[0] == errors[1]
