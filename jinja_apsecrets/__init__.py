"""Jinja2 templates that pull secrets from secret managers at render time.

>>> import jinja2, jinja_apsecrets
>>> resolver = jinja_apsecrets.Resolver.from_config("apsecrets.yaml")   # doctest: +SKIP
>>> env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
>>> env.install_secret_resolver(resolver)                               # doctest: +SKIP
"""

from __future__ import annotations

from .errors import (
    CONNECTION_FAILED,
    GET_SECRET_FAILED,
    VALIDATION,
    SecretConnectionError,
    SecretNotFoundError,
    SecretReferenceSyntaxError,
    SecretsError,
    SecretValidationError,
)
from .extension import SecretsExtension
from .functions import install_secret_resolver
from .providers import available_providers, register_provider
from .providers.base import Field, Locator, Provider, SecretId
from .reference import SEPARATOR, Reference, find_references
from .resolver import Resolver
from .undefined import MissingSecret
from .values import SecretText

__version__ = "0.1.0"

__all__ = [
    "CONNECTION_FAILED",
    "GET_SECRET_FAILED",
    "SEPARATOR",
    "VALIDATION",
    "Field",
    "Locator",
    "MissingSecret",
    "Provider",
    "Reference",
    "Resolver",
    "SecretConnectionError",
    "SecretId",
    "SecretNotFoundError",
    "SecretReferenceSyntaxError",
    "SecretText",
    "SecretValidationError",
    "SecretsError",
    "SecretsExtension",
    "__version__",
    "available_providers",
    "find_references",
    "install_secret_resolver",
    "register_provider",
]
