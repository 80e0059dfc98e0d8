"""``resolve -f``: the formats users bring (dotenv, multi-document YAML) and
the Kubernetes example. Local ``file`` provider; no doubles."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from test_cli import run

PW = "p@ss word #1"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "secrets.yaml").write_text(
        yaml.safe_dump({"app": {"pw": PW, "user": "app", "quote": "it's"}})
    )
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    return tmp_path


DOTENV = """\
# database settings
export DB_USER=<<local|ap_sep_v1|app:user>>

DB_PASSWORD=<<local|ap_sep_v1|app:pw>>   # quoted once resolved
DSN="postgres://app:{{local|ap_sep_v1|app:pw}}@db/app"
QUOTE='<<local|ap_sep_v1|app:quote>>'
BARE=local|ap_sep_v1|app:user
PLAIN='kept as written'  # comment
"""

DOTENV_RESOLVED = """\
# database settings
export DB_USER=app

DB_PASSWORD='p@ss word #1'   # quoted once resolved
DSN="postgres://app:p@ss word #1@db/app"
QUOTE="it's"
BARE=app
PLAIN='kept as written'  # comment
"""


class TestDotenv:
    def test_layout_kept_values_resolved(self, project: Path) -> None:
        (project / "app.env").write_text(DOTENV)
        code, out, err = run("resolve", "-f", "app.env", cwd=project)
        assert code == 0, err
        assert out == DOTENV_RESOLVED

    @pytest.mark.parametrize("name", [".env", ".env.production"])
    def test_dotenv_names(self, project: Path, name: str) -> None:
        (project / name).write_text(DOTENV)
        assert run("resolve", "-f", name, cwd=project)[:2] == (0, DOTENV_RESOLVED)

    def test_format_option_and_stdin(self, project: Path) -> None:
        (project / "settings.txt").write_text(DOTENV)
        assert run("resolve", "-f", "settings.txt", "--format", "dotenv", cwd=project)[1] == (
            DOTENV_RESOLVED
        )
        code, out, _ = run("resolve", "-f", "-", "--format", "dotenv", input=DOTENV, cwd=project)
        assert (code, out) == (0, DOTENV_RESOLVED)

    def test_a_missing_secret_names_file_and_line(self, project: Path) -> None:
        (project / "app.env").write_text("A=1\nB=<<local|ap_sep_v1|app:nope>>\n")
        code, out, err = run("resolve", "-f", "app.env", cwd=project)
        assert (code, out) == (1, "")
        assert "(app.env:2)" in err

    def test_a_bad_line_is_exit_2_naming_the_line(self, project: Path) -> None:
        (project / "app.env").write_text("A=1\nhunter2 is not a line\n")
        code, _, err = run("resolve", "-f", "app.env", cwd=project)
        assert code == 2
        assert "app.env: line 2: " in err
        assert "hunter2" not in err


class TestFormats:
    def test_unknown_extension_needs_format(self, project: Path) -> None:
        (project / "settings.conf").write_text("a: <<local|ap_sep_v1|app:user>>\n")
        code, out, err = run("resolve", "-f", "settings.conf", cwd=project)
        assert (code, out) == (2, "")
        assert "pass --format yaml, json or dotenv" in err
        code, out, _ = run("resolve", "-f", "settings.conf", "--format", "yaml", cwd=project)
        assert (code, out) == (0, "a: app\n")

    def test_dotenv_on_stdin_is_not_read_as_yaml(self, project: Path) -> None:
        code, out, err = run("resolve", "-f", "-", input=DOTENV, cwd=project)
        assert (code, out) == (2, "")
        assert "--format" in err

    def test_format_needs_a_file(self, project: Path) -> None:
        assert run("resolve", "local|ap_sep_v1|app:user", "--format", "yaml", cwd=project)[0] == 2

    def test_multi_document_yaml_keeps_every_document(self, project: Path) -> None:
        (project / "m.yaml").write_text(
            "---\nkind: A\nuser: <<local|ap_sep_v1|app:user>>\n"
            "---\nkind: B\npw: <<local|ap_sep_v1|app:pw>>\n"
            "---\n- a list\n---\n"
        )
        code, out, err = run("resolve", "-f", "m.yaml", "--audit-log", "a.jsonl", cwd=project)
        assert code == 0, err
        assert list(yaml.safe_load_all(out)) == [
            {"kind": "A", "user": "app"},
            {"kind": "B", "pw": PW},
            ["a list"],
        ]
        assert out.startswith("---\nkind: A\n")
        assert len((project / "a.jsonl").read_text().splitlines()) == 2

    def test_a_single_document_prints_as_before(self, project: Path) -> None:
        (project / "one.yml").write_text("a: <<local|ap_sep_v1|app:user>>\n")
        assert run("resolve", "-f", "one.yml", cwd=project)[:2] == (0, "a: app\n")


class TestKubernetesExample:
    def test_manifests_resolve_to_every_document(self) -> None:
        code, out, err = run("resolve", "-f", "manifests.yaml", "-c", "apsecrets.yaml", cwd=EXAMPLE)
        assert code == 0, err
        docs = list(yaml.safe_load_all(out))
        assert [d["kind"] for d in docs] == ["ConfigMap", "Secret", "Deployment"]
        assert docs[0]["data"]["DB_USER"] == "app"
        assert docs[1]["stringData"] == {
            "DB_PASSWORD": "k8s-example: not a real password",
            "API_TOKEN": "tok-k8s-example",
        }

    def test_the_readme_shows_both_commands(self) -> None:
        text = (EXAMPLE / "README.md").read_text()
        assert ".venv/bin/jinja-apsecrets resolve -f examples/kubernetes/manifests.yaml" in text
        assert ".venv/bin/jinja-apsecrets render examples/kubernetes/secret.yaml.j2" in text

    def test_secret_template_renders_base64(self) -> None:
        code, out, err = run("render", "secret.yaml.j2", "-c", "apsecrets.yaml", cwd=EXAMPLE)
        assert code == 0, err
        assert out.startswith("apiVersion: v1\n")
        data = yaml.safe_load(out)["data"]
        assert base64.b64decode(data["password"]).decode() == "k8s-example: not a real password"
        assert base64.b64decode(data["username"]).decode() == "app"
        assert all(isinstance(v, str) for v in data.values())  # plain strings, as kubectl wants
