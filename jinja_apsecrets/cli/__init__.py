"""The ``jinja-apsecrets`` command.

``render`` renders a template or a tree of them; ``refs`` lists and validates
references offline (a CI lint); ``check`` tests connections live; ``resolve``
prints one value or a resolved document; ``keygen`` and ``encrypt`` make
``enc:`` config values (see :mod:`.keys`).

Contracts: exit codes 0 ok, 1 render or lint failure, 2 usage or
configuration error, 3 a backend cannot be reached (see
:data:`~jinja_apsecrets.cli._errors.EXIT_CODES_HELP`). Every template renders
before any file is written, and on any error nothing is written. Outputs are
written atomically with mode 0600 unless ``--mode`` says otherwise. No error,
``-v`` line or audit record ever holds a secret value.
"""

from __future__ import annotations

import click

from .. import __version__
from ._errors import EXIT_CODES_HELP
from ._options import load_resolver
from ._output import write_atomic
from .check import check
from .keys import encrypt, keygen
from .refs import refs
from .render import render
from .resolve import resolve
from .run import run
from .watch import watch

__all__ = ["load_resolver", "main", "write_atomic"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="jinja-apsecrets")
def main() -> None:
    """Render Jinja2 templates whose secrets live in secret managers.

    References such as <<aws|ap_sep_v1|prod/db:password>> are resolved at render
    time through the connections of the config file.
    """


for command in (render, refs, check, resolve, keygen, encrypt):
    main.add_command(command)
main.add_command(watch)
main.add_command(run)
