"""The shipped ``.pre-commit-hooks.yaml``, run by pre-commit itself.

pre-commit installs a ``language: python`` hook by pip-installing the hook's
repository into a new virtualenv. Even from a local path that needs the
build backend (hatchling) and the runtime dependencies from a package index:
a package index (the registry, or a local index or wheelhouse pip is set up
with). The tests check the definition without that install step too:

* the manifest passes pre-commit's own schema (``load_manifest``);
* in a temporary git repository, ``pre-commit run`` runs the shipped hook as
  written, except ``language: system`` (our installed ``jinja-apsecrets`` on
  PATH) in place of ``language: python``: pre-commit's own file selection,
  argument passing and exit status handling.

and run the real ``pre-commit try-repo`` (the install included), unless
``APSECRETS_SKIP_PRECOMMIT_TRY_REPO=1`` opts out on a machine without an index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pre_commit.clientlib import load_manifest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
BIN = Path(sys.executable).parent


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def pre_commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "APSECRETS_CONFIG"},
        "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(BIN / "pre-commit"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A project with a config, a good template, and a file that is no template."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (repo / "deploy").mkdir()
    (repo / "deploy" / "app.conf.j2").write_text("pw=<<local|ap_sep_v1|app:pw>>\n")
    # Not selected by the hook (files: \.j2$), invalid as it is.
    (repo / "notes.txt").write_text("see <<nope|ap_sep_v1|a:b>>\n")
    return repo


def test_the_manifest_is_valid_for_pre_commit() -> None:
    (hook,) = load_manifest(str(MANIFEST))
    assert hook["id"] == "jinja-apsecrets-refs"
    assert hook["entry"] == "jinja-apsecrets refs"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is True


def test_the_hook_passes_good_templates_and_fails_bad_ones(repo: Path) -> None:
    (hook,) = yaml.safe_load(MANIFEST.read_text())
    local = {**hook, "language": "system"}
    (repo / ".pre-commit-config.yaml").write_text(
        yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]})
    )
    git(repo, "add", ".")
    done = pre_commit(repo, "run", "--all-files")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jinja-apsecrets refs" in done.stdout
    assert "Passed" in done.stdout

    (repo / "deploy" / "bad.conf.j2").write_text("x=<<nope|ap_sep_v1|a:b>>\n")
    git(repo, "add", ".")
    done = pre_commit(repo, "run", "--all-files")
    assert done.returncode == 1
    assert "Failed" in done.stdout
    assert "deploy/bad.conf.j2:1: nope|a:b: VALIDATION: Unknown connection" in done.stdout
    assert "notes.txt" not in done.stdout


@pytest.mark.skipif(
    os.environ.get("APSECRETS_SKIP_PRECOMMIT_TRY_REPO") == "1",
    reason="pre-commit try-repo pip-installs this repository from a package index "
    "(APSECRETS_SKIP_PRECOMMIT_TRY_REPO=1 opts out, for machines without one)",
)
def test_try_repo(repo: Path) -> None:
    git(repo, "add", ".")
    done = pre_commit(repo, "try-repo", str(ROOT), "jinja-apsecrets-refs", "--all-files")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jinja-apsecrets refs" in done.stdout
