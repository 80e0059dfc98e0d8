"""``python -m jinja_apsecrets.schema``: print the schema (to rebuild the shipped file)."""

import sys

from . import dumps

sys.stdout.write(dumps())
