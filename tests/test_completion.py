"""Shell completion (click's), as the README documents it, with the real console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "jinja-apsecrets"


def complete(**env: str) -> str:
    return subprocess.run(
        [str(EXE)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def documented() -> list[tuple[str, str]]:
    """The (variable, value) pairs of the README's completion lines."""
    section = (ROOT / "README.md").read_text().split("### Shell completion", 1)[1]
    section = section.split("\n### ", 1)[0]
    return re.findall(r"(_JINJA_APSECRETS_COMPLETE)=(\w+) jinja-apsecrets", section)


def test_the_readme_documents_bash_zsh_and_fish() -> None:
    assert {value for _, value in documented()} >= {"bash_source", "zsh_source", "fish_source"}


@pytest.mark.parametrize(("variable", "value"), documented())
def test_each_documented_line_prints_a_script(variable: str, value: str) -> None:
    script = complete(**{variable: value})
    assert "_JINJA_APSECRETS_COMPLETE" in script
    assert "jinja-apsecrets" in script or "jinja_apsecrets" in script


def test_bash_completes_commands_and_options() -> None:
    out = complete(
        COMP_WORDS="jinja-apsecrets r", COMP_CWORD="1", _JINJA_APSECRETS_COMPLETE="bash_complete"
    )
    assert out.split() == ["plain,refs", "plain,render", "plain,resolve", "plain,run"]
    out = complete(
        COMP_WORDS="jinja-apsecrets run --env",
        COMP_CWORD="2",
        _JINJA_APSECRETS_COMPLETE="bash_complete",
    )
    assert set(out.split()) == {"plain,--env-file", "plain,--env"}
