"""Adversarial review of the raw runs, kept modules, run-tag nonce, pickling
and scanner changes (review2): each test failed before its fix.

The secret store is tests/support.py's in-memory provider (a double of a
secret manager: documents by name, fetched with a count); the clock is the
fake clock the resolver reads for TTLs.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator

import jinja2
import pytest
from support import STORE, FakeClock, MemoryProvider

from jinja_apsecrets import Resolver
from jinja_apsecrets.prefetch import RUN_TAG


@pytest.fixture
def ttl_env() -> Iterator[tuple[jinja2.Environment, FakeClock, Resolver]]:
    STORE.clear()
    STORE.update({"a": {"v": "A1"}, "b": {"v": "B1"}})
    clock = FakeClock()
    resolver = Resolver({"mem": MemoryProvider("mem")}, timer=clock, ttl=100)
    templates = {
        # A macro library whose own secrets are top-level runs, and which
        # renders a template chosen at render time into an exported variable.
        "lib": (
            "{% set inc %}{% include name %}{% endset %}"
            "{% macro m() %}<<mem|ap_sep_v1|a:v>>{% endmacro %}"
        ),
        "lib_import": (
            "{% import name as part %}{% set inc = part.value %}"
            "{% macro m() %}<<mem|ap_sep_v1|a:v>>{% endmacro %}"
        ),
        "lib_list": (
            '{% set inc %}{% include ["part"] %}{% endset %}'
            "{% macro m() %}<<mem|ap_sep_v1|a:v>>{% endmacro %}"
        ),
        # No reference of its own: Jinja would keep its module on the template.
        "lib_plain": "{% set inc %}{% include name %}{% endset %}{% macro m() %}A1{% endmacro %}",
        "part": "{% set value %}<<mem|ap_sep_v1|b:v>>{% endset %}<<mem|ap_sep_v1|b:v>>",
        "t": "{% import 'lib' as lib %}{{ lib.m() }} {{ lib.inc }}",
        "t_import": "{% import 'lib_import' as lib %}{{ lib.m() }} {{ lib.inc }}",
        "t_list": "{% import 'lib_list' as lib %}{{ lib.m() }} {{ lib.inc }}",
        "t_plain": "{% import 'lib_plain' as lib %}{{ lib.m() }} {{ lib.inc }}",
    }
    env = jinja2.Environment(
        loader=jinja2.DictLoader(templates), extensions=["jinja_apsecrets.SecretsExtension"]
    )
    env.globals["name"] = "part"
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    yield env, clock, resolver
    resolver.close()
    STORE.clear()


@pytest.mark.parametrize("page", ["t", "t_import", "t_list", "t_plain"])
def test_a_kept_module_never_serves_a_dynamically_loaded_value_past_its_ttl(
    ttl_env: tuple[jinja2.Environment, FakeClock, Resolver], page: str
) -> None:
    """A module is kept while its template's own runs are warm; a value it got
    from a template loaded by a computed name has a TTL of its own (here
    fetched 90 s earlier), and must not outlive it in the kept module."""
    env, clock, _ = ttl_env
    assert env.get_template("part").render() == "B1"  # b:v cached until 1100
    clock.advance(90)
    assert env.get_template(page).render() == "A1 B1"  # lib's runs warm until 1190
    assert env.get_template(page).render() == "A1 B1"  # its module may be kept now
    STORE["b"] = {"v": "B2"}
    clock.advance(20)  # b:v expired; lib's runs still warm
    assert env.get_template("part").render() == "B2"
    assert env.get_template(page).render() == "A1 B2"


def test_no_syntax_error_names_the_run_tags_nonce(
    make_env: Callable[..., jinja2.Environment],
) -> None:
    """A parser that is not ours (the i18n extension's ``{% trans %}``) names
    the tag it meets: it must not meet the run tag's secret name."""
    env = make_env()
    env.add_extension("jinja2.ext.i18n")
    nonce = RUN_TAG.removeprefix("__apsecrets_").removesuffix("__")
    with pytest.raises(jinja2.TemplateSyntaxError) as info:
        env.from_string("{% trans %}<<mem|ap_sep_v1|prod/db:username>>{% endtrans %}")
    assert nonce not in str(info.value)
    assert nonce not in "".join(traceback.format_exception(info.value))


def test_a_hand_written_run_tag_without_the_nonce_is_still_a_syntax_error(
    make_env: Callable[..., jinja2.Environment],
) -> None:
    env = make_env()
    for source in (
        '{%+ __apsecrets__ "<<mem|ap_sep_v1|prod/db:username>>" "0 34 2 3 20 13 0" +%}',
        "{% __apsecrets__ %}",
    ):
        with pytest.raises(jinja2.TemplateSyntaxError, match="internal to jinja_apsecrets"):
            env.from_string(source)


def _assert_module_follows_b(
    env: jinja2.Environment, clock: FakeClock, resolver: Resolver, first: str
) -> None:
    """Template ``t`` prints ``lib.m()`` (a:v) and ``lib.dsn`` (b:v): after
    ``first`` cached b:v 90 s earlier, ``lib``'s module must follow b:v past
    its TTL and past ``invalidate()``."""
    assert env.from_string(first).render() == "B1"  # b:v cached until 1100
    clock.advance(90)
    assert env.get_template("t").render() == "A1 B1"
    assert env.get_template("t").render() == "A1 B1"
    STORE["b"] = {"v": "B2"}
    clock.advance(20)  # b:v expired
    assert env.get_template("t").render() == "A1 B2"
    STORE["b"] = {"v": "B3"}
    resolver.invalidate()
    assert env.get_template("t").render() == "A1 B3"


@pytest.mark.parametrize(
    "lib",
    [
        "{% set dsn = db %}{% macro m() %}<<mem|ap_sep_v1|a:v>>{% endmacro %}",
        # No reference of its own: Jinja would keep its module on the template.
        "{% set dsn = db %}{% macro m() %}A1{% endmacro %}",
    ],
    ids=["with runs", "without references"],
)
def test_resolve_values_modules_are_never_kept(lib: str) -> None:
    """With ``resolve_values``, a module's variables may hold values resolved
    from the globals (their own TTLs): no module is kept, by Jinja on the
    template object (rule 1) nor beside the template's runs."""
    STORE.clear()
    STORE.update({"a": {"v": "A1"}, "b": {"v": "B1"}})
    clock = FakeClock()
    resolver = Resolver({"mem": MemoryProvider("mem")}, timer=clock, ttl=100)
    templates = {"lib": lib, "t": "{% import 'lib' as lib %}{{ lib.m() }} {{ lib.dsn }}"}
    env = jinja2.Environment(
        loader=jinja2.DictLoader(templates), extensions=["jinja_apsecrets.SecretsExtension"]
    )
    env.globals["db"] = "<<mem|ap_sep_v1|b:v>>"
    env.install_secret_resolver(resolver, resolve_values=True)  # type: ignore[attr-defined]
    try:
        _assert_module_follows_b(env, clock, resolver, "{{ db }}")
        assert "_module" not in vars(env.get_template("lib")) or (
            env.get_template("lib")._module is None
        )
    finally:
        resolver.close()
        STORE.clear()


@pytest.mark.parametrize(
    "read",
    [
        '{% set f = secret %}{% set dsn = f("mem", "b:v") %}',
        '{% set dsn = (secret)("mem", "b:v") %}',
    ],
    ids=["an alias of secret", "secret in parentheses"],
)
@pytest.mark.parametrize("own_runs", [True, False], ids=["with runs", "without references"])
def test_a_module_that_calls_secret_by_another_name_is_never_kept(
    read: str, own_runs: bool
) -> None:
    """``secret`` called through a name or expression that is not ``secret(``
    (which the compiler rewrites, and which marks a template as calling it)
    still reads a secret: its module must not outlive that value's TTL."""
    STORE.clear()
    STORE.update({"a": {"v": "A1"}, "b": {"v": "B1"}})
    clock = FakeClock()
    resolver = Resolver({"mem": MemoryProvider("mem")}, timer=clock, ttl=100)
    macro = "<<mem|ap_sep_v1|a:v>>" if own_runs else "A1"
    templates = {
        "lib": f"{read}{{% macro m() %}}{macro}{{% endmacro %}}",
        "t": "{% import 'lib' as lib %}{{ lib.m() }} {{ lib.dsn }}",
    }
    env = jinja2.Environment(
        loader=jinja2.DictLoader(templates), extensions=["jinja_apsecrets.SecretsExtension"]
    )
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    try:
        _assert_module_follows_b(env, clock, resolver, "<<mem|ap_sep_v1|b:v>>")
    finally:
        resolver.close()
        STORE.clear()


class _CustomTemplate(jinja2.Template):
    """A user's own template class (importable, so an environment pickles)."""


class _CustomEnvironment(jinja2.Environment):
    template_class = _CustomTemplate


def test_a_custom_template_class_keeps_no_module_with_values() -> None:
    """Rule 1 with a template class of the user's: the extension's fresh
    modules apply to it too (Jinja would keep an imported module, values and
    all, on the template object past invalidate()); the class stays the
    user's (a subclass), and the environment still pickles."""
    import pickle

    STORE.clear()
    STORE.update({"a": {"v": "A1"}})
    resolver = Resolver({"mem": MemoryProvider("mem")})
    templates = {
        "lib": "{% set v %}<<mem|ap_sep_v1|a:v>>{% endset %}",
        "t": "{% import 'lib' as lib %}{{ lib.v }}",
    }
    env = _CustomEnvironment(
        loader=jinja2.DictLoader(templates), extensions=["jinja_apsecrets.SecretsExtension"]
    )
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    try:
        assert issubclass(env.template_class, _CustomTemplate)
        assert env.get_template("t").render() == "A1"
        STORE["a"] = {"v": "A2"}
        resolver.invalidate()
        assert env.get_template("t").render() == "A2"
        # (An environment pickles before its template cache holds templates.)
        fresh = _CustomEnvironment(extensions=["jinja_apsecrets.SecretsExtension"])
        assert pickle.loads(pickle.dumps(fresh)).template_class is env.template_class
    finally:
        resolver.close()
        STORE.clear()
