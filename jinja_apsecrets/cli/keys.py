"""``keygen`` and ``encrypt``: make encrypted (``enc:``) config values.

``encrypt`` reads the value from stdin, never from the command line (where
``ps`` and shell history would keep it).
"""

from __future__ import annotations

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


@click.command(epilog=EXIT_CODES_HELP)
@guarded
def encrypt() -> None:
    """Encrypt a value read from stdin into an enc:v1: config value.

    The value is read from stdin (one trailing newline dropped), or prompted
    for without echo on a terminal; never from the command line, where ps and
    shell history would keep it. AES-256-GCM with the key in
    APSECRETS_MASTER_KEY (see keygen). Config values of this form are
    decrypted on load.
    """
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
    click.echo(encrypt_value(value, key))
