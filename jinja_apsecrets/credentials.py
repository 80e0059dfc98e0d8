"""Credentials never travel in a pickle; an unpickled resolver reads them again.

Credentials are the provider fields declared ``Field(secret=True)``: tokens,
secret ids, API keys, access keys. A resolver is pickled to go to another
process (a process pool, a pickled Jinja environment), and three parts of it
could carry them: its configuration source when that is a mapping, and, for
each connection built from a configuration, the connection's spec and its
provider's options. None of them does:

* such a connection pickles its spec with each credential that has a value
  replaced by :data:`WITHHELD`, and no provider (the registry of
  :mod:`.connections` decides what each connection pickles as);
* the source pickles as it is when it is a file path (the file is read again),
  and as a mapping without the credentials written in it in plain text
  (:func:`portable_source`). A credential written as ``${VAR}`` or as an
  ``enc:`` value stays: that text says how to get the credential (from the
  environment; with the master key from the environment), it is not one.

Unpickling reads the source again (:meth:`.connections.Connections.recover`) and gives each such
connection its credentials from there (:func:`recover`), provided everything
else about the connection is unchanged: applying a changed configuration is
:meth:`Resolver.reload`'s job, not unpickling's. A connection that cannot get
its credentials back is served by :class:`Unavailable`, which fails every use
with CONNECTION_FAILED (it cannot log in) and says why. Nothing falls back to
an SDK's default credentials in its place (:func:`lacks` keeps ``reload`` from
doing so either), and nothing else fails: templates still compile, and the
other connections work.

A provider built in code and handed to the resolver pickles as it pickles
itself (the built-ins: their name and options): the resolver has nothing to
read its credentials from again.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from typing import TYPE_CHECKING, Any

from .crypto import is_encrypted
from .errors import SecretConnectionError, SecretsError
from .providers import get_provider_class
from .providers.base import FetchResult, Locator, Provider, SecretId

if TYPE_CHECKING:  # config imports cryptography's users and YAML: only when it is used
    from .config import Config, ConnectionSpec

__all__ = [
    "WITHHELD",
    "Unavailable",
    "lacks",
    "portable_source",
    "recover",
    "unread",
    "withheld",
    "withhold",
]


class _Marker(enum.Enum):
    WITHHELD = "withheld"


#: What a pickled spec holds in place of a credential (pickles by name).
WITHHELD = _Marker.WITHHELD

#: A whole value that only names an environment variable (an empty default at most).
_ENV_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-)?\}")

_HINT = (
    "Write credentials in the configuration as ${VAR} or enc: values, so that a process "
    "that unpickles the resolver reads them from its own environment"
)


def withhold(spec: Any, provider: type[Provider]) -> Any:
    """``spec`` (a :class:`~.config.ConnectionSpec`) with each credential of
    ``provider`` that has a value replaced by :data:`WITHHELD`. Any other
    spec (``add_connection`` takes any) comes back as it is."""
    options = getattr(spec, "options", None)
    if not isinstance(options, Mapping) or not hasattr(spec, "__dataclass_fields__"):
        return spec
    secret = {k for k, f in provider.fields.items() if f.secret and options.get(k) is not None}
    if not secret:
        return spec
    return replace(spec, options={k: WITHHELD if k in secret else v for k, v in options.items()})


def withheld(spec: Any) -> frozenset[str]:
    """The credentials a pickled ``spec`` came without."""
    options = getattr(spec, "options", None)
    if not isinstance(options, Mapping):
        return frozenset()
    return frozenset(k for k, v in options.items() if v is WITHHELD)


def lacks(current: Any, new: ConnectionSpec) -> bool:
    """Whether ``new`` (a spec read in this process) is the same provider as
    ``current`` but gives none of a credential ``current`` came without: then
    the connection stays unavailable rather than run without it."""
    missing = withheld(current)
    return (
        bool(missing)
        and new.provider == current.provider
        and (any(new.options.get(k) is None for k in missing))
    )


def portable_source(
    source: str | PathLike[str] | Mapping[str, Any] | None,
) -> str | PathLike[str] | Mapping[str, Any] | None:
    """``source`` as it is pickled: a path made absolute (the process that
    reads it again may work in another folder); a mapping without the
    credentials written in it in plain text (``${VAR}`` and ``enc:`` kept)."""
    if source is None:
        return None
    if not isinstance(source, Mapping):
        return os.path.abspath(source)
    connections = source.get("connections")
    if not isinstance(connections, Mapping):
        return source
    return {**source, "connections": {n: _portable(n, c) for n, c in connections.items()}}


def _portable(name: Any, raw: Any) -> Any:
    """One connection of a mapping as pickled. If any of its credentials is
    written in plain text, all of them are left out: it cannot work without
    that one anyway, and one of a pair left out alone (AWS's two keys) would
    make the whole mapping invalid where it is read again."""
    if not isinstance(raw, Mapping):
        return raw
    try:
        fields = get_provider_class(raw.get("provider", name)).fields
    except SecretsError:  # unknown here: keep the common settings only
        return {k: v for k, v in raw.items() if k in ("provider", "ttl", "concurrency")}
    secret = {k for k, v in raw.items() if k in fields and fields[k].secret and v not in (None, "")}
    if all(_says_where(raw[k]) for k in secret):
        return raw
    return {k: v for k, v in raw.items() if k not in secret}


def _says_where(value: Any) -> bool:
    """Whether ``value`` only says where a credential is (not a credential)."""
    return isinstance(value, str) and (
        _ENV_ONLY.fullmatch(value) is not None or is_encrypted(value)
    )


def unread(name: str, pickled: ConnectionSpec) -> SecretsError:
    """Why connection ``name`` has no credentials while no source was read."""
    return _no_credentials(
        name, pickled, "this resolver has no configuration source to read them from again"
    )


def recover(
    name: str, pickled: ConnectionSpec, config: Config | SecretsError | None
) -> ConnectionSpec | SecretsError:
    """The spec in ``config`` (the source read again in this process, the
    error reading it raised, or None without a source) that gives connection
    ``name`` back what ``pickled`` came without, or the error saying why not."""
    if config is None:
        return unread(name, pickled)
    if isinstance(config, SecretsError):
        reason = f"reading the configuration again failed: {config.message}"
        return _no_credentials(name, pickled, reason)
    missing = withheld(pickled)
    spec = config.connections.get(name)
    if spec is None or _without(spec, missing) != _without(pickled, missing):
        reason = (
            f"{config.origin} no longer configures it as it was when pickled "
            "(call reload() to apply the change)"
        )
        return _no_credentials(name, pickled, reason)
    if lacks(pickled, spec):
        reason = (
            f"{config.origin} gives none in this process (a credential written in plain "
            "text in a configuration mapping is never pickled)"
        )
        return _no_credentials(name, pickled, reason)
    return spec


def _no_credentials(name: str, pickled: ConnectionSpec, reason: str) -> SecretsError:
    fields = ", ".join(sorted(withheld(pickled)))
    return SecretConnectionError(
        f"No credentials for connection {name!r} in this process ({fields}): "
        f"a resolver is pickled without them, and {reason}",
        provider=name,
        hint=_HINT,
    )


def _without(spec: ConnectionSpec, fields: frozenset[str]) -> ConnectionSpec:
    return replace(spec, options={k: v for k, v in spec.options.items() if k not in fields})


class Unavailable(Provider):
    """Stands in for a connection that cannot work in this process: every
    use raises ``error`` (see the module docstring)."""

    id = "unavailable"

    def __init__(self, name: str, error: SecretsError) -> None:
        self.name = name
        self.options = {}
        self.error = error

    def parse_path(self, path: str) -> Locator:
        raise self.error.copy()

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        raise self.error.copy()

    def check(self) -> None:
        raise self.error.copy()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "error": self.error}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["error"])  # type: ignore[misc]
