"""Regressions found by the adversarial review of the merged library.

Each test failed before its fix. The memory provider (tests/support.py) is the
only double here; it stands in for a backend and plays no part in what is
checked (sandbox calls, redaction, ...).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from test_cli import run as cli_run
from test_fork import in_child

from jinja_apsecrets import Resolver, SecretConnectionError, SecretNotFoundError, SecretText
from jinja_apsecrets.dotenv import parse, quote
from jinja_apsecrets.errors import yaml_problem
from jinja_apsecrets.redaction import Redactor

MakeEnv = Callable[..., jinja2.Environment]


class _Model:
    """An object with a method the sandbox must refuse to call."""

    def __init__(self) -> None:
        self.deleted = False

    def delete(self, *args: Any) -> str:
        self.deleted = True
        return "gone"

    delete.alters_data = True  # type: ignore[attr-defined]


def _local_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A CLI project in ``tmp_path``: a ``file`` connection ``local`` whose
    secret ``app`` holds ``pw: value``."""
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "secrets.yaml").write_text(f"app: {{pw: {value}}}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )


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


class TestBase64Redaction:
    """``b64encode`` is the library's own filter: an error quoting a value's
    base64 text (``{{ d[secret(..) | b64encode] }}``) must not print it."""

    VALUE = "SUP3RS3CRETVAL"

    @pytest.mark.parametrize("before", ["", "a", "ab", "abc"])
    @pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
    def test_encoded_value_inside_other_text(
        self, before: str, encode: Callable[[bytes], bytes]
    ) -> None:
        r = Redactor()
        r.add(self.VALUE)
        text = encode(f"{before}{self.VALUE}tail".encode()).decode()
        out = r.redact(f"no attribute '{text}'")
        assert "<redacted>" in out
        whole = base64.b64encode(self.VALUE.encode()).decode()
        for i in range(len(whole) - 4):
            assert whole[i : i + 6] not in out

    def test_evicted_value_forgets_its_encodings(self) -> None:
        r = Redactor(maxsize=1)
        r.add(self.VALUE)
        r.add("another-value")
        text = base64.b64encode(self.VALUE.encode()).decode()
        assert r.redact(text) == text

    def test_cli_error_quoting_base64(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _local_project(tmp_path, monkeypatch, self.VALUE)
        (tmp_path / "leak.j2").write_text('{{ {}[secret("local", "app:pw") | b64encode].x }}\n')
        code, out, err = cli_run("render", "leak.j2", cwd=tmp_path)
        assert code == 1
        assert "UndefinedError" in err
        encoded = base64.b64encode(self.VALUE.encode()).decode()
        assert encoded[:12] not in out + err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
class TestLocksAfterFork:
    """A lock held by another thread of the parent when it forks stays held in
    the child: every process-wide or shared lock is renewed there (issue 10,
    item 8). Each test holds the lock itself while forking, as a thread would."""

    def test_aws_loader_and_log_guard_locks(self) -> None:
        from jinja_apsecrets.providers import _aws_common

        with _aws_common._loader_lock, _aws_common._LogGuard._lock:
            free = in_child(
                lambda: [
                    _aws_common._loader_lock.acquire(blocking=False),
                    _aws_common._LogGuard._lock.acquire(blocking=False),
                ]
            )
        assert free == [True, True]

    def test_redactor_lock(self) -> None:
        redactor = Redactor()
        redactor.add("SUP3RS3CRETVAL")
        with redactor._lock:
            out = in_child(lambda: redactor.redact("x SUP3RS3CRETVAL y"))
        assert out == "x <redacted> y"


class TestComputedPaths:
    """A path computed from a value (``secret("local", secret(..))``) put the
    value into the library's own error, which was never redacted."""

    VALUE = "SUP3RS3CRETVAL"

    def test_library_error_loses_whole_values_only(self) -> None:
        r = Redactor()
        r.update([self.VALUE, "app"])
        error = SecretNotFoundError(
            f"Secret value for key {self.VALUE.lower()} not found",
            provider="local",
            path=f"app:{self.VALUE.lower()}",
        )
        r.redact_exception(error)
        assert error.message == "Secret value for key <redacted> not found"
        assert error.path == "app:<redacted>"  # "app" (3 characters) stays: a name here
        assert self.VALUE.lower() not in str(error)

    def test_library_error_without_values_unchanged(self) -> None:
        r = Redactor()
        r.update(["password-value", "db", "pro"])
        error = SecretNotFoundError("Secret prod/db not found", provider="a", path="prod/db:pw")
        r.redact_exception(error)
        assert (error.message, error.path) == ("Secret prod/db not found", "prod/db:pw")

    @pytest.mark.parametrize(
        "expression",
        [
            'secret("local", secret("local", "app:pw"))',
            'secret("local", "app:" ~ secret("local", "app:pw") | lower)',
        ],
    )
    def test_cli_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expression: str
    ) -> None:
        _local_project(tmp_path, monkeypatch, self.VALUE)
        (tmp_path / "leak.j2").write_text(f"{{{{ {expression} }}}}\n")
        code, out, err = cli_run("render", "leak.j2", cwd=tmp_path)
        assert code == 1
        assert "SECRET_MANAGER_GET_SECRET_FAILED" in err
        assert "<redacted>" in err
        assert self.VALUE.lower() not in (out + err).lower()

    def test_cli_audit_log(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _local_project(tmp_path, monkeypatch, self.VALUE)
        (tmp_path / "leak.j2").write_text(
            '{{ secret("local", "app:" ~ secret("local", "app:pw") | lower) }}\n'
        )
        code, _, _ = cli_run("render", "leak.j2", "--audit-log", "audit.jsonl", cwd=tmp_path)
        assert code == 1
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [x["path"] for x in lines] == ["app:pw", "app:<redacted>"]

    @pytest.mark.parametrize("policy", ["keep", "undefined"])
    def test_cli_missing_warning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
    ) -> None:
        _local_project(tmp_path, monkeypatch, self.VALUE)
        (tmp_path / "t.j2").write_text(
            '{{ secret("local", "app:" ~ secret("local", "app:pw") | lower) }}\n'
        )
        code, _, err = cli_run("render", "t.j2", "-o", "out", "--on-missing", policy, cwd=tmp_path)
        assert code == 0
        assert "warning: secret local|app:<redacted> missing" in err
        assert self.VALUE.lower() not in err.lower()


class TestDotenvQuoting:
    """``resolve -f x.env`` writes values into a dotenv file, which shells
    source and compose interpolates: a value holding ``$`` or a backtick in
    double quotes was expanded there (``pa$word`` read as ``pa``, ``$(id)``
    run). Rule 3 for the programs that read the file."""

    @pytest.mark.parametrize("prefer", ["", "'", '"'])
    @pytest.mark.parametrize("value", ["pa$word", "x`id`y", "$(id)", "a\\b", "p$ss 1"])
    def test_expanding_characters_get_single_quotes(self, value: str, prefer: Any) -> None:
        written = quote(value, prefer)
        assert written == f"'{value}'"
        line = parse(f"V={written}\n").entries[0].entry
        assert line is not None
        assert line.value == value

    def test_double_quoted_fallback_escapes_dollar_and_backtick(self) -> None:
        value = "o'k $(id) `id`\nnext"
        written = quote(value)
        assert written == '"o\'k \\$(id) \\`id\\`\\nnext"'
        line = parse(f"V={written}\n").entries[0].entry
        assert line is not None
        assert line.value == value

    def test_leading_tilde_is_quoted(self) -> None:
        assert quote("~root") == "'~root'"
        assert quote("a~b") == "a~b"

    @pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
    def test_a_shell_sourcing_the_file_reads_the_values(self, tmp_path: Path) -> None:
        values = {
            "A": "pa$word",
            "B": "x`echo ran`y",
            "C": "$(echo ran)",
            "D": "~root",
            "E": "o'k",
            "F": "o'k $(echo ran) `echo ran` $HOME",
        }
        doc = parse("".join(f'{name}="placeholder"\n' for name in values))
        text = doc.render({i + 1: v for i, v in enumerate(values.values())})
        (tmp_path / "out.env").write_text(text)
        script = "set -a; . ./out.env; " + "; ".join(f'printf "%s\\0" "${name}"' for name in values)
        done = subprocess.run(
            ["sh", "-c", script], cwd=tmp_path, capture_output=True, check=True, timeout=30
        )
        read = done.stdout.decode().split("\0")[:-1]
        assert dict(zip(values, read, strict=True)) == values


ANSIBLE_PLAY = """
- hosts: all
  gather_facts: false
  vars:
    apsecrets_config: "{{ playbook_dir }}/apsecrets.yaml"
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - apsecrets.core.template: {src: t.j2, dest: "{{ playbook_dir }}/out.txt"}
    - set_fact:
        l: "{{ lookup('apsecrets.core.secret', 'local|ap_sep_v1|app:tpl') }}"
        f: "{{ {'x': '<<local|ap_sep_v1|app:lk>>', 'y': ['<<local|ap_sep_v1|app:ref>>']}
               | apsecrets.core.resolve }}"
    - copy:
        dest: "{{ playbook_dir }}/facts.txt"
        content: "l={{ l }}\\nfx={{ f.x }}\\nfy={{ f.y[0] }}\\n"
"""


class TestAnsibleValues:
    """Rule 3 through the collection (template action, lookup, filter): a
    value that looks like a template or a reference is written as it is; and
    the filter's values are stored by Ansible without a warning. The
    ``apsecrets_config`` variable is a template for the lookup too."""

    def test_unsafe_makes_plain_strings(self) -> None:
        from ansible_collections.apsecrets.core.plugins.plugin_utils import common

        out = common.unsafe({"a": [SecretText("v1"), (SecretText("v2"),)], "b": SecretText("v3")})
        assert out == {"a": ["v1", ("v2",)], "b": "v3"}
        leaves = [out["a"][0], out["a"][1][0], out["b"]]
        assert not any(isinstance(v, SecretText) for v in leaves)

    def test_play(self, tmp_path: Path) -> None:
        from test_integration_ansible import play

        (tmp_path / "secrets.yaml").write_text(
            "app:\n  tpl: '{{ 7 * 7 }}'\n  ref: '<<local|ap_sep_v1|app:other>>'\n"
            '  other: OTHERVAL\n  lk: \'{{ lookup("env", "HOME") }}\'\n'
        )
        (tmp_path / "apsecrets.yaml").write_text(
            "connections:\n  local: {provider: file, path: secrets.yaml}\n"
        )
        (tmp_path / "t.j2").write_text(
            "a=<<local|ap_sep_v1|app:tpl>>\nb=<<local|ap_sep_v1|app:ref>>\n"
            "c=<<local|ap_sep_v1|app:lk>>\n"
        )
        (tmp_path / "hosts").write_text("h1 ansible_connection=local\n")
        (tmp_path / "site.yml").write_text(ANSIBLE_PLAY)
        result = play(tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert (tmp_path / "out.txt").read_text() == (
            'a={{ 7 * 7 }}\nb=<<local|ap_sep_v1|app:other>>\nc={{ lookup("env", "HOME") }}\n'
        )
        assert (tmp_path / "facts.txt").read_text() == (
            'l={{ 7 * 7 }}\nfx={{ lookup("env", "HOME") }}\nfy=<<local|ap_sep_v1|app:other>>\n'
        )
        assert "OTHERVAL" not in output
        assert "unsupported in variable storage" not in output


class TestSecretsFile:
    """The ``file`` provider: its parse errors quoted the file's text, and an
    empty file (one being rewritten) was an empty mapping, so a lenient
    missing-secret policy printed nothing and exited 0."""

    def _resolver(self, tmp_path: Path, text: str) -> Resolver:
        (tmp_path / "s.yaml").write_text(text)
        return Resolver.from_config(
            {"connections": {"local": {"provider": "file", "path": str(tmp_path / "s.yaml")}}}
        )

    @pytest.mark.parametrize(
        "text",
        [
            "db: {password: *Sup3rS3cretX}\n",
            "db:\n  password: !Sup3rS3cretX x\n",
            'db:\n  password: "Sup3rS3cretX\\q"\n',
        ],
    )
    def test_parse_errors_quote_nothing_of_the_file(self, tmp_path: Path, text: str) -> None:
        found = self._resolver(tmp_path, text).get_many([("local", "db:password")])
        error = found[("local", "db:password")]
        assert isinstance(error, SecretConnectionError)
        assert "at line" in error.message
        assert "Sup3r" not in str(error)
        assert "'q'" not in str(error)

    def test_parser_vocabulary_is_kept(self) -> None:
        import yaml

        with pytest.raises(yaml.YAMLError) as info:
            yaml.safe_load("db: {password: [unclosed\n")
        assert yaml_problem(info.value) == "expected ',' or ']', but got '<stream end>' at line 2"

    @pytest.mark.parametrize("text", ["", "# rotating\n", "~\n"])
    def test_empty_file_is_a_connection_failure(self, tmp_path: Path, text: str) -> None:
        found = self._resolver(tmp_path, text).get_many([("local", "db:password")])
        assert isinstance(found[("local", "db:password")], SecretConnectionError)

    def test_cli_lenient_policy_still_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "secrets.yaml").write_text("")
        (tmp_path / "apsecrets.yaml").write_text(
            "connections:\n  local: {provider: file, path: secrets.yaml}\n"
        )
        (tmp_path / "t.j2").write_text("pw=<<local|ap_sep_v1|db:password>>\n")
        code, _, err = cli_run(
            "render", "t.j2", "-o", "out", "--on-missing", "undefined", cwd=tmp_path
        )
        assert code == 3, err
        assert not (tmp_path / "out").exists()


class TestIntegrationWarnings:
    """The web integrations' missing-secret warning names the path, which a
    template may compute from a value: the value went into the app's log."""

    def test_path_computed_from_a_value(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        import logging

        from jinja_apsecrets.integrations._common import add_secrets

        (tmp_path / "s.yaml").write_text("app: {pw: Sup3rS3cretValue}\n")
        resolver = Resolver.from_config(
            {"connections": {"local": {"provider": "file", "path": str(tmp_path / "s.yaml")}}}
        )
        env = add_secrets(jinja2.Environment(), resolver, on_missing="undefined")
        source = '[{{ secret("local", "app:" ~ secret("local", "app:pw") | lower) }}]'
        with caplog.at_level(logging.WARNING, logger="jinja_apsecrets"):
            assert env.from_string(source).render() == "[]"
        messages = [r.getMessage() for r in caplog.records]
        assert any("local|app:<redacted> missing" in m for m in messages), messages
        assert not any("sup3rs3cretvalue" in m.lower() for m in messages)


class TestImportedModules:
    """Jinja keeps an imported template's rendered module on the (cached)
    template: values stayed there, served after ``invalidate()`` and rotation."""

    SOURCES = {
        "lib.j2": "{% set pw %}<<mem|ap_sep_v1|rot:pw>>{% endset %}"
        "{% macro f() %}<<mem|ap_sep_v1|rot:pw>>{% endmacro %}",
        "fn.j2": "{% macro h() %}{{ secret('mem', 'rot:pw') }}{% endmacro %}",
        "outer.j2": "{% import 'lib.j2' as inner %}{% set pw = inner.pw %}",
        "plain.j2": "{% macro g() %}x{% endmacro %}",
        "main.j2": "{% import 'lib.j2' as lib %}{% from 'fn.j2' import h %}"
        "{% import 'outer.j2' as outer %}{% from 'plain.j2' import g %}"
        "{{ lib.pw }} {{ lib.f() }} {{ h() }} {{ outer.pw }} {{ g() }}",
        "kept.j2": "{% import 'lib.j2' as lib %}{{ lib.pw }} {{ lib.f() }}",
    }

    def _env(
        self, resolver: Resolver, is_async: bool, page: str
    ) -> tuple[jinja2.Environment, Callable[[], str]]:
        """An environment of SOURCES (``rot:pw`` set to "old-value"), and a
        function rendering the template named ``page`` in it, sync or async."""
        import asyncio

        from support import STORE

        STORE["rot"] = {"pw": "old-value"}
        env = jinja2.Environment(
            loader=jinja2.DictLoader(self.SOURCES),
            extensions=["jinja_apsecrets.SecretsExtension"],
            enable_async=is_async,
        )
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]

        def render() -> str:
            t = env.get_template(page)
            return asyncio.run(t.render_async()) if is_async else t.render()

        return env, render

    @pytest.mark.parametrize("is_async", [False, True])
    def test_rotation_is_seen_by_imports(self, resolver: Resolver, is_async: bool) -> None:
        from support import STORE

        env, render = self._env(resolver, is_async, "main.j2")

        try:
            assert render() == "old-value old-value old-value old-value x"
            # lib.j2 reads secrets only through its own runs: its module is
            # kept in the render cache (never on the template) while they
            # are warm, and made again after invalidate().
            modules = env.secret_render_cache.modules  # type: ignore[attr-defined]
            (kept,) = [m for _, t, m in modules.values() if t.name == "lib.j2"]
            assert render() == "old-value old-value old-value old-value x"
            assert [m for _, t, m in modules.values() if t.name == "lib.j2"] == [kept]
            STORE["rot"] = {"pw": "new-value"}
            resolver.invalidate()
            assert render() == "new-value new-value new-value new-value x"
            assert kept not in [m for _, _, m in modules.values()]
        finally:
            del STORE["rot"]
        # Modules holding values are never kept on the template (the template cache).
        for name in ("lib.j2", "fn.j2", "outer.j2"):
            assert env.get_template(name)._module is None
        assert env.get_template("plain.j2")._module is not None  # Jinja's cache kept

    def test_a_changed_template_is_not_served_its_old_module(self, make_env: MakeEnv) -> None:
        sources = {"lib.j2": "{% macro f() %}old <<mem|ap_sep_v1|plain>>{% endmacro %}"}
        env = make_env(loader=jinja2.DictLoader(sources))
        page = "{% import 'lib.j2' as lib %}{{ lib.f() }}"
        assert env.from_string(page).render() == "old plain-Secret-3"
        assert env.from_string(page).render() == "old plain-Secret-3"
        # The same runs (so the same cache key), other code around them.
        sources["lib.j2"] = (
            "{% macro f() %}{% if 1 %}new{% endif %} <<mem|ap_sep_v1|plain>>{% endmacro %}"
        )
        assert env.from_string(page).render() == "new plain-Secret-3"

    @pytest.mark.parametrize("is_async", [False, True])
    def test_a_kept_module_expires_with_its_runs(
        self, resolver: Resolver, clock: Any, is_async: bool
    ) -> None:
        from support import STORE

        _, render = self._env(resolver, is_async, "kept.j2")

        try:
            assert render() == "old-value old-value"
            STORE["rot"] = {"pw": "new-value"}
            clock.advance(resolver.ttl - 1)
            assert render() == "old-value old-value"  # within the TTL: kept
            clock.advance(2)
            assert render() == "new-value new-value"
        finally:
            del STORE["rot"]

    def test_environment_still_pickles(self, make_env: MakeEnv) -> None:
        import pickle

        env = make_env()
        assert pickle.loads(pickle.dumps(env)).template_class is env.template_class


class TestAnsibleErrors:
    """A lookup term computed from a value handed out before put the value
    into the task's error message."""

    def test_error_text_takes_known_values_out(self) -> None:
        from ansible_collections.apsecrets.core.plugins.plugin_utils import common, registry

        registry.reset()
        try:
            registry.remember([("Sup3rS3cretValue", "<<local|ap_sep_v1|app:pw>>")])
            error = SecretNotFoundError(
                "Secret value for key sup3rs3cretvalue not found",
                provider="local",
                path="app:sup3rs3cretvalue",
            )
            text = common.error_text("apsecrets.core.secret", [error])
        finally:
            registry.reset()
        assert "sup3rs3cretvalue" not in text.lower()
        assert "<<local|ap_sep_v1|app:<redacted>>>" in text
