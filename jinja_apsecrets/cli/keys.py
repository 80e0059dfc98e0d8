"""``keygen`` and ``encrypt``: make encrypted (``enc:``) config values.

``encrypt`` reads the value from stdin, never from the command line (where
``ps`` and shell history would keep it). ``--field connections.NAME.FIELD``
binds the value to the one field it is for (``enc:v2:``, see
:mod:`jinja_apsecrets.crypto`); without it the value is ``enc:v1:`` and a
warning says so.
"""

from __future__ import annotations

import re
import sys

import click

from ..crypto import encrypt_value, generate_key, load_key
from ._errors import EXIT_CODES_HELP, UsageProblem
from ._options import guarded

__all__ = ["encrypt", "keygen"]


@click.command(epilog=EXIT_CODES_HELP)
def keygen() -> None:
    """Print a new random AES-256 key (base64url) for APSECRETS_MASTER_KEY."""
    click.echo(generate_key())


_FIELD = re.compile(r"connections\.[A-Za-z0-9_.-]+\.[A-Za-z_][A-Za-z0-9_]*")


@click.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--field",
    metavar="connections.NAME.FIELD",
    help="The config field the value is for, e.g. connections.vault.secretId: the "
    "value decrypts only there (enc:v2:). Without it: an unbound enc:v1: value.",
)
@guarded
def encrypt(field: str | None) -> None:
    """Encrypt a value read from stdin into an enc: config value.

    The value is read from stdin (one trailing newline dropped), or prompted
    for without echo on a terminal; never from the command line, where ps and
    shell history would keep it. AES-256-GCM with the key in
    APSECRETS_MASTER_KEY (see keygen). Config values of this form are
    decrypted on load; with --field, only in that field.
    """
    if field is not None and not _FIELD.fullmatch(field):
        raise UsageProblem(
            f"--field {field!r}: expected connections.NAME.FIELD, e.g. connections.vault.secretId"
        )
    key = load_key()
    if sys.stdin.isatty():
        value = click.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
    else:
        try:
            value = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageProblem("stdin is not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r") if value.endswith("\n") else value
    if not value:
        raise UsageProblem("nothing to encrypt: the value is empty")
    if field is None:
        click.echo(
            "warning: not bound to a field (enc:v1:); pass --field connections.NAME.FIELD "
            "so the value decrypts only where it belongs",
            err=True,
        )
    click.echo(encrypt_value(value, key, field=field))
