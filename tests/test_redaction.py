"""The redaction rule: no value, no 4-character piece of one (any case), no reversal."""

from __future__ import annotations

import pickle
from pathlib import Path

import jinja2
import pytest

from jinja_apsecrets import Resolver
from jinja_apsecrets.redaction import Redactor

VALUE = "SUP3RS3CRETVAL"


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    r.add(VALUE)
    return r


class TestRule:
    @pytest.mark.parametrize(
        "derived",
        [
            VALUE,
            VALUE.lower(),
            VALUE.swapcase(),
            VALUE[3:9],
            VALUE[::-1],
            VALUE[::-1].lower(),
            VALUE[:4],
            f"prefix-{VALUE}-suffix",
            "-".join(VALUE),
            " ".join(VALUE.lower()),
            ",".join(VALUE[::-1]),
        ],
    )
    def test_derived_values_are_redacted(self, redactor: Redactor, derived: str) -> None:
        text = redactor.redact(f"template not found: {derived}")
        assert text.startswith("template not found: ")
        assert "<redacted>" in text
        low = text.lower()
        squeezed = {low[0::2], low[1::2], low}
        for i in range(len(VALUE) - 3):
            piece = VALUE[i : i + 4].lower()
            for seen in squeezed:
                assert piece not in seen
                assert piece[::-1] not in seen

    def test_messages_without_a_piece_are_unchanged(self, redactor: Redactor) -> None:
        message = 'can only concatenate str (not "int") to str'
        assert redactor.redact(message) == message
        assert not redactor.holds_value(message)
        # 3 characters of a value are not a piece of it.
        assert redactor.redact("x SUP y") == "x SUP y"

    def test_short_values(self) -> None:
        r = Redactor()
        r.update(["abc", "7"])
        assert r.redact("key ABC here, and cba") == "key <redacted> here, and <redacted>"
        # 1 or 2 characters: only as a word of their own.
        assert r.redact("port 7, line 17") == "port <redacted>, line 17"

    def test_unicode_case_folding_keeps_positions(self) -> None:
        r = Redactor()
        r.add("\u017fecret-Straße")  # a long s, which | upper turns into S
        assert "<redacted>" in r.redact("name SECRET-STRASSE")
        assert r.redact("İstanbul ok") == "İstanbul ok"


class TestLifetime:
    def test_clear_forgets_values(self, redactor: Redactor) -> None:
        redactor.clear()
        assert len(redactor) == 0
        assert redactor.redact(VALUE) == VALUE

    def test_bounded(self) -> None:
        r = Redactor(maxsize=2)
        r.update(["alpha-1111", "bravo-2222", "charlie-3333"])
        assert r.redact("alpha-1111") == "alpha-1111"
        assert r.redact("charlie-3333") == "<redacted>"

    def test_pickle_and_repr_hold_no_value(self, redactor: Redactor) -> None:
        assert VALUE not in repr(redactor)
        data = pickle.dumps(redactor)
        assert VALUE.encode() not in data
        assert len(pickle.loads(data)) == 0


class TestResolverHook:
    def test_on_value_sees_every_value_handed_out(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APS_REDACT_T", VALUE)
        seen: list[str] = []
        resolver = Resolver.from_config({"connections": {"env": None}}, on_value=seen.append)
        assert resolver.get("env", "APS_REDACT_T") == VALUE
        resolver.get("env", "APS_REDACT_T")
        assert seen == [VALUE, VALUE]

    def test_exception_redacted_in_place(self, redactor: Redactor) -> None:
        env = jinja2.Environment(loader=jinja2.DictLoader({}))
        with pytest.raises(jinja2.TemplateNotFound) as info:
            env.from_string("{% include name | lower %}").render(name=VALUE)
        redactor.redact_exception(info.value)
        assert str(info.value) == "<redacted>"
        assert info.value.name == "<redacted>"

    def test_cli_values_do_not_outlive_the_run(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from click.testing import CliRunner

        from jinja_apsecrets.cli import _options, main

        runs: list[_options.CommandRun] = []
        real = _options.CommandRun.__init__

        def spy(self: _options.CommandRun) -> None:
            real(self)
            runs.append(self)

        monkeypatch.setattr(_options.CommandRun, "__init__", spy)
        monkeypatch.setenv("APS_REDACT_T", VALUE)
        (tmp_path / "apsecrets.yaml").write_text("connections:\n  env: {}\n")
        monkeypatch.setenv("APSECRETS_CONFIG", str(tmp_path / "apsecrets.yaml"))
        result = CliRunner().invoke(main, ["resolve", "env|ap_sep_v1|APS_REDACT_T"])
        assert (result.exit_code, result.stdout) == (0, VALUE + "\n")
        (run,) = runs
        # The run saw the value, and forgot it when the command's context closed.
        assert len(run.redactor) == 0
        assert run.redactor.redact(VALUE) == VALUE


class TestDocs:
    README = Path(__file__).resolve().parent.parent / "README.md"

    def test_library_users_learn_which_errors_quote_values(self) -> None:
        text = self.README.read_text()
        security = text[text.index("## Security rules") :]
        for name in ("TemplateNotFound", "UndefinedError", "Redactor", "on_value=redactor.add"):
            assert name in security

    def test_web_integrations_say_how_config_changes_apply(self) -> None:
        text = self.README.read_text()
        web = text[text.index("## Web frameworks") : text.index("### FastAPI")]
        assert "resolver.reload()" in web
        assert "restart" in web
        assert "once per reference per cache TTL" in web


class TestIntegrationEnvironment:
    def test_pickles_without_values_and_keeps_redacting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from jinja_apsecrets.integrations._common import add_secrets

        monkeypatch.setenv("APS_REDACT_T", VALUE)
        resolver = Resolver.from_config({"connections": {"env": None}})
        env = add_secrets(jinja2.Environment(loader=jinja2.DictLoader({})), resolver)
        assert env.from_string("<<env|ap_sep_v1|APS_REDACT_T>>").render() == VALUE
        data = pickle.dumps(env)
        assert VALUE.encode() not in data
        copy = pickle.loads(data)
        with pytest.raises(jinja2.TemplateNotFound) as info:
            copy.from_string("{% include secret('env', 'APS_REDACT_T') | lower %}").render()
        assert str(info.value) == "<redacted>"
