"""Regressions found by the adversarial review of the merged library.

Each test failed before its fix. The memory provider (tests/support.py) is the
only double here; it stands in for a backend and plays no part in what is
checked (sandbox calls, redaction, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment, SecurityError

MakeEnv = Callable[..., jinja2.Environment]


class _Model:
    """An object with a method the sandbox must refuse to call."""

    def __init__(self) -> None:
        self.deleted = False

    def delete(self, *args: Any) -> str:
        self.deleted = True
        return "gone"

    delete.alters_data = True  # type: ignore[attr-defined]


class TestSandboxCalls:
    """A call written ``secret(...)`` is compiled through the extension's call
    filter; in a sandbox it must still pass the sandbox's callable check."""

    def test_unsafe_callable_is_refused(self, make_env: MakeEnv) -> None:
        env = make_env(SandboxedEnvironment)
        model = _Model()
        source = "{% set secret = o.delete %}{{ secret('a', 'b') }}"
        with pytest.raises(SecurityError):
            env.from_string(source).render(o=model)
        assert not model.deleted

    def test_secret_still_works_in_sandbox(self, make_env: MakeEnv) -> None:
        env = make_env(SandboxedEnvironment)
        out = env.from_string("{{ secret('mem', 'prod/db:username') }}").render()
        assert out == "admin"

    def test_safe_callable_still_called(self, make_env: MakeEnv) -> None:
        env = make_env(SandboxedEnvironment)
        out = env.from_string("{% set secret = f %}{{ secret('a', 'b') }}").render(
            f=lambda a, b: a + b
        )
        assert out == "ab"


class TestInternalFilters:
    """The filters the compiled code calls cannot be written in a template: by
    hand, the call filter skipped the sandbox, and the prefetch filter stored
    runs the template chose under any cache key (another template's output)."""

    @pytest.mark.parametrize(
        "source",
        [
            "{{ o.delete | __apsecrets_call__('a', 'b') }}",
            "{{ 'k' | __apsecrets_prefetch__(none, false, ('', (), (), ())) }}",
            "{% filter __apsecrets_prefetch__(none, false, ('', (), (), ())) %}k{% endfilter %}",
            "{{ 1 | __apsecrets_value__ }}",
        ],
    )
    @pytest.mark.parametrize("cls", [jinja2.Environment, SandboxedEnvironment])
    def test_refused_at_compile_time(
        self, make_env: MakeEnv, source: str, cls: type[jinja2.Environment]
    ) -> None:
        env = make_env(cls)
        model = _Model()
        with pytest.raises(jinja2.TemplateSyntaxError, match="internal to jinja_apsecrets"):
            env.from_string(source).render(o=model)
        assert not model.deleted

    def test_compiled_calls_still_work(self, make_env: MakeEnv) -> None:
        env = make_env(SandboxedEnvironment)
        out = env.from_string(
            "<<mem|ap_sep_v1|prod/db:username>> {{ secret('mem', 'prod/db:username') }}"
        ).render()
        assert out == "admin admin"
