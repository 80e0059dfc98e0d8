"""The jinja-apsecrets command: render basics, errors and exit codes, --help.

Shared by the other tests of the CLI: :func:`run` (click's runner, in a folder)
and :func:`run_process` (the installed console script, as a real process).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from jinja_apsecrets.cli import main

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
EXE = Path(sys.executable).parent / "jinja-apsecrets"
SECRET = "cli-Secret-1"


def run(
    *args: str,
    cwd: Path | None = None,
    input: str | bytes | None = None,
    env: Mapping[str, str | None] | None = None,
) -> tuple[int, str, str]:
    """Run the command through click's runner: exit code, stdout, stderr."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), input=input, env=env)
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_process(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a real process."""
    return subprocess.run(
        [str(EXE), *args],
        cwd=cwd,
        input=input,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "secrets.yaml").write_text(f"app: {{db_password: {SECRET}, user: app}}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "app.conf.j2").write_text(
        "user={{ user }}\npw=<<local|ap_sep_v1|app:db_password>>\n"
    )
    (tmp_path / "vars.yaml").write_text("user: <<local|ap_sep_v1|app:user>>\n")
    return tmp_path


class TestRender:
    def test_to_stdout_keeps_trailing_newline(self, project: Path) -> None:
        code, out, _ = run("render", "app.conf.j2", "--vars", "vars.yaml", cwd=project)
        assert (code, out) == (0, "user=app\npw=cli-Secret-1\n")

    def test_dash_is_stdout(self, project: Path) -> None:
        code, out, _ = run("render", "app.conf.j2", "--set", "user=x", "-o", "-", cwd=project)
        assert (code, out) == (0, "user=x\npw=cli-Secret-1\n")

    def test_to_file_atomically_with_mode_0600(self, project: Path) -> None:
        code, out, _ = run(
            "render", "app.conf.j2", "--vars", "vars.yaml", "-o", "app.conf", cwd=project
        )
        assert (code, out) == (0, "")
        target = project / "app.conf"
        assert target.read_text() == "user=app\npw=cli-Secret-1\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert [p.name for p in project.iterdir() if p.name.endswith(".tmp")] == []

    def test_into_an_existing_folder_drops_the_suffix(self, project: Path) -> None:
        (project / "out").mkdir()
        code, _, _ = run("render", "app.conf.j2", "--set", "user=u", "-o", "out", cwd=project)
        assert code == 0
        assert (project / "out" / "app.conf").read_text().startswith("user=u\n")

    def test_config_from_environment(
        self,
        project: Path,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> None:
        elsewhere = tmp_path_factory.mktemp("cwd")
        monkeypatch.setenv("APSECRETS_CONFIG", str(project / "apsecrets.yaml"))
        args = ["--vars", str(project / "vars.yaml")]
        code, out, _ = run("render", str(project / "app.conf.j2"), *args, cwd=elsewhere)
        assert code == 0
        assert SECRET in out


class TestErrors:
    @pytest.mark.parametrize(
        "source",
        [
            '{% include secret("local", "app:db_password") %}',
            '{% import secret("local", "app:db_password") as m %}',
            '{{ hosts[secret("local", "app:db_password") | trim] }}',
        ],
    )
    def test_template_errors_quoting_a_value_are_redacted(self, project: Path, source: str) -> None:
        (project / "leak.j2").write_text(source + "\n")
        code, out, err = run("render", "leak.j2", "--set", "hosts.x=1", cwd=project)
        assert code == 1
        assert SECRET not in out + err
        assert "<redacted>" in err

    def test_missing_secret_writes_nothing(self, project: Path) -> None:
        (project / "app.conf").write_text("old")
        (project / "bad.j2").write_text("ok\n<<local|ap_sep_v1|app:nope>>\n")
        code, _, err = run("render", "bad.j2", "-o", "app.conf", cwd=project)
        assert code == 1
        assert (project / "app.conf").read_text() == "old"
        assert "SECRET_MANAGER_GET_SECRET_FAILED" in err
        assert "bad.j2:2" in err
        assert "hint:" in err

    def test_invalid_reference_is_exit_1_with_line(self, project: Path) -> None:
        (project / "bad.j2").write_text("\n<<local|ap_sep_v1|app:>>\n")
        code, _, err = run("render", "bad.j2", cwd=project)
        assert code == 1
        assert "VALIDATION" in err
        assert "bad.j2:2" in err

    def test_no_config_is_exit_2(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "t.j2").write_text("x")
        code, _, err = run("render", "t.j2", cwd=tmp_path)
        assert code == 2
        assert "no configuration" in err

    def test_bad_usage_is_exit_2(self, project: Path) -> None:
        assert run("render", "missing.j2", cwd=project)[0] == 2
        assert run("render", "app.conf.j2", "--mode", "0999", cwd=project)[0] == 2
        assert run("render", "app.conf.j2", "--set", "novalue", cwd=project)[0] == 2
        assert run("render", ".", cwd=project)[0] == 2  # a folder needs -o
        assert run("render", "app.conf.j2", "-o", "app.conf.j2", cwd=project)[0] == 2

    def test_unreachable_backend_is_exit_3(self, project: Path) -> None:
        (project / "apsecrets.yaml").write_text(
            "connections:\n  local: {provider: file, path: gone.yaml}\n"
        )
        (project / "t.j2").write_text("pw=<<local|ap_sep_v1|app:db_password>>\n")
        code, _, err = run("render", "t.j2", cwd=project)
        assert code == 3
        assert "SECRET_MANAGER_CONNECTION_FAILED" in err

    def test_error_output_has_no_value(self, project: Path) -> None:
        (project / "bad.j2").write_text("<<local|ap_sep_v1|app:db_password>> {{ undefined_var }}\n")
        code, out, err = run("render", "bad.j2", cwd=project)
        assert code == 1
        assert "'undefined_var' is undefined (bad.j2:1)" in err
        assert SECRET not in out + err

    def test_a_value_used_as_a_key_is_not_shown(self, project: Path) -> None:
        (project / "bad.j2").write_text("{{ {}[pw] }}\n")
        args = ["--set", "pw=<<local|ap_sep_v1|app:db_password>>"]
        code, _, err = run("render", "bad.j2", *args, cwd=project)
        assert code == 1
        assert "UndefinedError" in err
        assert SECRET not in err

    def test_python_error_messages_quoting_a_value_are_redacted(self, project: Path) -> None:
        (project / "secrets.yaml").write_text("app: {fmt: '{Leak-9}'}\n")
        (project / "bad.j2").write_text("x\n{{ secret('local', 'app:fmt').format() }}\n")
        code, _, err = run("render", "bad.j2", cwd=project)
        assert code == 1
        assert "error: KeyError: '<redacted>' (bad.j2:2)" in err
        assert "leak" not in err.lower()


class TestRedaction:
    """Issue 10 item 3: no printed error holds a value, a 4-character piece of
    one (any case) or its reversal; other messages are shown in full."""

    @pytest.mark.parametrize(
        "expression",
        [
            'secret("local", "app:db_password") | upper',
            'secret("local", "app:db_password")[2:9]',
            'secret("local", "app:db_password") | reverse',
            'secret("local", "app:db_password") | list | reverse | join',
            '"x/" ~ secret("local", "app:db_password") | lower',
            'secret("local", "app:db_password") | join("-")',
        ],
    )
    def test_transformed_values(self, project: Path, expression: str) -> None:
        (project / "leak.j2").write_text(f"{{% include {expression} %}}\n")
        code, out, err = run("render", "leak.j2", cwd=project)
        assert code == 1
        assert "<redacted>" in err
        low = (out + err).lower()
        for i in range(len(SECRET) - 3):
            piece = SECRET[i : i + 4].lower()
            assert piece not in low
            assert piece[::-1] not in low

    def test_a_value_of_three_characters(self, project: Path) -> None:
        (project / "secrets.yaml").write_text("app: {pin: q7z}\n")
        (project / "leak.j2").write_text('{% include secret("local", "app:pin") | upper %}\n')
        code, _, err = run("render", "leak.j2", cwd=project)
        assert code == 1
        assert "q7z" not in err.lower()
        assert "z7q" not in err.lower()

    def test_messages_without_a_value_are_shown(self, project: Path) -> None:
        (project / "add.j2").write_text("{{ n + 1 }}\n")
        code, _, err = run("render", "add.j2", "--set", "n=1", cwd=project)
        assert code == 1
        assert 'error: TypeError: can only concatenate str (not "int") to str (add.j2:1)' in err
        assert "--set values are strings" in err
        assert "--set-json" in err

    def test_set_json(self, project: Path) -> None:
        (project / "add.j2").write_text("{{ n + 1 }} {{ a.b | join(',') }} {{ on }}\n")
        args = ["--set-json", "n=41", "--set-json", 'a.b=["x", "y"]', "--set-json", "on=true"]
        code, out, _ = run("render", "add.j2", *args, cwd=project)
        assert (code, out) == (0, "42 x,y True\n")

    def test_set_json_rejects_what_is_not_json_without_echoing_it(self, project: Path) -> None:
        (project / "add.j2").write_text("{{ n }}\n")
        code, _, err = run("render", "add.j2", "--set-json", "n=hunter2x", cwd=project)
        assert code == 2
        assert "not JSON" in err
        assert "hunter2x" not in err


class TestHints:
    """Issue 15 item 8: each error kind its own hint, or none."""

    def _hints(self, err: str) -> list[str]:
        return [line for line in err.splitlines() if line.startswith("hint:")]

    def test_no_config(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "t.j2").write_text("x\n")
        code, _, err = run("render", "t.j2", cwd=tmp_path)
        assert code == 2
        assert "no configuration" in err
        assert "reference format" not in err

    @pytest.mark.parametrize(
        ("config", "expected"),
        [
            ("connections:\n  local: {provider: file, pathh: secrets.yaml}\n", "pathh"),
            ("connections:\n  local: {provider: file, path: secrets.yaml}\n  x: [\n", "line"),
            ("cache: {ttl: 1}\nconnections: {local: {provider: nope}}\n", "unknown provider"),
        ],
    )
    def test_config_errors(self, project: Path, config: str, expected: str) -> None:
        (project / "apsecrets.yaml").write_text(config)
        code, _, err = run("render", "app.conf.j2", cwd=project)
        assert code == 2
        assert expected in err
        assert "reference format" not in err

    def test_missing_sdk(self, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from jinja_apsecrets import providers

        # A provider module whose SDK is not installed (a stand-in for boto3 missing),
        # registered only for this test.
        (project / "aps_needs_sdk.py").write_text("import aps_no_such_sdk\n")
        monkeypatch.syspath_prepend(str(project))
        providers.available_providers()  # entry points loaded first
        monkeypatch.setitem(providers._registry, "needs-sdk", "aps_needs_sdk:Provider")
        (project / "apsecrets.yaml").write_text("connections:\n  x: {provider: needs-sdk}\n")
        code, _, err = run("render", "app.conf.j2", cwd=project)
        assert code == 2
        assert "needs aps_no_such_sdk, which is not installed" in err
        assert "reference format" not in err

    def test_missing_config_file(self, project: Path) -> None:
        code, _, err = run("render", "app.conf.j2", "-c", "nope.yaml", cwd=project)
        assert code == 2
        assert "config file not found" in err
        assert "reference format" not in err

    def test_wrong_master_key(self, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from jinja_apsecrets.crypto import encrypt_value, generate_key, load_key

        key = load_key({"APSECRETS_MASTER_KEY": generate_key()})
        value = encrypt_value("x", key, field="connections.e.prefix")
        (project / "apsecrets.yaml").write_text(
            f"connections:\n  e: {{provider: env, prefix: '{value}'}}\n"
        )
        monkeypatch.setenv("APSECRETS_MASTER_KEY", generate_key())
        code, _, err = run("render", "app.conf.j2", cwd=project)
        assert code == 2
        assert "cannot decrypt" in err
        assert "reference format" not in err
        assert any("APSECRETS_MASTER_KEY" in h for h in self._hints(err))

    def test_reference_format_hint_only_for_paths(self, project: Path) -> None:
        (project / "bad.j2").write_text("<<local|ap_sep_v1|:nokey>>\n")
        code, _, err = run("render", "bad.j2", cwd=project)
        assert code == 1
        assert self._hints(err) == [
            "hint: check the reference format (aws: secretName:jsonKey, "
            "hashicorp: mount/data/path/key, onepassword: op://vault/item/field)"
        ]
        (project / "bad.j2").write_text("<<other|ap_sep_v1|a:b>>\n")
        code, _, err = run("render", "bad.j2", cwd=project)
        assert "reference format" not in err


class TestHelp:
    @pytest.mark.parametrize(
        "command", ["", "render", "refs", "check", "resolve", "keygen", "encrypt"]
    )
    def test_every_command_documents_exit_codes(self, command: str) -> None:
        code, out, _ = run(*command.split(), "--help")
        assert code == 0
        assert "Exit codes:" in out
        for line in ("0  success", "1  render or lint failure", "2  usage", "3  a secret manager"):
            assert line in out

    def test_each_command_describes_itself(self) -> None:
        _, refs_help, _ = run("refs", "--help")
        assert "References anywhere in it are resolved" not in refs_help
        assert "dropped from output names" not in refs_help
        assert "--strict" in refs_help
        _, render_help, _ = run("render", "--help")
        assert "References anywhere in it are resolved" in render_help
        assert "dropped from output names" in render_help
        assert "--set-json" in render_help
        _, encrypt_help, _ = run("encrypt", "--help")
        assert "--field" in encrypt_help
        for command in ("check", "resolve"):
            _, text, _ = run(command, "--help")
            assert "templates" not in text

    def test_version(self) -> None:
        code, out, _ = run("--version")
        assert code == 0
        assert "jinja-apsecrets" in out


class TestAsProcess:
    def test_quickstart(self, tmp_path: Path) -> None:
        out = tmp_path / "app.conf"
        q = QUICKSTART
        args = ["-c", str(q / "apsecrets.yaml"), "--vars", str(q / "vars.yaml"), "-o", str(out)]
        env = {**os.environ, "QUICKSTART_REGION": "eu-west-1"}
        done = run_process("render", str(q / "app.conf.j2"), *args, env=env)
        assert done.returncode == 0, done.stderr
        text = out.read_text()
        assert "password = correct horse battery staple" in text
        assert "region = eu-west-1" in text
        assert text.endswith("-----END CERTIFICATE-----\n")
        assert stat.S_IMODE(out.stat().st_mode) == 0o600

    def test_failure_exit_code_and_message(self, project: Path) -> None:
        (project / "bad.j2").write_text("<<local|ap_sep_v1|app:nope>>\n")
        done = run_process("render", "bad.j2", cwd=project)
        assert done.returncode == 1
        assert "SECRET_MANAGER_GET_SECRET_FAILED" in done.stderr
        assert done.stdout == ""
