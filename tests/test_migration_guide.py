"""The README's "Moving from environment variables": every ``jinja-apsecrets``
command it shows runs, step by step, on a copy of ``examples/migration``,
against a real ``moto_server``. The guide's ``aws secretsmanager create-secret``
(the AWS CLI is not installed here) is done with boto3, with the same name and
document; the edit of step 4 is the guide's own line, read from the README."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from servers import Server
from test_cli import EXE

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "migration"
DB, SLACK = "mig-Db-Secret-1", "mig-Slack-Secret-2"


def guide() -> str:
    text = README.read_text()
    start = text.index("## Moving from environment variables")
    return text[start : text.index("\n## ", start + 1)]


def commands(section: str) -> list[str]:
    """The ``jinja-apsecrets`` command lines of the section's ``sh`` blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("jinja-apsecrets ")]


class TestTheGuideReads:
    def test_it_follows_the_spec_steps_and_starts_with_env(self) -> None:
        section = guide()
        steps = re.findall(r"^\d\. \*\*(\w+)", section, re.M)
        assert steps == ["Identify", "Replace", "Store", "Move", "Test", "Remove"]
        assert "<<env|ap_sep_v1|DB_PASSWORD>>" in section
        assert "[Moving from environment variables](#moving-from-environment-variables)" in (
            README.read_text()
        )

    def test_the_example_files_are_the_ones_shown(self) -> None:
        section = guide()
        for line in (EXAMPLE / "secrets.yaml").read_text().splitlines():
            if line and not line.startswith("#"):
                assert line in section
        assert "{{ db_password }}" in (EXAMPLE / "app.conf.j2").read_text()

    def test_it_shows_refs_check_and_dry_run_as_the_test_step(self) -> None:
        names = [shlex.split(c)[1] for c in commands(guide())]
        assert names == ["render", "refs", "check", "render"]
        assert commands(guide())[-1].endswith("--dry-run")


@pytest.mark.server
def test_the_guide_runs(tmp_path: Path, moto: Server) -> None:
    work = tmp_path / "migration"
    shutil.copytree(EXAMPLE, work)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "APSECRETS_"))},
        "DB_PASSWORD": DB,
        "SLACK_TOKEN": SLACK,
        "APSECRETS_AWS_ENDPOINT": moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    render, refs, check, dry_run = commands(guide())

    def run(line: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [str(EXE), *shlex.split(line)[1:]]
        done = subprocess.run(
            argv, cwd=work, env=environ, capture_output=True, text=True, timeout=120, check=False
        )
        assert DB not in done.stdout + done.stderr
        assert SLACK not in done.stdout + done.stderr
        return done

    # step 2: references that read the environment; the file is what it was
    assert run(render, env).returncode == 0
    expected = (work / "app.conf.j2").read_text()
    expected = expected.replace("{{ db_password }}", DB).replace("{{ slack_token }}", SLACK)
    assert (work / "app.conf").read_text() == expected
    before = (work / "app.conf").stat()

    # step 3: store (the guide's create-secret, through boto3)
    client = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = "prod/app"  # a fresh moto_server per module: the guide's name as it is
    client.create_secret(
        Name=name, SecretString=json.dumps({"db_password": DB, "slack_token": SLACK})
    )

    # step 4: the guide's own line replaces the env one; nothing else changes
    moved = re.search(
        r"^\s*(db_password: <<aws\|ap_sep_v1\|prod/app:db_password>>)$", guide(), re.M
    )
    assert moved is not None
    vars_file = work / "secrets.yaml"
    edited = re.sub(r"^db_password: .*$", moved[1], vars_file.read_text(), flags=re.M)
    vars_file.write_text(edited)

    # step 5: test
    done = run(refs, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"aws|{name}:db_password: ok" in done.stdout
    done = run(check, env)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(dry_run, env)
    assert (done.returncode, done.stdout) == (0, "unchanged  app.conf\n"), done.stderr

    # step 6: remove the variable; still unchanged, nothing was rewritten
    without = {k: v for k, v in env.items() if k != "DB_PASSWORD"}
    done = run(dry_run, without)
    assert (done.returncode, done.stdout) == (0, "unchanged  app.conf\n"), done.stderr
    assert run(render, without).returncode == 0
    after = (work / "app.conf").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # a value that differs shows as a change, still without the value
    client.put_secret_value(SecretId=name, SecretString=json.dumps({"db_password": "other"}))
    done = run(dry_run, without)
    assert (done.returncode, done.stdout) == (0, "change     app.conf\n"), done.stderr
    assert "other" not in done.stdout + done.stderr
