"""``python -m jinja_apsecrets.cli``: the same as the ``jinja-apsecrets`` command."""

from . import main

main()
