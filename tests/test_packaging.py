"""What the wheel ships: the package with its data files, and the Ansible collection
at the top level of site-packages (where ansible-core scans ``ansible_collections``).

The wheel is built by pip as a user's ``pip install`` builds it (an isolated build
that fetches hatchling from the package index), then installed into a fresh
virtualenv, where ``ansible-doc`` must find the collection with no setup.
``APSECRETS_SKIP_PRECOMMIT_TRY_REPO=1`` (no package index on this machine) opts out,
as for the pre-commit install test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.environ.get("APSECRETS_SKIP_PRECOMMIT_TRY_REPO") == "1",
    reason="building the wheel needs a package index (hatchling)",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("jinja_apsecrets-*.whl")
    return built


def test_the_wheel_ships_package_data_and_the_collection(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "jinja_apsecrets/py.typed",
        "jinja_apsecrets/schema/apsecrets.schema.json",
        "jinja_apsecrets/cli/__main__.py",
        "ansible_collections/apsecrets/core/galaxy.yml",
        "ansible_collections/apsecrets/core/meta/runtime.yml",
        "ansible_collections/apsecrets/core/plugins/lookup/secret.py",
        "ansible_collections/apsecrets/core/plugins/action/template.py",
        "ansible_collections/apsecrets/core/plugins/callback/prefetch.py",
        "ansible_collections/apsecrets/core/plugins/filter/resolve.py",
    ):
        assert expected in names, expected
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", ".venv"))]


def test_the_installed_wheel_gives_ansible_the_collection(wheel: Path, tmp_path: Path) -> None:
    # As a user installs it: the wheel with its `ansible` extra, into a fresh venv,
    # run from a folder that is not this checkout.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[ansible]"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHONPATH"))}
    done = subprocess.run(
        [str(venv / "bin" / "ansible-doc"), "-t", "lookup", "apsecrets.core.secret"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "apsecrets.core.secret" in done.stdout
    assert _origin(venv, tmp_path, env).startswith(str(venv))


def _origin(venv: Path, cwd: Path, env: dict[str, str]) -> str:
    """Where the venv imports jinja_apsecrets from (its own site-packages, not this checkout)."""
    return subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import jinja_apsecrets; print(jinja_apsecrets.__file__)",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
