"""``resolve`` (one value, or a document), ``keygen`` and ``encrypt``."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from test_cli import SECRET, run, run_process

from jinja_apsecrets.crypto import KEY_ENV, decrypt_value, generate_key, load_key


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    (tmp_path / "secrets.yaml").write_text(
        f"app: {{db_password: {SECRET}, user: app}}\n" + 'tls: {key: "line1\\nline2\\n"}\n'
    )
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    return tmp_path


class TestResolveOne:
    @pytest.mark.parametrize(
        "reference",
        [
            "<<local|ap_sep_v1|app:db_password>>",
            "{{local|ap_sep_v1|app:db_password}}",
            "local|ap_sep_v1|app:db_password",
            "  local|ap_sep_v1| app:db_password \n",
        ],
    )
    def test_every_form_prints_the_value(self, project: Path, reference: str) -> None:
        assert run("resolve", reference, cwd=project)[:2] == (0, SECRET + "\n")

    def test_no_newline_and_to_a_file(self, project: Path) -> None:
        code, out, _ = run("resolve", "local|ap_sep_v1|tls:key", "-n", "-o", "k.pem", cwd=project)
        assert (code, out) == (0, "")
        assert (project / "k.pem").read_text() == "line1\nline2\n"
        assert stat.S_IMODE((project / "k.pem").stat().st_mode) == 0o600

    def test_not_a_reference_is_exit_2_and_not_echoed(self, project: Path) -> None:
        code, _, err = run("resolve", "hunter2", cwd=project)
        assert code == 2
        assert "hunter2" not in err

    def test_missing_invalid_and_lenient(self, project: Path) -> None:
        assert run("resolve", "local|ap_sep_v1|app:nope", cwd=project)[0] == 1
        assert run("resolve", "local|ap_sep_v1|:x", cwd=project)[0] == 1
        assert run("resolve", "other|ap_sep_v1|a:b", cwd=project)[0] == 1
        ref = "<<local|ap_sep_v1|app:nope>>"
        code, out, err = run("resolve", ref, "--on-missing", "keep", cwd=project)
        assert (code, out) == (0, ref + "\n")
        assert "left as its reference text" in err
        assert run("resolve", ref, "--on-missing", "undefined", cwd=project)[:2] == (0, "\n")

    def test_audit_log(self, project: Path) -> None:
        run("resolve", "local|ap_sep_v1|app:user", "--audit-log", "a.jsonl", cwd=project)
        (record,) = [json.loads(x) for x in (project / "a.jsonl").read_text().splitlines()]
        assert (record["connection"], record["path"], record["outcome"]) == (
            "local",
            "app:user",
            "ok",
        )

    def test_usage(self, project: Path) -> None:
        assert run("resolve", cwd=project)[0] == 2
        assert run("resolve", "local|ap_sep_v1|a:b", "-f", "x.yaml", cwd=project)[0] == 2


class TestResolveDocument:
    DOC = {
        "db": {"user": "<<local|ap_sep_v1|app:user>>", "port": 5432},
        "dsn": ["pg://app:<<local|ap_sep_v1|app:db_password>>@h", True],
    }
    RESOLVED = {"db": {"user": "app", "port": 5432}, "dsn": [f"pg://app:{SECRET}@h", True]}

    def test_yaml_in_yaml_out(self, project: Path) -> None:
        (project / "doc.yaml").write_text(yaml.safe_dump(self.DOC, sort_keys=False))
        code, out, _ = run("resolve", "-f", "doc.yaml", cwd=project)
        assert code == 0
        assert yaml.safe_load(out) == self.RESOLVED
        assert out.startswith("db:\n  user: app\n")

    def test_json_in_json_out(self, project: Path) -> None:
        (project / "doc.json").write_text(json.dumps(self.DOC))
        code, out, _ = run("resolve", "-f", "doc.json", cwd=project)
        assert (code, json.loads(out)) == (0, self.RESOLVED)

    def test_stdin_json_to_a_file(self, project: Path) -> None:
        code, _, _ = run(
            "resolve", "-f", "-", "-o", "out.json", input=json.dumps(self.DOC), cwd=project
        )
        assert code == 0
        assert json.loads((project / "out.json").read_text()) == self.RESOLVED
        assert stat.S_IMODE((project / "out.json").stat().st_mode) == 0o600

    def test_a_missing_secret_names_the_document(self, project: Path) -> None:
        (project / "doc.yaml").write_text("a: <<local|ap_sep_v1|app:nope>>\n")
        code, out, err = run("resolve", "-f", "doc.yaml", cwd=project)
        assert (code, out) == (1, "")
        assert "(doc.yaml)" in err

    def test_unparsable_is_exit_2(self, project: Path) -> None:
        (project / "doc.json").write_text("{nope")
        assert run("resolve", "-f", "doc.json", cwd=project)[0] == 2


class TestKeys:
    def test_keygen_prints_a_new_256_bit_key(self) -> None:
        code, out, _ = run("keygen")
        assert code == 0
        key = out.strip()
        assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32
        assert run("keygen")[1] != out

    def test_encrypt_round_trip_drops_one_trailing_newline(self) -> None:
        key = generate_key()
        code, out, _ = run("encrypt", input="s3cret\r\n\n", env={KEY_ENV: key})
        assert code == 0
        assert out.startswith("enc:v1:")
        assert decrypt_value(out.strip(), key=load_key({KEY_ENV: key})) == "s3cret\r\n"

    def test_encrypt_refuses_bad_input(self) -> None:
        key = {KEY_ENV: generate_key()}
        assert run("encrypt", input="\n", env=key)[0] == 2
        assert run("encrypt", input=b"\xff", env=key)[0] == 2
        assert run("encrypt", "s3cret", input="x", env=key)[0] == 2  # never from argv
        assert run("encrypt", input="x", env={KEY_ENV: None})[0] == 2
        assert run("encrypt", input="x", env={KEY_ENV: "short"})[0] == 2

    def test_a_config_value_decrypts_on_load_and_a_wrong_key_is_exit_2(self, project: Path) -> None:
        key = generate_key()
        sealed = run("encrypt", input="APP_\n", env={KEY_ENV: key})[1].strip()
        (project / "apsecrets.yaml").write_text(f"connections:\n  env: {{prefix: '{sealed}'}}\n")
        env = {KEY_ENV: key, "APP_TOKEN": "tok"}
        assert run("resolve", "env|ap_sep_v1|TOKEN", env=env, cwd=project)[:2] == (0, "tok\n")
        for wrong in (generate_key(), None):
            code, out, err = run("check", env={**env, KEY_ENV: wrong}, cwd=project)
            assert (code, out) == (2, "")
            assert "connections.env.prefix" in err
            assert "APP_" not in err


def test_keygen_and_encrypt_as_real_processes(project: Path) -> None:
    key = run_process("keygen").stdout.strip()
    env = {**os.environ, KEY_ENV: key}
    done = run_process("encrypt", input=f"{SECRET}\n", env=env)
    assert done.returncode == 0, done.stderr
    assert decrypt_value(done.stdout.strip(), key=load_key({KEY_ENV: key})) == SECRET
    wrong = run_process("encrypt", input="x", env={**env, KEY_ENV: "bad"})
    assert wrong.returncode == 2
    assert f"{KEY_ENV} must be a 256-bit key" in wrong.stderr


def test_resolve_as_a_real_process(project: Path) -> None:
    done = run_process("resolve", "local|ap_sep_v1|app:db_password", cwd=project)
    assert (done.returncode, done.stdout) == (0, SECRET + "\n")
