"""``refs``: every reference listed with file:line, validated offline, with no
network and no credentials."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from support import MemoryProvider
from test_cli import run, run_process

from jinja_apsecrets.providers import register_provider

CONFIG = """\
connections:
  aws: {provider: aws, region: us-east-1, accessKeyId: ${AWS_ACCESS_KEY_ID}, secretAccessKey: ${AWS_SECRET_ACCESS_KEY}}
  vault: {provider: hashicorp, url: "${VAULT_ADDR}", roleId: ${ROLE_ID}, secretId: enc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAA}
  conjur: {provider: cyberark-conjur, url: "${CONJUR_URL}", organizationAccountName: acme, loginId: host/app, apiKey: enc:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA}
  onepassword: {serviceAccountToken: ${OP_SERVICE_ACCOUNT_TOKEN}}
  app: {provider: env, prefix: APP_}
policy:
  allow: ["aws:prod/*", "vault:*", "conjur:*", "onepassword:*", "app:*"]
"""

TEMPLATE = """\
a=<<aws|ap_sep_v1|prod/db:password>>
b={{aws|ap_sep_v1|prod/db}}
{% raw %}<<aws|ap_sep_v1|not/a:ref>>{% endraw %}{# <<aws|ap_sep_v1|nor:this>> #}
c={{ "<<aws|ap_sep_v1|in/a:string>>" }} <<vault|ap_sep_v1|secret/data/app/db/password>>
d=<<conjur|ap_sep_v1|acme:variable:prod/db/password>> <<onepassword|ap_sep_v1|op://Prod/DB/password>>
e=<<app|ap_sep_v1|TOKEN>> <<nope|ap_sep_v1|x>> <<aws|ap_sep_v1|staging/db:password>>
f={{ secret("vault", "secret/x") | indent(2) }} {{ secret("aws", path) }}
"""

EXPECTED = [
    (1, "aws", "prod/db:password", None),
    (2, "aws", "prod/db", "VALIDATION"),
    (4, "vault", "secret/data/app/db/password", None),
    (5, "conjur", "acme:variable:prod/db/password", None),
    (5, "onepassword", "op://Prod/DB/password", None),
    (6, "app", "TOKEN", None),
    (6, "nope", "x", "VALIDATION"),
    (6, "aws", "staging/db:password", "SECRET_MANAGER_GET_SECRET_FAILED"),
    (7, "vault", "secret/x", "VALIDATION"),
]


@pytest.fixture
def lint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A template using every provider, a config whose credentials are all
    unset or encrypted with no key, and a guard that fails any network use."""
    for name in (
        "APSECRETS_CONFIG",
        "APSECRETS_MASTER_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "OP_SERVICE_ACCOUNT_TOKEN",
        "CONJUR_AUTHN_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("refs used the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    (tmp_path / "apsecrets.yaml").write_text(CONFIG)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.j2").write_text(TEMPLATE)
    return tmp_path


def findings(out: str) -> list[tuple[int, str, str, str | None]]:
    return [
        (f["line"], f["connection"], f["path"], f["error"] and f["error"]["code"])
        for f in json.loads(out)
    ]


class TestRefs:
    def test_json_lists_every_reference_with_its_verdict(self, lint: Path) -> None:
        code, out, err = run("refs", "templates", "--json", cwd=lint)
        assert code == 1
        assert findings(out) == EXPECTED
        first = json.loads(out)[0]
        assert first == {
            "file": "templates/app.j2",
            "line": 1,
            "connection": "aws",
            "path": "prod/db:password",
            "valid": True,
            "error": None,
            "warnings": [],
        }
        assert "9 references in 1 file, 4 invalid" in err

    def test_lines_for_people(self, lint: Path) -> None:
        code, out, _ = run("refs", "templates/app.j2", cwd=lint)
        assert code == 1
        lines = out.splitlines()
        assert lines[0] == "templates/app.j2:1: aws|prod/db:password: ok"
        assert lines[1].startswith("templates/app.j2:2: aws|prod/db: VALIDATION: Wrong key format")
        assert "Unknown connection 'nope'; configured connections: app, aws, conjur" in lines[6]
        assert "policy allow-list" in lines[7]

    def test_all_valid_is_exit_0(self, lint: Path) -> None:
        (lint / "templates" / "app.j2").write_text("<<app|ap_sep_v1|X>>\n")
        assert run("refs", "templates", cwd=lint)[0] == 0

    def test_without_config_connections_are_provider_ids(self, lint: Path) -> None:
        (lint / "apsecrets.yaml").unlink()
        code, out, _ = run("refs", "templates", "--json", cwd=lint)
        assert code == 1
        verdicts = {(c, p): e for _, c, p, e in findings(out)}
        assert verdicts[("aws", "prod/db:password")] is None
        assert verdicts[("aws", "staging/db:password")] is None  # no policy
        assert verdicts[("onepassword", "op://Prod/DB/password")] is None
        assert verdicts[("vault", "secret/data/app/db/password")] == "VALIDATION"
        assert "no configuration was found" in json.loads(out)[2]["error"]["message"]

    def test_vars_files_are_checked_too(self, lint: Path) -> None:
        (lint / "vars.yaml").write_text("a:\n  b: '<<aws|ap_sep_v1|prod/x>>'\n")
        code, out, _ = run("refs", "templates", "--vars", "vars.yaml", "--json", cwd=lint)
        assert code == 1
        assert json.loads(out)[-1]["file"] == "vars.yaml"
        assert findings(out)[-1] == (2, "aws", "prod/x", "VALIDATION")

    def test_paths_with_jinja_syntax_and_empty_paths(self, lint: Path) -> None:
        (lint / "templates" / "app.j2").write_text("<<app|ap_sep_v1|{{ x }}>>\n<<app|ap_sep_v1|>>")
        code, out, _ = run("refs", "templates", "--json", cwd=lint)
        assert code == 1
        messages = [f["error"]["message"] for f in json.loads(out)]
        assert "static text" in messages[0]
        assert messages[1] == "Empty secret path in reference"

    def test_a_template_jinja_cannot_parse_fails(self, lint: Path) -> None:
        (lint / "templates" / "app.j2").write_text("<<app|ap_sep_v1|X>>\n{% if %}\n")
        code, _, err = run("refs", "templates", cwd=lint)
        assert code == 1
        assert "template syntax" in err
        assert "templates/app.j2:2" in err

    def test_pattern_and_exclude(self, lint: Path) -> None:
        (lint / "templates" / "x.tmpl").write_text("<<app|ap_sep_v1|X>>")
        (lint / "templates" / "skip").mkdir()
        (lint / "templates" / "skip" / "y.tmpl").write_text("<<app|ap_sep_v1|>>")
        args = ["--pattern", "*.tmpl", "--exclude", "skip", "--json"]
        code, out, _ = run("refs", "templates", *args, cwd=lint)
        assert (code, findings(out)) == (0, [(1, "app", "X", None)])

    def test_bad_config_is_exit_2(self, lint: Path) -> None:
        (lint / "apsecrets.yaml").write_text("connections:\n  x: {provider: nosuch}\n")
        code, _, err = run("refs", "templates", cwd=lint)
        assert code == 2
        assert "unknown provider" in err
        assert run("refs", "templates", "-c", "missing.yaml", cwd=lint)[0] == 2


class TestConfigDiscovery:
    """Issue 15 item 4: the config beside the templates (then above them, up
    to the repository root) comes before ./apsecrets.yaml, and is named."""

    @pytest.fixture
    def repo(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "repo" / ".git").mkdir(parents=True)
        (tmp_path / "repo" / "deploy" / "templates").mkdir(parents=True)
        (tmp_path / "repo" / "deploy" / "templates" / "app.j2").write_text("<<mine|ap_sep_v1|X>>\n")
        (tmp_path / "elsewhere").mkdir()
        return tmp_path

    def test_beside_the_templates(self, repo: Path) -> None:
        config = repo / "repo" / "deploy" / "templates" / "apsecrets.yaml"
        config.write_text("connections:\n  mine: {provider: env}\n")
        (repo / "elsewhere" / "apsecrets.yaml").write_text("connections: {}\n")
        source = str(repo / "repo" / "deploy" / "templates")
        code, _, err = run("refs", source, cwd=repo / "elsewhere")
        assert code == 0
        assert f"(config: {config})" in err

    def test_up_to_the_repository_root(self, repo: Path) -> None:
        config = repo / "repo" / "apsecrets.yaml"
        config.write_text("connections:\n  mine: {provider: env}\n")
        code, _, err = run("refs", "repo/deploy/templates/app.j2", cwd=repo, env={"X": "1"})
        assert code == 0
        assert "(config: repo/apsecrets.yaml)" in err
        # Not above the repository root.
        config.rename(repo / "apsecrets-moved.yaml")
        (repo / "apsecrets.yaml").write_text("connections:\n  mine: {provider: env}\n")
        templates = str(repo / "repo" / "deploy" / "templates")
        code, _, err = run("refs", templates, cwd=repo / "elsewhere")
        assert code == 1
        assert "(config: none" in err

    def test_render_uses_it_and_says_so_with_v(self, repo: Path) -> None:
        folder = repo / "repo" / "deploy" / "templates"
        (folder / "apsecrets.yaml").write_text("connections:\n  mine: {provider: env}\n")
        (folder / "t.j2").write_text("v=<<mine|ap_sep_v1|APS_DISCOVERY>>\n")
        code, out, err = run(
            "render",
            str(folder / "t.j2"),
            "-v",
            cwd=repo / "elsewhere",
            env={"APS_DISCOVERY": "ok"},
        )
        assert (code, out) == (0, "v=ok\n")
        assert f"config: {folder / 'apsecrets.yaml'}" in err

    def test_quickstart_as_the_readme_says(self) -> None:
        root = Path(__file__).resolve().parent.parent
        code, _, err = run("refs", "examples/quickstart", cwd=root, env={"APSECRETS_CONFIG": None})
        assert code == 0, err
        assert "0 invalid (config: examples/quickstart/apsecrets.yaml)" in err


class TestOneLoader:
    """Issue 15 item 7: refs loads the config with the library's loader (offline)."""

    def test_misspelled_field_is_reported_as_by_render(self, lint: Path) -> None:
        (lint / "apsecrets.yaml").write_text("connections:\n  app: {provider: env, prefx: APP_}\n")
        code, _, refs_err = run("refs", "templates", cwd=lint)
        assert code == 2
        code, _, render_err = run("render", "templates/app.j2", cwd=lint)
        assert code == 2
        assert "unknown field(s) prefx" in refs_err
        assert refs_err.splitlines()[0] == render_err.splitlines()[0]

    def test_bad_numbers_too(self, lint: Path) -> None:
        (lint / "apsecrets.yaml").write_text("cache: {ttl: .nan}\n")
        code, _, err = run("refs", "templates", cwd=lint)
        assert code == 2
        assert "cache.ttl" in err

    def test_offline_mode_neither_expands_nor_decrypts(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from jinja_apsecrets.config import load_config

        monkeypatch.setenv("APS_PREFIX", "FROM_ENV_")
        config = load_config(
            {"connections": {"e": {"provider": "env", "prefix": "${APS_PREFIX}"}}}, offline=True
        )
        spec = config.connections["e"]
        assert spec.unknown == {"prefix"}
        assert "FROM_ENV_" not in repr(spec.options)
        sealed = {"connections": {"e": {"provider": "env", "prefix": "enc:v2:AAAA"}}}
        assert load_config(sealed, offline=True).connections["e"].unknown == {"prefix"}


class LintedProvider(MemoryProvider):
    """A test double: MemoryProvider plus the lint hook, warning about paths
    without a version (as Vault's KV-version warning does)."""

    id = "linted"

    def offline_warnings(self, path: str) -> list[str]:
        return [] if "?" in path else ["version unknown offline"]


register_provider("linted", LintedProvider, clobber=True)


class TestWarnings:
    """Issue 15 item 6 (lint side): what cannot be known offline is a warning:
    exit 0, and --strict makes it fail."""

    @pytest.fixture
    def linted(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "apsecrets.yaml").write_text("connections:\n  l: {provider: linted}\n")
        (tmp_path / "t.j2").write_text("<<l|ap_sep_v1|a:b>>\n<<l|ap_sep_v1|a:b?v>>\n")
        return tmp_path

    def test_warning_is_exit_0(self, linted: Path) -> None:
        code, out, err = run("refs", "t.j2", cwd=linted)
        assert code == 0
        assert "t.j2:1: l|a:b: warning: version unknown offline" in out
        assert "t.j2:2: l|a:b?v: ok" in out
        assert "0 invalid, 1 warning" in err

    def test_strict_fails_on_warnings(self, linted: Path) -> None:
        assert run("refs", "t.j2", "--strict", cwd=linted)[0] == 1

    def test_json_lists_warnings(self, linted: Path) -> None:
        code, out, _ = run("refs", "t.j2", "--json", cwd=linted)
        assert code == 0
        assert [f["warnings"] for f in json.loads(out)] == [["version unknown offline"], []]


def test_as_a_real_process_without_credentials(lint: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(lint)}
    done = run_process("refs", "templates", "--json", cwd=lint, env=env)
    assert done.returncode == 1, done.stderr
    assert findings(done.stdout) == EXPECTED


class TestVaultKvVersion:
    """Issue 15 item 6 with the hashicorp provider's own offline_warnings."""

    @pytest.fixture
    def vault(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        monkeypatch.delenv("VAULT_ADDR", raising=False)
        (tmp_path / "apsecrets.yaml").write_text(
            "connections:\n"
            '  hashicorp: {url: "${VAULT_ADDR}"}\n'
            '  exact: {provider: hashicorp, url: "http://127.0.0.1:1", kvVersion: 2}\n'
        )
        return tmp_path

    def test_unknown_kv_version_is_a_warning(self, vault: Path) -> None:
        (vault / "t.j2").write_text("<<hashicorp|ap_sep_v1|secret/prod/app/jwt_secret>>\n")
        code, out, _ = run("refs", "t.j2", cwd=vault)
        assert code == 0
        assert "warning: KV version unknown offline" in out
        assert run("refs", "t.j2", "--strict", cwd=vault)[0] == 1

    def test_configured_kv_version_makes_lint_exact(self, vault: Path) -> None:
        (vault / "t.j2").write_text("<<exact|ap_sep_v1|secret/prod/app/jwt_secret>>\n")
        code, out, _ = run("refs", "t.j2", cwd=vault)
        assert code == 1
        assert "secret/data/prod/app/jwt_secret" in out

    def test_settings_read_from_the_environment_at_run_time_do_not_matter(
        self, vault: Path
    ) -> None:
        # No url and no $VAULT_ADDR: a render would need it, a lint does not.
        (vault / "apsecrets.yaml").write_text("connections:\n  hashicorp: {kvVersion: 2}\n")
        (vault / "t.j2").write_text("<<hashicorp|ap_sep_v1|secret/data/app/k>>\n")
        code, out, err = run("refs", "t.j2", cwd=vault)
        assert code == 0, err
        assert out.endswith(": ok\n")
