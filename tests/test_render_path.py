"""The render path (issue 12): a stateless compile, one lookup per render,
``secret()`` compiled to a direct call, the rendered-run cache.

The backend is the in-memory test provider of ``support.py`` (a double that
counts its fetches); the clock is the fake clock of ``support.py``.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2.runtime import Context

from jinja_apsecrets import Resolver, SecretNotFoundError
from jinja_apsecrets import extension as extension_module
from jinja_apsecrets.prefetch import RUN_TAG, static_refs_of
from jinja_apsecrets.runs import RenderCache

MakeEnv = Callable[..., jinja2.Environment]
PW = "pw-Secret-1"


class Counter:
    """Counts ``Resolver.lookup`` calls (the resolver's one entry point for values)."""

    def __init__(self, resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        real = resolver.lookup

        def lookup(refs: Any, **kwargs: Any) -> Any:
            refs = list(refs)
            self.calls.append(refs)
            return real(refs, **kwargs)

        monkeypatch.setattr(resolver, "lookup", lookup)


@pytest.fixture
def counter(resolver: Resolver, monkeypatch: pytest.MonkeyPatch) -> Counter:
    return Counter(resolver, monkeypatch)


class TestStatelessCompile:
    def test_no_state_is_handed_between_hooks(self) -> None:
        names = vars(extension_module)
        assert not any(isinstance(v, type(threading.local())) for v in names.values())

    def test_hooks_can_be_called_apart(self, env: jinja2.Environment) -> None:
        # preprocess of one template between the hooks of another changes nothing.
        ext = next(iter(env.extensions.values()))
        src = "a <<mem|ap_sep_v1|plain>>\n{{ x }} <<mem|ap_sep_v1|prod/db:password>>"
        stream = env._tokenize(src, None)  # runs preprocess and filter_stream
        ext.preprocess("<<mem|ap_sep_v1|prod/api:token>>", None)
        template = env.from_string(src)
        assert template.render(x=1) == f"a plain-Secret-3\n1 {PW}"
        assert stream is not None

    def test_forged_internal_tags_fail(self, env: jinja2.Environment) -> None:
        # A run tag as preprocess writes it, by hand: it named a secret the
        # template never wrote as a reference (and rendered its value).
        run = env.preprocess("<<mem|ap_sep_v1|plain>>").replace(RUN_TAG, "__apsecrets__")
        for src in ("{% __apsecrets_prefetch__ %}", "{% __apsecrets__ 'x' %}", run):
            with pytest.raises(jinja2.TemplateSyntaxError, match="internal") as info:
                env.from_string(src)
            assert RUN_TAG not in str(info.value)
        with pytest.raises(jinja2.TemplateSyntaxError, match="unknown tag"):
            env.from_string('{% __apsecrets_0123456789abcdef__ "a" "0 1 0 1 0 1 0" %}')

    def test_compiles_concurrently(self, env: jinja2.Environment) -> None:
        results: list[str] = []

        def work(i: int) -> None:
            src = f"{i} <<mem|ap_sep_v1|plain>> {{{{ secret('mem', 'prod/db:port') }}}}"
            results.append(env.from_string(src).render())

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == sorted(f"{i} plain-Secret-3 5432" for i in range(16))


class TestOneLookupPerRender:
    def test_warm_render_makes_no_lookup(self, env: jinja2.Environment, counter: Counter) -> None:
        t = env.from_string(
            "{% for i in [1, 2] %}<<mem|ap_sep_v1|plain>> {{ i }} <<mem|ap_sep_v1|prod/db:port>>"
            "{% endfor %}{{ secret('mem', 'prod/api:token') }}"
        )
        assert t.render() == "plain-Secret-3 1 5432plain-Secret-3 2 5432tok-Secret-2"
        cold = len(counter.calls)
        assert t.render() == "plain-Secret-3 1 5432plain-Secret-3 2 5432tok-Secret-2"
        assert len(counter.calls) == cold

    def test_cold_render_is_one_lookup_for_all_runs(
        self, env: jinja2.Environment, counter: Counter
    ) -> None:
        t = env.from_string(
            "<<mem|ap_sep_v1|plain>>{{ 1 }}<<mem|ap_sep_v1|prod/db:port>>"
            "{{ secret('mem', 'prod/api:token') }}"
        )
        t.render()
        assert len(counter.calls) == 1  # the constant secret() call was in the round too
        assert sorted(counter.calls[0]) == [
            ("mem", "plain"),
            ("mem", "prod/api:token"),
            ("mem", "prod/db:port"),
        ]

    def test_expiry_and_invalidation_render_again(
        self, env: jinja2.Environment, resolver: Resolver, clock: Any, store: Any
    ) -> None:
        t = env.from_string("<<mem|ap_sep_v1|plain>> {{ secret('mem', 'prod/db:port') }}")
        assert t.render() == "plain-Secret-3 5432"
        store["plain"] = "rotated"
        store["prod/db"] = {**store["prod/db"], "port": 1}
        assert t.render() == "plain-Secret-3 5432"
        clock.advance(301)
        assert t.render() == "rotated 1"
        store["plain"] = "again"
        resolver.invalidate()
        assert t.render() == "again 1"

    def test_render_cache_pickles_empty(self, env: jinja2.Environment) -> None:
        env.from_string("<<mem|ap_sep_v1|plain>>").render()
        cache = env.secret_render_cache  # type: ignore[attr-defined]
        assert cache.runs
        assert b"plain-Secret-3" not in pickle.dumps(cache)
        clone = pickle.loads(pickle.dumps(cache))
        assert isinstance(clone, RenderCache)
        assert not clone.runs
        assert not clone.values

    def test_cache_is_bounded(self, resolver: Resolver) -> None:
        cache = RenderCache(resolver, maxsize=2)
        for i in range(5):
            cache.store_runs(f"k{i}", ("x",), resolver.timer() + 10, resolver.generation())
        assert list(cache.runs) == ["k3", "k4"]

    def test_a_lookup_from_before_an_invalidation_is_not_kept(self, resolver: Resolver) -> None:
        cache = RenderCache(resolver)
        generation = resolver.generation()
        resolver.invalidate()
        cache.store_runs("k", ("x",), resolver.timer() + 10, generation)
        assert cache.runs_hit("k") is None


def test_a_reference_after_a_constant_secret_call_is_still_validated(
    env: jinja2.Environment,
) -> None:
    with pytest.raises(jinja2.TemplateSyntaxError) as info:
        env.from_string("{{ secret('nope', 'x:y') }}\n<<nope|ap_sep_v1|x:y>>")
    assert info.value.lineno == 2


class TestBlocksAndMacros:
    TEMPLATES = {
        "layout.j2": "<<mem|ap_sep_v1|plain>>\n{% block a %}A <<mem|ap_sep_v1|prod/db:port>>"
        "{% endblock %}\n{% block b %}{% endblock %}",
        "page.j2": '{% extends "layout.j2" %}{% import "m.j2" as m %}'
        "{% block b %}{{ super() }}B <<mem|ap_sep_v1|prod/api:token>> {{ m.f() }}"
        "{% block inner %}I <<mem|ap_sep_v1|prod/db:username>>{% endblock %}{% endblock %}",
        "m.j2": "{% macro f() %}M <<mem|ap_sep_v1|prod/db:password>>{% endmacro %}",
    }

    def test_extends_blocks_macros(self, make_env: MakeEnv, counter: Counter) -> None:
        env = make_env(loader=jinja2.DictLoader(self.TEMPLATES))
        expected = f"plain-Secret-3\nA 5432\nB tok-Secret-2 M {PW}I admin"
        assert env.get_template("page.j2").render() == expected
        assert len(counter.calls) == 1  # the tree in one round; blocks and imports read it
        first = set(counter.calls[0])
        assert ("mem", "prod/db:password") in first  # the imported macro's, in round one
        assert env.get_template("page.j2").render() == expected

    def test_a_block_renders_alone(self, make_env: MakeEnv) -> None:
        env = make_env(loader=jinja2.DictLoader(self.TEMPLATES))
        template = env.get_template("layout.j2")
        out = "".join(template.blocks["a"](template.new_context()))
        assert out == "A 5432"

    def test_static_refs_of_a_tree(self, make_env: MakeEnv) -> None:
        env = make_env(loader=jinja2.DictLoader(self.TEMPLATES))
        assert sorted(static_refs_of(env, ["page.j2"])) == [
            ("mem", "plain"),
            ("mem", "prod/api:token"),
            ("mem", "prod/db:password"),
            ("mem", "prod/db:port"),
            ("mem", "prod/db:username"),
        ]

    def test_runs_in_recursive_loops_and_call_blocks(self, env: jinja2.Environment) -> None:
        src = (
            "{% macro box() %}[{{ caller() }}]{% endmacro %}"
            "{% call box() %}<<mem|ap_sep_v1|plain>>{% endcall %}"
            "{% for n in tree recursive %}<<mem|ap_sep_v1|prod/db:port>>"
            "{{ loop(n.kids) }}{% endfor %}"
        )
        tree = [{"kids": [{"kids": []}]}]
        assert env.from_string(src).render(tree=tree) == "[plain-Secret-3]54325432"


class TestSecretCall:
    def test_a_variable_named_secret_wins(self, env: jinja2.Environment) -> None:
        t = env.from_string("{{ secret('a', 'b') }}")
        assert t.render(secret=lambda a, b: a + b) == "ab"

    def test_local_names_win(self, env: jinja2.Environment) -> None:
        src = (
            "{% macro m(secret) %}{{ secret('x', 'y') }}{% endmacro %}{{ m(lambda_) }}|"
            "{% for secret in [f] %}{{ secret('p', 'q') }}{% endfor %}|"
            "{% set secret = f %}{{ secret('s', 't') }}"
        )
        f = lambda a, b: f"{a}{b}"  # noqa: E731
        assert env.from_string(src).render(lambda_=f, f=f) == "xy|pq|st"

    def test_not_called_through_context_call(
        self, env: jinja2.Environment, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        t = env.from_string(
            "{% for p in ['plain', 'prod/db:port'] %}{{ secret('mem', p) }}{% endfor %}"
        )
        t.render()

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("Context.call used")

        monkeypatch.setattr(Context, "call", refuse)
        assert t.render() == "plain-Secret-3" + "5432"

    def test_names_that_are_not_calls_of_the_global(self, env: jinja2.Environment) -> None:
        src = (
            "{% macro secret(a, b) %}M{{ a }}{{ b }}{{ caller() if caller }}{% endmacro %}"
            "{{ secret(1, 2) }}{{ d.secret('x') }}{{ 'v' | secret('w') }}"
            "{% call secret(3, 4) %}c{% endcall %}"
        )
        env.filters["secret"] = lambda v, w: v + w
        d = {"secret": lambda x: x * 2}
        assert env.from_string(src).render(d=d) == "M12xxvwM34c"

    def test_keyword_and_nested_calls(self, env: jinja2.Environment) -> None:
        src = "{{ secret(connection='mem', path='plain') | upper }} {{ [secret('mem', ('prod/db:' ~ 'port'))] | length }}"
        assert env.from_string(src).render() == "PLAIN-SECRET-3 1"

    def test_undefined_secret_name_fails_as_in_jinja(self, resolver: Resolver) -> None:
        env = jinja2.Environment(
            extensions=["jinja_apsecrets.SecretsExtension"], undefined=jinja2.StrictUndefined
        )
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        del env.globals["secret"]
        with pytest.raises(jinja2.UndefinedError):
            env.from_string("{{ secret('mem', 'plain') }}").render()

    def test_async_warm_and_cold(self, make_env: MakeEnv) -> None:
        env = make_env(enable_async=True)
        t = env.from_string("{% for p in ps %}{{ secret('mem', p) }},{% endfor %}")
        for _ in range(2):
            out = asyncio.run(t.render_async(ps=["plain", "prod/db:port"]))
            assert out == "plain-Secret-3,5432,"


class TestFailures:
    def test_a_run_in_a_branch_not_taken_never_fails(self, env: jinja2.Environment) -> None:
        t = env.from_string("{% if false %}<<mem|ap_sep_v1|prod/db:nope>>{% endif %}ok")
        assert t.render() == "ok"
        assert t.render() == "ok"

    def test_error_names_the_runs_line(self, make_env: MakeEnv) -> None:
        env = make_env(loader=jinja2.DictLoader({"t.j2": "a\n{{ 1 }}\nx <<mem|ap_sep_v1|nope>>"}))
        with pytest.raises(SecretNotFoundError) as info:
            env.get_template("t.j2").render()
        assert (info.value.template, info.value.lineno) == ("t.j2", 3)

    def test_lenient_runs_are_not_cached(
        self, make_env: MakeEnv, resolver: Resolver, store: Any
    ) -> None:
        env = make_env()
        env.install_secret_resolver(resolver, on_missing="keep")  # type: ignore[attr-defined]
        t = env.from_string("v=<<mem|ap_sep_v1|later>>")
        assert t.render() == "v=<<mem|ap_sep_v1|later>>"
        store["later"] = "now-there"
        assert t.render() == "v=now-there"


class TestWhitespaceAroundRuns:
    @pytest.mark.parametrize(
        ("src", "variables"),
        [
            ("a <<mem|ap_sep_v1|plain>> b\n", {}),
            ("<<mem|ap_sep_v1|plain>>\n{{ x }}  <<mem|ap_sep_v1|plain>>  {{ x }}\n", {"x": 1}),
            ("{{ x -}}\n  <<mem|ap_sep_v1|plain>>  \n  {{- x }}", {"x": 1}),
            ("{% if 1 %}\n  <<mem|ap_sep_v1|plain>>\n  {% endif %}\n", {}),
            ("{{ x }}\n<<mem|ap_sep_v1|plain>>\n{# c #}\n", {"x": 1}),
            ("<<mem|ap_sep_v1|plain>>\n\n", {}),
        ],
    )
    @pytest.mark.parametrize(
        "options",
        [{}, {"trim_blocks": True, "lstrip_blocks": True}, {"keep_trailing_newline": True}],
    )
    def test_text_around_runs_renders_as_plain_jinja(
        self, make_env: MakeEnv, src: str, variables: dict[str, Any], options: dict[str, Any]
    ) -> None:
        ours = make_env(**options).from_string(src).render(**variables)
        written = src.replace("<<mem|ap_sep_v1|plain>>", "plain-Secret-3")
        assert ours == jinja2.Environment(**options).from_string(written).render(**variables)


class TestGeneratedTemplatesWithReferences:
    """Generated templates (the identity test's pieces) with references among
    them render as plain Jinja2 renders them with the value written in."""

    VALUE = "plain-Secret-3"

    @staticmethod
    def refs(d: dict[str, str]) -> Any:
        from hypothesis import strategies as st

        vs, ve = d.get("variable_start_string", "{{"), d.get("variable_end_string", "}}")
        forms = [("<<mem|ap_sep_v1|plain>>", "VALUE")]
        for before in ("", "-"):
            for after in ("", "-"):
                forms.append(
                    (
                        f"{vs}{before} mem|ap_sep_v1|plain {after}{ve}",
                        f"{vs}{before} 'VALUE' {after}{ve}",
                    )
                )
        return st.sampled_from(forms)

    def test_generated(self) -> None:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
        from support import STORE, MemoryProvider
        from test_identity import DELIMS, OPTIONS, pieces, render

        @st.composite
        def cases(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
            opts = draw(OPTIONS)
            d = DELIMS[opts["delims"]]
            items = draw(
                st.lists(st.one_of(pieces(d, opts["line_statements"]), self.refs(d)), max_size=8)
            )
            ours = " ".join(i if isinstance(i, str) else i[0] for i in items)
            written = " ".join(i if isinstance(i, str) else i[1] for i in items)
            return ours, written.replace("VALUE", self.VALUE), opts

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(cases())
        def check(case: tuple[str, str, dict[str, Any]]) -> None:
            ours, written, opts = case
            theirs = render(written, opts, False)
            if theirs[0] != "ok":
                return  # a template that fails without references is not this test's subject
            with Resolver({"mem": MemoryProvider("mem")}) as resolver:
                assert render(ours, opts, True, resolver) == theirs

        STORE["plain"] = self.VALUE
        try:
            check()
        finally:
            STORE.pop("plain", None)
