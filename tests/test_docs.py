"""The docs a newcomer follows: every shell command in the READMEs runs as written.

After the top README's first command, only `.venv/bin/...` is on hand (no activated
venv, no global `pip`/`python`), so each command of an example README must start
with `.venv/bin/` (after `NAME=value` assignments), or make the venv itself.
The quickstart's commands are then run for real (with the venv's interpreter).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = sorted(ROOT.glob("examples/*/README.md"))
_BLOCK = re.compile(r"^```(?:sh|bash|console)\n(.*?)^```", re.M | re.S)
# The services' own command-line tools, which a README may use to store a secret.
SERVICE_TOOLS = ("op", "aws", "bao", "vault", "conjur", "kubectl")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def shell_commands(readme: Path) -> list[str]:
    """The commands of a README's sh blocks: continuations joined, comments dropped."""
    commands = []
    for block in _BLOCK.findall(readme.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def program(command: str) -> str:
    """The program a command line starts (after any NAME=value assignments)."""
    words = shlex.split(command)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words[0] if words else ""


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_use_the_venv(readme: Path) -> None:
    for command in shell_commands(readme):
        for part in re.split(r"&&|\|\||;|\|", command):
            if not part.strip():
                continue
            first = program(part)
            if first in SERVICE_TOOLS:
                continue
            assert first.startswith(
                (".venv/bin/", "../../.venv/bin/", "cd", "export", "python3", "bash")
            ), (
                f"{readme.relative_to(ROOT)}: {command!r} starts with {first!r}; "
                "after the top README's setup only .venv/bin/... is on PATH"
            )
            if first == "python3":
                assert part.split()[1:3] == ["-m", "venv"], command


def _run_as_written(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a `.venv/bin/jinja-apsecrets ...` line with this interpreter, outputs in tmp_path."""
    words = shlex.split(command)
    env = dict(os.environ)
    while _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == ".venv/bin/jinja-apsecrets", command
    args = [sys.executable, "-m", "jinja_apsecrets.cli", *words[1:]]
    if "-o" in args:
        args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    commands = [
        c
        for c in shell_commands(ROOT / "examples/quickstart/README.md")
        if program(c) == ".venv/bin/jinja-apsecrets"
    ]
    assert len(commands) >= 2
    for command in commands:
        done = _run_as_written(command, tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    assert "eu-west-1" in (tmp_path / "app.conf").read_text()


def test_top_readme_starts_with_the_two_commands() -> None:
    commands = shell_commands(ROOT / "README.md")
    assert "jinja-apsecrets render examples/quickstart" in commands[0]
    assert commands[1] == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' "
        "&& .venv/bin/python -m pytest"
    )
