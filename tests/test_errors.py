"""Errors: the spec's codes and JSON shape, built-in bases, no value leaks."""

from __future__ import annotations

import logging
import pickle
import traceback
from typing import Any

import jinja2
import pytest

from jinja_apsecrets import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretReferenceSyntaxError,
    SecretsError,
    SecretValidationError,
)
from jinja_apsecrets.cli._environ import Source, resolve_values
from jinja_apsecrets.cli._rendering import resolve_data
from jinja_apsecrets.resolver import Resolver

PW = "pw-Secret-1"


class TestShape:
    def test_spec_json_shape(self) -> None:
        err = SecretNotFoundError(
            "Secret value for key token not found", provider="aws", path="prod/keys:token"
        )
        assert err.to_dict() == {
            "code": "SECRET_MANAGER_GET_SECRET_FAILED",
            "message": "Secret value for key token not found",
            "provider": "aws",
            "request": {"path": "prod/keys:token"},
        }

    def test_validation_shape(self) -> None:
        err = SecretValidationError("Wrong key format. Should be secretName:secretJsonKey")
        assert err.to_dict() == {
            "code": "VALIDATION",
            "message": "Wrong key format. Should be secretName:secretJsonKey",
        }

    @pytest.mark.parametrize(
        ("cls", "base"),
        [
            (SecretValidationError, ValueError),
            (SecretNotFoundError, LookupError),
            (SecretConnectionError, ConnectionError),
        ],
    )
    def test_builtin_bases(self, cls: type[SecretsError], base: type[Exception]) -> None:
        assert issubclass(cls, base)
        assert issubclass(cls, SecretsError)

    def test_pickle_keeps_fields(self) -> None:
        err = SecretNotFoundError("m", provider="p", path="x", template="t", lineno=3, hint="h")
        clone = pickle.loads(pickle.dumps(err))
        assert (
            clone.message,
            clone.provider,
            clone.path,
            clone.template,
            clone.lineno,
            clone.hint,
        ) == ("m", "p", "x", "t", 3, "h")


class TestNoLeaks:
    def test_missing_key_error_has_no_value(
        self, env: jinja2.Environment, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        with pytest.raises(SecretNotFoundError) as info:
            env.from_string(
                "<<mem|ap_sep_v1|prod/db:password>> <<mem|ap_sep_v1|prod/db:nokey>>"
            ).render()
        rendered = (
            "".join(traceback.format_exception(info.value))
            + repr(info.value)
            + str(info.value.to_dict())
        )
        assert PW not in rendered
        assert PW not in caplog.text

    def test_non_object_secret_error_has_no_value(self, resolver: Any) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("mem", "plain:key")
        assert "plain-Secret-3" not in str(info.value) + repr(info.value)

    def test_values_hidden_in_reprs(self, env: jinja2.Environment) -> None:
        value = env.from_string("{{ secret('mem', 'prod/db:password') }}").environment.globals[
            "secret"
        ]
        assert value
        from jinja_apsecrets import SecretText

        assert PW not in repr(SecretText(PW))

    def test_lenient_policy_logs_no_value(
        self, make_env: Any, resolver: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        env = make_env()
        env.install_secret_resolver(resolver, on_missing="undefined")
        env.from_string(
            "<<mem|ap_sep_v1|prod/db:password>><<mem|ap_sep_v1|prod/db:nokey>>"
        ).render()
        assert "prod/db:nokey" in caplog.text
        assert PW not in caplog.text


class TestSharedErrors:
    def test_each_raise_is_a_fresh_error_with_its_own_location(
        self, make_env: Any, resolver: Any
    ) -> None:
        env = make_env(
            loader=jinja2.DictLoader(
                {"a.txt": "\n\n<<mem|ap_sep_v1|gone:x>>", "b.txt": "<<mem|ap_sep_v1|gone:x>>"}
            )
        )
        seen = []
        for name in ("a.txt", "b.txt", "a.txt"):
            with pytest.raises(SecretNotFoundError) as info:
                env.get_template(name).render()
            seen.append(info.value)
        assert [(e.template, e.lineno) for e in seen] == [("a.txt", 3), ("b.txt", 1), ("a.txt", 3)]
        assert len({id(e) for e in seen}) == 3

    def test_resolver_raises_copies(self, resolver: Any) -> None:
        errors = []
        for _ in range(3):
            with pytest.raises(SecretNotFoundError) as info:
                resolver.get("mem", "gone:x")
            errors.append(info.value)
        assert len({id(e) for e in errors}) == 3
        assert all(len(traceback.extract_tb(e.__traceback__)) < 10 for e in errors)


class TestCopy:
    """One way to copy an error with new fields: ``copy(**changes)`` on ``__reduce__``."""

    @pytest.mark.parametrize(
        "error",
        [
            SecretNotFoundError("gone", provider="a", path="p", hint="look"),
            SecretConnectionError("down", provider="a"),
            SecretValidationError("bad"),
            SecretReferenceSyntaxError("bad ref", 3, "t.j2", "t.j2", provider="a", path="p"),
        ],
    )
    def test_keeps_class_and_fields_and_changes_only_what_is_asked(self, error: Any) -> None:
        copy = error.copy(provider="b", lineno=7)
        assert type(copy) is type(error)
        assert copy is not error
        assert (copy.provider, copy.lineno) == ("b", 7)
        assert (copy.message, copy.path, copy.template, copy.hint) == (
            error.message,
            error.path,
            error.template,
            error.hint,
        )
        assert error.provider != "b"  # the original is untouched

    def test_message_and_unknown_fields(self) -> None:
        error = SecretNotFoundError("gone", provider="a")
        assert error.copy(message="other").to_dict()["message"] == "other"
        with pytest.raises(TypeError, match="nope"):
            error.copy(nope=1)

    def test_syntax_error_template_is_jinjas_name(self) -> None:
        error = SecretReferenceSyntaxError("bad ref", 3, None, None)
        located = error.locate("t.j2", 9)
        assert (located.template, located.lineno, located.name) == ("t.j2", 3, "t.j2")
        assert pickle.loads(pickle.dumps(located)).template == "t.j2"


class TestCopiesAtTheCallers:
    """The CLI's helpers re-raise a lookup's error located at its source: the
    same class and fields (hint included), only template and line changed."""

    @pytest.mark.parametrize("ref", ["mem|ap_sep_v1|gone:x", "nope|ap_sep_v1|a:b"])
    def test_environment_values(self, resolver: Resolver, ref: str) -> None:
        conn, _, path = ref.split("|", 2)
        looked_up = resolver.lookup({(conn, path)})[(conn, path)][0]
        assert isinstance(looked_up, SecretsError)
        with pytest.raises(SecretsError) as info:
            resolve_values(
                resolver,
                {"DB": f"<<{ref}>>"},
                {"DB": Source("app.env", 3)},
                audit_name="app.env",
                on_missing="error",
            )
        _same_but_located(info.value, looked_up, "app.env", 3)

    def test_vars_data(self, resolver: Resolver) -> None:
        looked_up = resolver.lookup({("mem", "gone:x")})[("mem", "gone:x")][0]
        assert isinstance(looked_up, SecretsError)
        with pytest.raises(SecretsError) as info:
            resolve_data(resolver, {"db": ["<<mem|ap_sep_v1|gone:x>>"]}, "vars.yaml", "error")
        _same_but_located(info.value, looked_up, "vars.yaml", None)


def _same_but_located(
    error: SecretsError, original: SecretsError, template: str, lineno: int | None
) -> None:
    assert type(error) is type(original)
    assert (error.message, error.provider, error.path, error.hint) == (
        original.message,
        original.provider,
        original.path,
        original.hint,
    )
    assert (error.template, error.lineno) == (template, lineno)
