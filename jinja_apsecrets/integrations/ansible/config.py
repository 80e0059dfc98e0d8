"""Where the Ansible plugins find the jinja_apsecrets configuration file.

One order for every plugin of the collection (lookup, filter, action,
callback), so that they all land on the same file and so share one resolver
per process: the ``config=`` option of the call or task, then the
``apsecrets_config`` variable, then ``$APSECRETS_CONFIG``, then
``apsecrets.yaml`` beside the playbook. A relative name is looked up in the
current directory, then beside the playbook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ...errors import SecretValidationError

__all__ = ["CONFIG_VARIABLE", "DEFAULT_NAME", "ENV_VARIABLE", "find_config"]

CONFIG_VARIABLE = "apsecrets_config"
ENV_VARIABLE = "APSECRETS_CONFIG"
DEFAULT_NAME = "apsecrets.yaml"


def find_config(
    option: object = None,
    variable: object = None,
    *,
    playbook_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Path:
    """The configuration file to use, as an absolute, resolved path.

    ``option`` is the ``config=`` value of the call, ``variable`` the value of
    ``apsecrets_config``; empty values count as not given. Raises a VALIDATION
    error naming every place looked at.
    """
    env = os.environ if environ is None else environ
    here = Path(cwd) if cwd is not None else Path.cwd()
    base = Path(playbook_dir) if playbook_dir else None
    given = next(
        (str(v) for v in (option, variable, env.get(ENV_VARIABLE)) if v not in (None, "")), None
    )
    candidates: list[Path] = []
    if given is None:
        if base is not None:
            candidates.append(base / DEFAULT_NAME)
        candidates.append(here / DEFAULT_NAME)
    else:
        path = Path(os.path.expandvars(given)).expanduser()
        if path.is_absolute():
            candidates.append(path)
        else:
            candidates.append(here / path)
            if base is not None:
                candidates.append(base / path)
    for candidate in dict.fromkeys(candidates):
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise SecretValidationError(
        f"jinja_apsecrets config file not found (looked for {looked})",
        hint=f"pass config=..., set the {CONFIG_VARIABLE} variable or ${ENV_VARIABLE}, "
        f"or put {DEFAULT_NAME} beside the playbook",
    )
