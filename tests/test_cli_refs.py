"""``refs``: every reference listed with file:line, validated offline, with no
network and no credentials."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from test_cli import run, run_process

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


def test_as_a_real_process_without_credentials(lint: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(lint)}
    done = run_process("refs", "templates", "--json", cwd=lint, env=env)
    assert done.returncode == 1, done.stderr
    assert findings(done.stdout) == EXPECTED
