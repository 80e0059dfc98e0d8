"""The jinja-apsecrets command: render, atomic 0600 output, errors and exit codes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jinja_apsecrets.cli import main

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text("app: {db_password: cli-Secret-1, user: app}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "app.conf.j2").write_text(
        "user={{ user }}\npw=<<local|ap_sep_v1|app:db_password>>\n"
    )
    (tmp_path / "vars.yaml").write_text("user: <<local|ap_sep_v1|app:user>>\n")
    return tmp_path


def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(main, list(args))
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


class TestRender:
    def test_to_stdout_keeps_trailing_newline(self, project: Path) -> None:
        code, out, _ = run("render", "app.conf.j2", "--vars", "vars.yaml", cwd=project)
        assert (code, out) == (0, "user=app\npw=cli-Secret-1\n")

    def test_to_file_atomically_with_mode_0600(self, project: Path) -> None:
        code, out, _ = run(
            "render", "app.conf.j2", "--vars", "vars.yaml", "-o", "app.conf", cwd=project
        )
        assert (code, out) == (0, "")
        target = project / "app.conf"
        assert target.read_text() == "user=app\npw=cli-Secret-1\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert [p.name for p in project.iterdir() if p.name.endswith(".tmp")] == []

    def test_config_from_environment(
        self,
        project: Path,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> None:
        elsewhere = tmp_path_factory.mktemp("cwd")
        monkeypatch.setenv("APSECRETS_CONFIG", str(project / "apsecrets.yaml"))
        code, out, _ = run(
            "render",
            str(project / "app.conf.j2"),
            "--vars",
            str(project / "vars.yaml"),
            cwd=elsewhere,
        )
        assert code == 0
        assert "cli-Secret-1" in out


class TestErrors:
    def test_missing_secret_writes_nothing(self, project: Path) -> None:
        (project / "app.conf").write_text("old")
        (project / "bad.j2").write_text("ok\n<<local|ap_sep_v1|app:nope>>\n")
        code, out, err = run("render", "bad.j2", "-o", "app.conf", cwd=project)
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
        assert "cli-Secret-1" not in out + err


def test_quickstart_as_a_real_subprocess(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "jinja-apsecrets"
    out = tmp_path / "app.conf"
    env = {**os.environ, "QUICKSTART_REGION": "eu-west-1"}
    subprocess.run(
        [
            str(exe),
            "render",
            str(QUICKSTART / "app.conf.j2"),
            "-c",
            str(QUICKSTART / "apsecrets.yaml"),
            "--vars",
            str(QUICKSTART / "vars.yaml"),
            "-o",
            str(out),
        ],
        check=True,
        env=env,
    )
    text = out.read_text()
    assert "password = correct horse battery staple" in text
    assert "region = eu-west-1" in text
    assert text.endswith("-----END CERTIFICATE-----\n")
