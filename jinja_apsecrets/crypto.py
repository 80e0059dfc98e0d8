"""Encrypted configuration values: ``enc:v1:`` + base64url(nonce || ciphertext+tag).

AES-256-GCM (the spec's "encrypted at rest"), with a 256-bit key read from the
``APSECRETS_MASTER_KEY`` environment variable as base64url text. Needs the
``cryptography`` package (``pip install 'jinja-apsecrets[crypto]'``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from .errors import SecretValidationError

__all__ = ["KEY_ENV", "PREFIX", "decrypt_value", "encrypt_value", "generate_key"]

PREFIX = "enc:v1:"
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
            f"{prefix}{KEY_ENV} is not set; it holds the key for enc:v1: values"
        )
    try:
        key = _b64decode(text.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretValidationError(
            f"{prefix}{KEY_ENV} must be a 256-bit key in base64url (see `jinja-apsecrets keygen`)"
        )
    return key


def encrypt_value(plaintext: str, key: bytes) -> str:
    """``enc:v1:...`` text for ``plaintext``."""
    nonce = os.urandom(_NONCE)
    sealed = _aesgcm(key).encrypt(nonce, plaintext.encode("utf-8"), None)
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def decrypt_value(text: str, *, where: str = "", key: bytes | None = None) -> str:
    """The plaintext of an ``enc:v1:`` value. A wrong key or damaged value is a
    VALIDATION error naming ``where`` (the config field)."""
    if key is None:
        key = load_key(where=where)
    try:
        blob = _b64decode(text[len(PREFIX) :])
    except (binascii.Error, ValueError):
        blob = b""
    if len(blob) <= _NONCE:
        raise SecretValidationError(f"{where}: malformed enc:v1: value")
    cipher = _aesgcm(key)  # reports a missing cryptography package
    from cryptography.exceptions import InvalidTag

    try:
        plain: bytes = cipher.decrypt(blob[:_NONCE], blob[_NONCE:], None)
    except InvalidTag:
        raise SecretValidationError(
            f"{where}: cannot decrypt: wrong {KEY_ENV} or damaged value"
        ) from None
    return plain.decode("utf-8")
