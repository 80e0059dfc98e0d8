"""``check``: live connection tests against the local providers, a real
``moto_server`` and a real ``bao server -dev``; one line each, hints on failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import Server, closed_port
from test_cli import run, run_process

from jinja_apsecrets.providers.aws import AwsProvider
from jinja_apsecrets.providers.hashicorp import VaultProvider
from jinja_apsecrets.providers.local import FileProvider


def write_config(folder: Path, connections: str) -> Path:
    (folder / "apsecrets.yaml").write_text("connections:\n" + connections)
    return folder


class TestLocal:
    @pytest.fixture
    def project(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "secrets.yaml").write_text("app: {k: v}\n")
        return write_config(
            tmp_path,
            "  env: {}\n"
            "  local: {provider: file, path: secrets.yaml}\n"
            "  gone: {provider: file, path: gone.yaml}\n",
        )

    def test_one_line_each_and_hints_on_failure(self, project: Path) -> None:
        code, out, _ = run("check", cwd=project)
        assert code == 3
        lines = out.splitlines()
        assert lines[0].startswith("env (env): OK (")
        assert lines[1].startswith("local (file): OK (")
        assert lines[2].startswith("gone (file): SECRET_MANAGER_CONNECTION_FAILED: Cannot read")
        assert lines[3] == "  hint: Check the connection's path field"
        assert lines[4:] == [f"  hint: {h}" for h in FileProvider.troubleshooting]

    def test_named_connections_only(self, project: Path) -> None:
        code, out, _ = run("check", "local", "env", cwd=project)
        assert code == 0
        assert [line.split(":")[0] for line in out.splitlines()] == ["local (file)", "env (env)"]

    def test_unknown_name_is_exit_2(self, project: Path) -> None:
        code, _, err = run("check", "nope", cwd=project)
        assert code == 2
        assert "unknown connection nope; configured: env, local, gone" in err

    def test_no_connections_is_exit_2(self, project: Path) -> None:
        (project / "apsecrets.yaml").write_text("connections: {}\n")
        assert run("check", cwd=project)[0] == 2


# -- real servers ------------------------------------------------------------------------


def aws(url: str) -> str:
    return (
        f"{{provider: aws, region: us-east-1, endpointUrl: '{url}', accessKeyId: testing, "
        "secretAccessKey: testing, connectTimeout: 1, maxAttempts: 1}\n"
    )


@pytest.mark.server
class TestServers:
    @pytest.fixture
    def project(self, tmp_path: Path, moto: Server, bao: Server) -> Path:
        return write_config(
            tmp_path,
            f"  aws: {aws(moto.url)}"
            f"  hashicorp: {{url: '{bao.url}', token: root}}\n"
            f"  aws-down: {aws(f'http://127.0.0.1:{closed_port()}')}"
            f"  vault-bad: {{provider: hashicorp, url: '{bao.url}', token: not-a-token}}\n",
        )

    def test_moto_and_bao_ok(self, project: Path) -> None:
        code, out, _ = run("check", "aws", "hashicorp", cwd=project)
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].startswith("aws (aws): OK (")
        assert lines[1].startswith("hashicorp (hashicorp): OK (")

    def test_unreachable_aws_is_exit_3_with_the_spec_hints(self, project: Path) -> None:
        code, out, _ = run("check", "aws-down", cwd=project)
        assert code == 3
        lines = out.splitlines()
        assert lines[0].startswith("aws-down (aws): SECRET_MANAGER_CONNECTION_FAILED: Cannot reach")
        assert lines[1].startswith("  hint: Check network connectivity")  # the error's own
        assert lines[2:] == [f"  hint: {h}" for h in AwsProvider.troubleshooting]

    def test_a_refused_vault_token_is_exit_3_with_the_spec_hints(self, project: Path) -> None:
        code, out, _ = run("check", "vault-bad", cwd=project)
        assert code == 3
        lines = out.splitlines()
        assert lines[0].startswith("vault-bad (hashicorp): SECRET_MANAGER_CONNECTION_FAILED: ")
        # A token connection's hints talk about tokens, not AppRole (issue 15, item 10).
        token_hints = VaultProvider("v", {"url": "http://x", "token": "t"}).troubleshooting
        assert lines[1:] == [f"  hint: {h}" for h in token_hints]
        assert "not-a-token" not in out

    def test_as_a_real_process(self, project: Path) -> None:
        done = run_process("check", "-v", cwd=project)
        assert done.returncode == 3, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("aws (aws): OK (")
        assert lines[1].startswith("hashicorp (hashicorp): OK (")
        assert "aws-down (aws): SECRET_MANAGER_CONNECTION_FAILED: " in done.stdout
        assert "connections: aws, hashicorp, aws-down, vault-bad" in done.stderr
