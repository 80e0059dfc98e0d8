"""The resolver: named connections, locating, policy and lookups.

A lookup of many references is served in one round: each reference is located
(parsed offline, once per connection and path and generation), checked against
the policy allow-list before any network call, and reduced to the distinct
secrets it names (many keys of one secret cost one fetch). The secrets are
claimed in the TTL cache (:mod:`.cache`: hits, single-flight waits, claims),
and the claims are fetched in rounds (:mod:`.fetching`). Connection checks
live in :mod:`.checks`; the registry of connections, and how a configuration
becomes them, in :mod:`.connections` (the resolver's connection methods are
doors to it).

Generations: :meth:`Resolver.generation` changes whenever cached secrets are
invalidated, or the configuration or policy changes. Parse memos, claims and
stored results are tied to the generation they were made under, so nothing
requested after a change is answered from before it.

A resolver pickles as its settings, hooks and connections: no cached value,
lock, pool or client (rebuilt where it is unpickled, and in a forked child,
see :mod:`.forksafe`), and no credential of a configuration: the unpickled
resolver reads those from its configuration source again (:mod:`.credentials`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from os import PathLike
from typing import Any, Literal

from cachetools import LRUCache

from .answers import Found, Located, Ref, about, answer, value_of, values_of
from .cache import Claim, Key, Outcome, SecretCache
from .checks import ConnectionChecks
from .connections import OVERRIDABLE, Connections, load
from .credentials import portable_source
from .errors import SecretNotFoundError, SecretsError, SecretValidationError
from .fetching import Connection, Fetcher
from .forksafe import track
from .hooks import tell
from .providers.base import Provider
from .twins import MaybeAwaitable, settle, then
from .walk import collect, rebuild

__all__ = ["Located", "OnMissing", "Ref", "Resolver"]

OnMissing = Literal["error", "undefined", "keep"]
ON_MISSING = ("error", "undefined", "keep")
#: The configuration's settings whose change starts a new generation.
_SETTINGS = ("ttl", "connection_ttl", "stale_if_error", "on_missing")


class Resolver:
    """Resolves ``(connection, path)`` references to values.

    ``ttl`` is the default cache lifetime of secrets (the spec's 5 minutes),
    ``connection_ttl`` that of connection checks (30 s). ``policy`` is an
    optional allow-list of ``"connection:path"`` glob patterns, checked before
    any network call. ``stale_if_error`` (seconds, default off) serves the last
    good value for that long past its expiry while a backend cannot be reached.
    ``timer`` is the clock (injectable for tests). ``audit`` receives one
    record per reference looked up (never a value); ``on_value`` is called
    with every string value a lookup hands out (for redaction; pickled with
    the resolver, so it must not pickle values it keeps). ``max_workers``
    caps the fetch pool (default: sized from the connections' ``concurrency``).
    """

    def __init__(
        self,
        connections: Mapping[str, Provider] | None = None,
        *,
        ttl: float = 300.0,
        connection_ttl: float = 30.0,
        policy: Sequence[str] | None = None,
        on_missing: OnMissing = "error",
        timer: Callable[[], float] = time.monotonic,
        maxsize: int = 10_000,
        max_workers: int | None = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
        on_value: Callable[[str], None] | None = None,
        stale_if_error: float = 0.0,
    ) -> None:
        if on_missing not in ON_MISSING:
            raise SecretValidationError(f"on_missing must be one of {', '.join(ON_MISSING)}")
        self.ttl = float(ttl)
        self._policy: tuple[str, ...] | None = tuple(policy) if policy is not None else None
        self.on_missing: OnMissing = on_missing
        self.timer = timer
        self.maxsize = maxsize
        self.max_workers = max_workers
        self.audit = audit
        self.on_value = on_value
        self.stale_if_error = float(stale_if_error)
        self.source: str | PathLike[str] | Mapping[str, Any] | None = None
        self.config_overrides: dict[str, Any] = {}
        self._connections = Connections()
        self._init_runtime(float(connection_ttl))
        for name, provider in (connections or {}).items():
            if provider.name != name:
                raise SecretValidationError(
                    f"connection {name!r} holds a provider named {provider.name!r}"
                )
            self.add_connection(provider)

    def _init_runtime(self, connection_ttl: float) -> None:
        """Caches, locks and the pool: never pickled, rebuilt after a fork."""
        self._lock = threading.Lock()  # guards the parse memo
        self._cache = SecretCache(
            timer=self.timer, maxsize=self.maxsize, stale_if_error=self.stale_if_error
        )
        self._parsed: LRUCache[Ref, tuple[int, Located]] = LRUCache(self.maxsize)
        self._checks = ConnectionChecks(connection_ttl, self.timer)
        self._fetcher = Fetcher(self._cache, self._connections.values, self.max_workers)
        track(self)

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`.forksafe`): cached values, memos and
        settings stay, so warm renders need no request; locks, the pool, the
        in-flight claims and provider clients are rebuilt."""
        self._lock = threading.Lock()
        self._cache._after_fork()
        self._checks._after_fork()
        self._fetcher._after_fork()
        self._connections._after_fork()

    # -- settings ------------------------------------------------------------------

    @property
    def policy(self) -> tuple[str, ...] | None:
        """The allow-list of ``"connection:path"`` globs, or None (all allowed)."""
        return self._policy

    @policy.setter
    def policy(self, patterns: Sequence[str] | None) -> None:
        new = tuple(patterns) if patterns is not None else None
        if new != self._policy:
            self._policy = new
            # Cached secrets stay right; decisions memoized under the old list do not.
            self._cache.bump()

    @property
    def connection_ttl(self) -> float:
        """How long a connection check's outcome is kept, in seconds."""
        return self._checks.ttl

    @connection_ttl.setter
    def connection_ttl(self, seconds: float) -> None:
        self._checks.ttl = seconds

    @property
    def requests(self) -> int:
        """How many backend requests this resolver has made (for summaries)."""
        return self._fetcher.requests

    def generation(self) -> int:
        """A counter that changes whenever cached secrets are invalidated or the
        configuration or policy changes: what was derived from values or
        decisions of an older generation must not be used any more."""
        return self._cache.generation

    # -- connections ---------------------------------------------------------------

    @classmethod
    def from_config(
        cls, source: str | PathLike[str] | Mapping[str, Any], **kwargs: Any
    ) -> Resolver:
        """Build a resolver from a YAML file or a mapping of the same shape.
        Keyword arguments win over the file, now and on :meth:`reload`."""
        overrides = {k: v for k, v in kwargs.items() if k in OVERRIDABLE}
        config = load(source, overrides)
        resolver = cls(**{**config.resolver_options(), **kwargs})
        resolver.config_overrides = overrides
        resolver.source = source
        resolver.configure(config)
        return resolver

    def configure(self, config: Any) -> None:
        """Apply a new configuration (a :class:`~jinja_apsecrets.config.Config`).

        Connections whose settings did not change keep their clients and cached
        secrets; changed or removed ones are rebuilt and their entries dropped.
        Any change starts a new :meth:`generation`.
        """
        settings = (self.ttl, self.connection_ttl, self.stale_if_error, self.on_missing)
        if settings != tuple(getattr(config, name) for name in _SETTINGS):
            self._cache.bump()  # what was rendered under the old settings is not reused
        self.ttl = config.ttl
        self.connection_ttl = config.connection_ttl
        self.stale_if_error = self._cache.stale_if_error = config.stale_if_error
        self.policy = config.policy
        self.on_missing = config.on_missing
        self._connections.sync(config.connections, self.ttl, self.invalidate)

    def reload(self) -> None:
        """Read the configuration source again and apply what changed."""
        if self.source is not None:
            self.configure(load(self.source, self.config_overrides))

    def add_connection(
        self,
        provider: Provider,
        *,
        ttl: float | None = None,
        concurrency: int | None = None,
        spec: Any = None,
        replace: bool = False,
    ) -> None:
        """Add (or with ``replace``, swap in) a connection for ``provider``."""
        if self._connections.add(
            provider,
            default_ttl=self.ttl,
            ttl=ttl,
            concurrency=concurrency,
            spec=spec,
            replace=replace,
        ):
            self.invalidate(provider.name)

    def remove_connection(self, name: str) -> None:
        if self._connections.remove(name):
            self.invalidate(name)

    @property
    def connections(self) -> Mapping[str, Provider]:
        """The configured providers by connection name (read-only view)."""
        return self._connections.providers()

    def connection(self, name: str) -> Connection:
        return self._connections.get(name)

    def invalidate(self, connection: str | None = None) -> None:
        """Forget cached secrets and checks of one connection, or of all.

        This starts a new generation: a fetch in flight now is handed only to
        the callers already waiting for it and never stored.
        """
        self._cache.invalidate(connection)
        self._checks.forget(connection)

    # -- locating and policy ---------------------------------------------------------

    def allowed(self, connection: str, path: str) -> bool:
        """Whether the policy allow-list admits ``connection:path``."""
        if self.policy is None:
            return True
        subject = f"{connection}:{path}"
        return any(fnmatchcase(subject, pattern) for pattern in self.policy)

    def locate(self, connection: str, path: str) -> Located:
        """Parse a reference offline; errors are returned, not raised."""
        return self._locate_all([(connection, path)], self._cache.generation)[(connection, path)]

    def _locate_all(self, refs: Iterable[Ref], generation: int) -> dict[Ref, Located]:
        """Locate ``refs`` under ``generation``: memoized (LRU), one lock
        round to read the memo and one to fill it; parsing runs outside."""
        with self._lock:
            memo = {ref: self._parsed.get(ref) for ref in refs}
        located: dict[Ref, Located] = {}
        new: dict[Ref, tuple[int, Located]] = {}
        for ref, entry in memo.items():
            if entry is not None and entry[0] == generation:
                located[ref] = entry[1]
                continue
            located[ref] = self._parse(*ref)
            new[ref] = (generation, located[ref])
        if new:
            with self._lock:
                self._parsed.update(new)
        return located

    def _parse(self, connection: str, path: str) -> Located:
        try:
            conn = self.connection(connection)
            locator = conn.provider.parse_path(path)
        except SecretsError as exc:
            return about(exc, (connection, path))
        if not self.allowed(connection, path):
            return SecretNotFoundError(
                "Access refused by the policy allow-list (no request was made)",
                provider=connection,
                path=path,
                hint="Add a matching pattern to policy.allow",
            )
        return conn, locator

    def cacheable(self, refs: Iterable[Ref]) -> list[Ref]:
        """The references whose connection is known and keeps values (ttl > 0)."""
        find = self._connections.find
        return [ref for ref in refs if (conn := find(ref[0])) is not None and conn.ttl > 0]

    def validate(self, connection: str, path: str) -> None:
        """Raise the VALIDATION error of a reference, if it has one (offline)."""
        result = self.locate(connection, path)
        if isinstance(result, SecretValidationError):
            raise result.copy()

    # -- lookups -----------------------------------------------------------------------

    def lookup(self, refs: Iterable[Ref], *, template: str | None = None) -> Found:
        """Resolve many references in one round: value (or error) and expiry each."""
        found = self._lookup(refs, template, self._fetcher.fetch)
        assert isinstance(found, dict)  # the sync fetch gives values, not awaitables
        return found

    async def lookup_async(self, refs: Iterable[Ref], *, template: str | None = None) -> Found:
        """Async :meth:`lookup`: the loop is never blocked; fetches run in the pool."""
        return await settle(self._lookup(refs, template, self._fetcher.fetch_async))

    def _lookup(
        self,
        refs: Iterable[Ref],
        template: str | None,
        fetch: Callable[[Claim, dict[Key, Connection]], MaybeAwaitable[dict[Key, Outcome]]],
    ) -> MaybeAwaitable[Found]:
        """One body for both doors: locate and claim, fetch the claims (the one
        step that is sync or async), pick the values out."""
        refs = list(refs)
        while True:  # locate and claim under one generation, or locate again
            generation = self._cache.generation
            located = self._locate_all(refs, generation)
            keys: dict[Key, Connection] = {}
            for result in located.values():
                if not isinstance(result, SecretsError):
                    conn, locator = result
                    keys[(conn.provider.name, locator.secret)] = conn
            claim = self._cache.claim(keys, generation)
            if claim is not None:
                break
        if not claim.owned and not claim.waiting:  # all cached: no fetch step
            return self._finish(located, claim.hits, claim, template)
        try:
            fetching = fetch(claim, keys)
        except BaseException:  # claims nobody will complete must not hang others
            self._cache.abandon(claim.owned, "fetch did not complete")
            raise
        return then(fetching, lambda got: self._finish(located, got, claim, template))

    def _finish(
        self,
        located: Mapping[Ref, Located],
        outcomes: Mapping[Key, Outcome],
        claim: Claim,
        template: str | None,
    ) -> Found:
        """The lookup's answer (see :func:`.answers.answer`), with the hooks
        told (see :func:`.hooks.tell`)."""
        found = answer(located, outcomes, self.timer())
        tell(found, located, claim.hits, template, on_value=self.on_value, audit=self.audit)
        return found

    def get_many(self, refs: Iterable[Ref]) -> dict[Ref, str | SecretsError]:
        """Resolve many references together; each maps to its value or its error."""
        return values_of(self.lookup(refs))

    async def get_many_async(self, refs: Iterable[Ref]) -> dict[Ref, str | SecretsError]:
        """Async :meth:`get_many`."""
        return values_of(await self.lookup_async(refs))

    def get(self, connection: str, path: str) -> str:
        """The value of one reference. Raises its :class:`SecretsError`."""
        return value_of(self.lookup([(connection, path)]), (connection, path))

    async def get_async(self, connection: str, path: str) -> str:
        """Async :meth:`get`."""
        return value_of(await self.lookup_async([(connection, path)]), (connection, path))

    def prefetch(self, refs: Iterable[Ref]) -> None:
        """Warm the cache for ``refs`` in one round (a job's references, before
        its renders); errors are kept for when they are used."""
        self.lookup(refs)

    # -- connection checks -----------------------------------------------------------

    def check(self, name: str) -> None:
        """Live connection test (the spec's "connect"); cached ``connection_ttl``.

        Returns nothing on success; raises :class:`SecretConnectionError` (or
        :class:`SecretValidationError` for an unknown connection) on failure.
        """
        self._checks.run(name, self.connection(name).provider, lambda p: p.check())

    async def check_async(self, name: str) -> None:
        """Async :meth:`check`."""
        provider = self.connection(name).provider
        await settle(self._checks.run(name, provider, lambda p: p.check_async()))

    # -- nested data -----------------------------------------------------------------

    def resolve(
        self, obj: Any, *, on_missing: OnMissing | None = None, source: str | None = None
    ) -> Any:
        """Resolve references in strings anywhere in dicts, lists and tuples.

        Whole-string and embedded references are both replaced; strings without
        references come back unchanged, and ``obj`` is never mutated. ``source``
        names where the data came from, for audit records.
        """
        refs = collect(obj)
        if not refs:
            return obj
        found = self.lookup({r.key for r in refs}, template=source)
        return rebuild(obj, values_of(found), on_missing or self.on_missing)

    async def resolve_async(
        self, obj: Any, *, on_missing: OnMissing | None = None, source: str | None = None
    ) -> Any:
        """Async :meth:`resolve`."""
        refs = collect(obj)
        if not refs:
            return obj
        found = await self.lookup_async({r.key for r in refs}, template=source)
        return rebuild(obj, values_of(found), on_missing or self.on_missing)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Shut the thread pool down and close provider clients."""
        self._fetcher.close()
        self._connections.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(self._connections.names())
        return f"<Resolver connections=[{names}] cached={len(self._cache)}>"

    def __getstate__(self) -> dict[str, Any]:
        # Settings, hooks and connections only (see the module docstring). A
        # hook that keeps values (a Redactor) leaves them out of its own pickle.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["source"] = portable_source(self.source)  # no plain-text credentials
        state["_policy"] = self._policy
        state["connection_ttl"] = self.connection_ttl
        state["_connections"] = self._connections  # specs without credentials, or providers
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        connection_ttl = state.pop("connection_ttl")
        self.__dict__.update(state)
        self._init_runtime(connection_ttl)
        self._connections.recover(self.source, self.config_overrides)
