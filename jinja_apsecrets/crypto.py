"""Encrypted configuration values: ``enc:v2:`` + base64url(nonce || ciphertext+tag).

AES-256-GCM (the spec's "encrypted at rest"), with a 256-bit key read from the
``APSECRETS_MASTER_KEY`` environment variable as base64url text. Needs the
``cryptography`` package (``pip install 'jinja-apsecrets[crypto]'``).

``enc:v2:`` values are bound to the config field they were made for: the
field's path (``connections.vault.secretId``) is GCM's associated data, so a
value copied into another field (``format:``, ``region:``, another
connection) does not decrypt there, and its plaintext cannot be made to
appear where a field's value is echoed or used as a hostname. ``enc:v1:``
values (no associated data) are still read. A decrypted value must be UTF-8
text; every failure is a VALIDATION error naming the field, never the value.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from .errors import SecretValidationError

__all__ = [
    "KEY_ENV",
    "PREFIX",
    "PREFIX_V1",
    "decrypt_value",
    "encrypt_value",
    "generate_key",
    "is_encrypted",
]

#: The current format: bound to its field.
PREFIX = "enc:v2:"
#: The first format, not bound to a field: still read, written only without ``field``.
PREFIX_V1 = "enc:v1:"
KEY_ENV = "APSECRETS_MASTER_KEY"
_NONCE = 12


def _aesgcm(key: bytes):  # type: ignore[no-untyped-def]
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise SecretValidationError(
            "encrypted values need the cryptography package: pip install 'jinja-apsecrets[crypto]'"
        ) from None
    return AESGCM(key)


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A new random 256-bit key, as base64url text."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def load_key(environ: Mapping[str, str] | None = None, *, where: str = "") -> bytes:
    """The master key from the environment; VALIDATION if absent or malformed."""
    env = os.environ if environ is None else environ
    prefix = f"{where}: " if where else ""
    text = env.get(KEY_ENV)
    if not text:
        raise SecretValidationError(
            f"{prefix}{KEY_ENV} is not set; it holds the key for enc: values",
            hint=f"export {KEY_ENV} with the key the values were encrypted with",
        )
    try:
        key = _b64decode(text.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretValidationError(
            f"{prefix}{KEY_ENV} must be a 256-bit key in base64url (see `jinja-apsecrets keygen`)",
            hint=f"{KEY_ENV} must be the output of `jinja-apsecrets keygen`",
        )
    return key


def is_encrypted(text: str) -> bool:
    """Whether ``text`` is an ``enc:`` value (any version)."""
    return text.startswith((PREFIX, PREFIX_V1))


def encrypt_value(plaintext: str, key: bytes, *, field: str | None = None) -> str:
    """``enc:v2:...`` text for ``plaintext``, bound to the config ``field``
    (``connections.NAME.FIELD``); without ``field``, ``enc:v1:`` (unbound)."""
    nonce = os.urandom(_NONCE)
    prefix, aad = (PREFIX_V1, None) if field is None else (PREFIX, field.encode("utf-8"))
    sealed = _aesgcm(key).encrypt(nonce, plaintext.encode("utf-8"), aad)
    return prefix + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def decrypt_value(
    text: str, *, where: str = "", key: bytes | None = None, field: str | None = None
) -> str:
    """The plaintext of an ``enc:v2:`` or ``enc:v1:`` value. ``field`` is the
    config field it was read from (an ``enc:v2:`` value decrypts only there).
    A wrong key, another field or a damaged value is a VALIDATION error
    naming ``where`` (the config field)."""
    if text.startswith(PREFIX):
        prefix, aad = PREFIX, (field or "").encode("utf-8")
    elif text.startswith(PREFIX_V1):
        prefix, aad = PREFIX_V1, None
    else:
        raise SecretValidationError(f"{where}: not an enc:v2: or enc:v1: value")
    if key is None:
        key = load_key(where=where)
    try:
        blob = _b64decode(text[len(prefix) :])
    except (binascii.Error, ValueError):
        blob = b""
    if len(blob) <= _NONCE:
        raise SecretValidationError(f"{where}: malformed {prefix} value")
    cipher = _aesgcm(key)  # reports a missing cryptography package
    from cryptography.exceptions import InvalidTag

    try:
        plain: bytes = cipher.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except InvalidTag:
        bound = " or a value encrypted for another field" if aad is not None else ""
        raise SecretValidationError(
            f"{where}: cannot decrypt: wrong {KEY_ENV}, damaged value{bound}",
            hint=f"use the {KEY_ENV} the value was encrypted with; enc:v2: values are "
            "bound to their field: encrypt again with `jinja-apsecrets encrypt --field "
            f"{field or 'connections.NAME.FIELD'}`",
        ) from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretValidationError(f"{where}: the decrypted value is not UTF-8 text") from None
