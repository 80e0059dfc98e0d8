"""The named connections of a resolver, and the configuration they come from.

A :class:`Connections` registry maps connection names to
:class:`~.fetching.Connection` (a provider with its cache TTL, its fetch
concurrency and the config spec it was built from). It adds, replaces and
removes connections (closing the providers it lets go), makes itself match a
new configuration while keeping the connections whose spec did not change
(their clients and cached secrets stay), and rebuilds provider clients after a
fork. It pickles each connection with its settings, and no client and no
value: a connection built in code as its provider (a provider pickles as its
name and options), one built from a configuration as its spec without
credentials, which :meth:`Connections.recover` gets back after unpickling by
reading the configuration again (see :mod:`.credentials`).

The registry holds no cache: whenever it lets a connection go, it says so
(``add`` and ``remove`` return whether one went; :meth:`Connections.sync`
calls ``dropped`` at once for each), and the owner forgets what was cached
under that name. :class:`~.resolver.Resolver` composes one and keeps its
public methods (``add_connection``, ``configure``, ...) as thin doors to it.

:func:`load` reads a configuration with the keyword overrides of
``Resolver.from_config`` applied: they win over the file when the resolver is
built and on every ``reload()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, ValuesView
from os import PathLike
from typing import Any

from .credentials import Unavailable, lacks, recover, unread, withheld, withhold
from .errors import SecretsError, SecretValidationError
from .fetching import DEFAULT_CONCURRENCY, Connection
from .providers import get_provider_class
from .providers.base import Provider

__all__ = ["OVERRIDABLE", "Connections", "load"]

#: The settings of a configuration file that ``from_config`` keywords override.
OVERRIDABLE = ("ttl", "connection_ttl", "stale_if_error", "policy", "on_missing")

Source = str | PathLike[str] | Mapping[str, Any]


def load(source: Source, overrides: Mapping[str, Any]) -> Any:
    """The :class:`~.config.Config` of ``source`` with ``overrides`` set on it."""
    from .config import load_config  # config imports the providers' registry: lazily

    config = load_config(source)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


class Connections:
    """Connection name -> :class:`~.fetching.Connection` (see the module docstring)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Connection] = {}

    def add(
        self,
        provider: Provider,
        *,
        default_ttl: float,
        ttl: float | None = None,
        concurrency: int | None = None,
        spec: Any = None,
        replace: bool = False,
    ) -> bool:
        """Add (or with ``replace``, swap in) a connection for ``provider``.
        ``ttl`` defaults to the provider's own default, then ``default_ttl``.
        True if a connection was replaced (its provider is closed)."""
        name = provider.name
        if name in self._by_name and not replace:
            raise SecretValidationError(f"connection {name!r} is already configured")
        if ttl is None:
            ttl = provider.default_ttl if provider.default_ttl is not None else default_ttl
        conn = Connection(provider, float(ttl), int(concurrency or DEFAULT_CONCURRENCY), spec)
        old = self._by_name.get(name)
        self._by_name[name] = conn
        if old is not None:
            old.provider.close()
        return old is not None

    def remove(self, name: str) -> bool:
        """Remove (and close) connection ``name``; True if there was one."""
        conn = self._by_name.pop(name, None)
        if conn is not None:
            conn.provider.close()
        return conn is not None

    def sync(
        self, wanted: Mapping[str, Any], default_ttl: float, dropped: Callable[[str], None]
    ) -> None:
        """Match the specs ``wanted`` (a config's ``connections``): removed and
        changed connections are closed, and ``dropped`` is called for each at
        once (so a failure half-way leaves nothing stale behind); unchanged
        ones are kept as they are."""
        for name in list(self._by_name):
            if name not in wanted and self.remove(name):
                dropped(name)
        for name, spec in wanted.items():
            current = self._by_name.get(name)
            if current is not None and (current.spec == spec or lacks(current.spec, spec)):
                continue
            provider = get_provider_class(spec.provider)(name, spec.options)
            replaced = self.add(
                provider,
                default_ttl=default_ttl,
                ttl=spec.ttl,
                concurrency=spec.concurrency,
                spec=spec,
                replace=True,
            )
            if replaced:
                dropped(name)

    def get(self, name: str) -> Connection:
        """Connection ``name``; an unknown name is a :class:`SecretValidationError`."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none configured"
            raise SecretValidationError(
                f"Unknown connection {name!r}; configured connections: {known}", provider=name
            ) from None

    def find(self, name: str) -> Connection | None:
        return self._by_name.get(name)

    def values(self) -> ValuesView[Connection]:
        return self._by_name.values()

    def providers(self) -> dict[str, Provider]:
        return {name: c.provider for name, c in self._by_name.items()}

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def close(self) -> None:
        for conn in self._by_name.values():
            conn.provider.close()

    def _after_fork(self) -> None:
        """In a forked child: every provider builds its own client."""
        for conn in self._by_name.values():
            conn._after_fork()

    def recover(self, source: Source | None, overrides: Mapping[str, Any]) -> None:
        """After unpickling: give each connection that came without its
        credentials those ``source`` gives in this process (it is read only if
        one needs it); one that cannot get them stays
        :class:`~.credentials.Unavailable`, failing with the reason."""
        pending = [name for name, c in self._by_name.items() if withheld(c.spec)]
        if not pending:
            return
        config: Any = None
        if source is not None:
            try:
                config = load(source, overrides)
            except SecretsError as exc:
                config = exc
        for name in pending:
            conn = self._by_name[name]
            found = recover(name, conn.spec, config)
            provider: Provider
            if isinstance(found, SecretsError):  # a later reload() may still give them
                provider, spec = Unavailable(name, found), conn.spec
            else:
                provider, spec = get_provider_class(found.provider)(name, found.options), found
            self._by_name[name] = Connection(provider, conn.ttl, conn.concurrency, spec)

    def __getstate__(self) -> dict[str, Any]:
        # Never empty (pickle skips __setstate__ for a falsy state).
        return {"connections": {name: _portable(c) for name, c in self._by_name.items()}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._by_name = {}
        for name, (provider, ttl, concurrency, spec) in state["connections"].items():
            if provider is None:  # came without credentials: until recover() gives them
                provider = Unavailable(name, unread(name, spec))
            self._by_name[name] = Connection(provider, ttl, concurrency, spec)


def _portable(conn: Connection) -> tuple[Provider | None, float, int, Any]:
    """A connection as pickled: one built from a configuration that holds
    credentials as its spec without them (no provider: it is rebuilt from the
    spec), any other as its provider (which pickles as it pickles itself)."""
    if conn.spec is not None:
        spec = withhold(conn.spec, type(conn.provider))
        if withheld(spec):
            return None, conn.ttl, conn.concurrency, spec
    return conn.provider, conn.ttl, conn.concurrency, conn.spec
