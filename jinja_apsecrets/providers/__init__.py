"""Provider registry: provider ids mapped to ``"module:Class"`` strings.

Built-in providers and plugins share one table. Plugins register through the
``jinja_apsecrets.providers`` entry-point group (built-ins are declared there
too) or by calling :func:`register_provider`. Nothing is imported until a
connection of that provider is used, so boto3, hvac and the 1Password core are
loaded only when needed; a missing SDK gives an install hint.
"""

from __future__ import annotations

import importlib
import os
import threading
from importlib.metadata import entry_points

from ..errors import SecretValidationError
from .base import Document, Field, Locator, Provider, SecretId

__all__ = [
    "Document",
    "Field",
    "Locator",
    "Provider",
    "SecretId",
    "available_providers",
    "get_provider_class",
    "register_provider",
]

ENTRY_POINT_GROUP = "jinja_apsecrets.providers"

_BUILTIN: dict[str, str] = {
    "aws": "jinja_apsecrets.providers.aws:AwsProvider",
    "aws-ssm": "jinja_apsecrets.providers.aws_ssm:ParameterStoreProvider",
    "hashicorp": "jinja_apsecrets.providers.hashicorp:VaultProvider",
    "onepassword": "jinja_apsecrets.providers.onepassword:OnePasswordProvider",
    "cyberark-conjur": "jinja_apsecrets.providers.conjur:ConjurProvider",
    "env": "jinja_apsecrets.providers.local:EnvProvider",
    "file": "jinja_apsecrets.providers.local:FileProvider",
}

#: Which extra installs the SDK a provider needs.
_EXTRAS: dict[str, str] = {
    "aws": "aws",
    "aws-ssm": "aws",
    "hashicorp": "hashicorp",
    "onepassword": "onepassword",
    "cyberark-conjur": "conjur",
}

_registry: dict[str, str | type[Provider]] = dict(_BUILTIN)
_entry_points_loaded = False
_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    # A thread of the parent may have held it while it forked.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            # Built-ins are declared as entry points too; an installed plugin
            # may not silently replace one.
            _registry.setdefault(ep.name, ep.value)
        _entry_points_loaded = True


def register_provider(
    provider_id: str, target: str | type[Provider], *, clobber: bool = False
) -> None:
    """Register a provider class, or a ``"module:Class"`` string imported on use.

    Raises ``ValueError`` if the id is taken and ``clobber`` is false.
    """
    _load_entry_points()
    with _lock:
        if provider_id in _registry and not clobber:
            raise ValueError(
                f"provider {provider_id!r} is already registered; pass clobber=True to replace it"
            )
        _registry[provider_id] = target


def available_providers() -> list[str]:
    """The ids of every registered provider, sorted."""
    _load_entry_points()
    return sorted(_registry)


def get_provider_class(provider_id: str) -> type[Provider]:
    """The class for ``provider_id``, importing it on first use.

    Raises :class:`SecretValidationError` for an unknown id (listing the known
    ones) or a missing SDK (with the ``pip install`` command that adds it).
    """
    _load_entry_points()
    target = _registry.get(provider_id)
    if target is None:
        raise SecretValidationError(
            f"unknown provider {provider_id!r}; known providers: {', '.join(available_providers())}"
        )
    if isinstance(target, type):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing == module_name or module_name.startswith(missing + "."):
            raise SecretValidationError(
                f"provider {provider_id!r} points at {target!r}, which cannot be imported"
            ) from exc
        extra = _EXTRAS.get(provider_id)
        hint = f": pip install 'jinja-apsecrets[{extra}]'" if extra else ""
        raise SecretValidationError(
            f"provider {provider_id!r} needs {missing}, which is not installed{hint}",
            hint=f"pip install 'jinja-apsecrets[{extra}]'" if extra else None,
        ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise SecretValidationError(f"provider {provider_id!r}: {target!r} is not a Provider class")
    with _lock:
        _registry[provider_id] = cls
    return cls
