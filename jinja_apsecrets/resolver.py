"""The resolver: named connections, cache, single-flight, dedup, batching, policy.

A request for many references is served in one round: references are parsed
(offline, once per connection and path), checked against the policy allow-list
before any network call, reduced to the distinct secrets they name (many keys
of one secret cost one fetch), looked up in the TTL cache, and the misses are
grouped into each provider's batches and fetched concurrently, bounded per
connection. The sync path uses a thread pool owned by the resolver; the async
path uses the running loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from os import PathLike
from typing import Any, Literal, NoReturn

from .cache import Key, Outcome, SecretCache
from .errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)
from .fetching import DEFAULT_CONCURRENCY, Connection, Fetcher
from .forksafe import track
from .providers import get_provider_class
from .providers.base import Locator, Provider
from .walk import collect, rebuild

__all__ = ["OnMissing", "Ref", "Resolver"]

log = logging.getLogger("jinja_apsecrets")

Ref = tuple[str, str]
OnMissing = Literal["error", "undefined", "keep"]
ON_MISSING = ("error", "undefined", "keep")


def _for_ref(error: SecretsError, connection: str, path: str | None) -> SecretsError:
    """A copy of ``error`` that names the reference it is about."""
    if error.provider == connection and error.path == path:
        return error
    return type(error)(
        error.message,
        provider=connection,
        path=path,
        template=error.template,
        lineno=error.lineno,
        hint=error.hint,
    )


class Resolver:
    """Resolves ``(connection, path)`` references to values.

    ``ttl`` is the default cache lifetime of secrets (the spec's 5 minutes),
    ``connection_ttl`` that of connection checks (30 s). ``policy`` is an
    optional allow-list of ``"connection:path"`` glob patterns, checked before
    any network call. ``stale_if_error`` (seconds, default off) serves the last
    good value for that long past its expiry while a backend cannot be reached.
    ``timer`` is the clock (injectable for tests).
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
        stale_if_error: float = 0.0,
        on_value: Callable[[str], None] | None = None,
    ) -> None:
        if on_missing not in ON_MISSING:
            raise SecretValidationError(f"on_missing must be one of {', '.join(ON_MISSING)}")
        self.ttl = float(ttl)
        self.connection_ttl = float(connection_ttl)
        self._policy: tuple[str, ...] | None = tuple(policy) if policy is not None else None
        self.on_missing: OnMissing = on_missing
        self.timer = timer
        self.maxsize = maxsize
        self.max_workers = max_workers
        self.audit = audit
        self.stale_if_error = float(stale_if_error)
        #: Called with every string value :meth:`lookup` hands out (a redactor's ``add``).
        self.on_value = on_value
        self.source: str | PathLike[str] | Mapping[str, Any] | None = None
        self.config_overrides: dict[str, Any] = {}
        self._connections: dict[str, Connection] = {}
        self._init_runtime()
        for name, provider in (connections or {}).items():
            if provider.name != name:
                raise SecretValidationError(
                    f"connection {name!r} holds a provider named {provider.name!r}"
                )
            self.add_connection(provider)

    @property
    def policy(self) -> tuple[str, ...] | None:
        """The allow-list of ``"connection:path"`` globs, or None (all allowed)."""
        return self._policy

    @policy.setter
    def policy(self, patterns: Sequence[str] | None) -> None:
        new = tuple(patterns) if patterns is not None else None
        if new != self._policy:
            self._policy = new
            with self._lock:
                self._parsed.clear()  # decisions memoized under the old list
            self._bump()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._cache = SecretCache(
            timer=self.timer, maxsize=self.maxsize, stale_if_error=self.stale_if_error
        )
        self._parsed: dict[Ref, tuple[Connection, Locator] | SecretsError] = {}
        self._status: dict[str, tuple[float, SecretsError | None]] = {}
        self._runs: dict[str, tuple[float, int, Any]] = {}
        self._runs_escaped: dict[str, tuple[float, int, Any]] = {}
        self._generation = 0
        self._fetcher = Fetcher(self._cache, self.max_workers)
        self._handed_out: set[str] | None = None
        track(self)

    def _after_fork(self) -> None:
        """In a forked child (see :mod:`.forksafe`): cached values, memos and
        settings stay, so warm renders need no request; locks, the pool, the
        in-flight table and provider clients are rebuilt."""
        self._lock = threading.Lock()
        self._cache._after_fork()
        self._fetcher._after_fork()
        for conn in self._connections.values():
            conn._after_fork()

    # -- configuration ---------------------------------------------------------

    @classmethod
    def from_config(
        cls, source: str | PathLike[str] | Mapping[str, Any], **kwargs: Any
    ) -> Resolver:
        """Build a resolver from a YAML file or a mapping of the same shape."""
        from .config import load_config

        config = load_config(source)
        # Keyword arguments win over the file, now and on reload().
        for name in ("ttl", "connection_ttl", "stale_if_error", "policy", "on_missing"):
            if name in kwargs:
                setattr(config, name, kwargs[name])
        resolver = cls(**{**config.resolver_options(), **kwargs})
        resolver.config_overrides = {k: v for k, v in kwargs.items() if hasattr(config, k)}
        resolver.source = source
        resolver.configure(config)
        return resolver

    def configure(self, config: Any) -> None:
        """Apply a new configuration (a :class:`~jinja_apsecrets.config.Config`).

        Connections whose settings did not change keep their clients and cached
        secrets; changed or removed ones are rebuilt and their entries dropped.
        """
        self.ttl = config.ttl
        self.connection_ttl = config.connection_ttl
        self.stale_if_error = self._cache.stale_if_error = config.stale_if_error
        self.policy = config.policy
        self.on_missing = config.on_missing
        wanted = config.connections
        for name in list(self._connections):
            if name not in wanted:
                self.remove_connection(name)
        for name, spec in wanted.items():
            current = self._connections.get(name)
            if current is not None and current.spec == spec:
                continue
            provider = get_provider_class(spec.provider)(name, spec.options)
            self.add_connection(
                provider, ttl=spec.ttl, concurrency=spec.concurrency, spec=spec, replace=True
            )

    def reload(self) -> None:
        """Read the configuration source again and apply what changed."""
        if self.source is None:
            return
        from .config import load_config

        config = load_config(self.source)
        for name, value in self.config_overrides.items():
            setattr(config, name, value)
        self.configure(config)

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
        name = provider.name
        if name in self._connections and not replace:
            raise SecretValidationError(f"connection {name!r} is already configured")
        if ttl is None:
            ttl = provider.default_ttl if provider.default_ttl is not None else self.ttl
        conn = Connection(provider, float(ttl), int(concurrency or DEFAULT_CONCURRENCY), spec)
        old = self._connections.get(name)
        self._connections[name] = conn
        if old is not None:
            old.provider.close()
            self.invalidate(name)

    def remove_connection(self, name: str) -> None:
        conn = self._connections.pop(name, None)
        if conn is not None:
            conn.provider.close()
            self.invalidate(name)

    @property
    def connections(self) -> Mapping[str, Provider]:
        """The configured providers by connection name (read-only view)."""
        return {name: c.provider for name, c in self._connections.items()}

    def connection(self, name: str) -> Connection:
        try:
            return self._connections[name]
        except KeyError:
            known = ", ".join(sorted(self._connections)) or "none configured"
            raise SecretValidationError(
                f"Unknown connection {name!r}; configured connections: {known}", provider=name
            ) from None

    def invalidate(self, connection: str | None = None) -> None:
        """Forget cached secrets and checks of one connection, or of all."""
        self._cache.invalidate(connection)
        with self._lock:
            if connection is None:
                self._status.clear()
                self._parsed.clear()
            else:
                self._status.pop(connection, None)
                for ref in [r for r in self._parsed if r[0] == connection]:
                    self._parsed.pop(ref, None)
        self._bump()

    def _bump(self) -> None:
        with self._lock:
            self._generation += 1
            self._runs.clear()
            self._runs_escaped.clear()

    # -- parsing and policy ----------------------------------------------------

    def allowed(self, connection: str, path: str) -> bool:
        """Whether the policy allow-list admits ``connection:path``."""
        if self.policy is None:
            return True
        subject = f"{connection}:{path}"
        return any(fnmatchcase(subject, pattern) for pattern in self.policy)

    def locate(self, connection: str, path: str) -> tuple[Connection, Locator] | SecretsError:
        """Parse a reference offline; errors are returned, not raised. Memoized."""
        ref = (connection, path)
        found = self._parsed.get(ref)
        if found is not None:
            return found
        result: tuple[Connection, Locator] | SecretsError
        try:
            conn = self.connection(connection)
            locator = conn.provider.parse_path(path)
            if not self.allowed(connection, path):
                raise SecretNotFoundError(
                    "Access refused by the policy allow-list (no request was made)",
                    hint="Add a matching pattern to policy.allow",
                )
            result = (conn, locator)
        except SecretsError as exc:
            result = _for_ref(exc, connection, path)
        if len(self._parsed) >= self.maxsize:
            self._parsed.clear()
        self._parsed[ref] = result
        return result

    def cacheable(self, refs: Iterable[Ref]) -> list[Ref]:
        """The references whose connection is known and keeps values (ttl > 0)."""
        out = []
        for ref in refs:
            conn = self._connections.get(ref[0])
            if conn is not None and conn.ttl > 0:
                out.append(ref)
        return out

    def validate(self, connection: str, path: str) -> None:
        """Raise the VALIDATION error of a reference, if it has one (offline)."""
        result = self.locate(connection, path)
        if isinstance(result, SecretValidationError):
            raise result.copy()

    # -- lookups -----------------------------------------------------------------

    def _plan(
        self, refs: Iterable[Ref]
    ) -> tuple[dict[Ref, tuple[Connection, Locator] | SecretsError], dict[Key, Connection]]:
        located: dict[Ref, tuple[Connection, Locator] | SecretsError] = {}
        keys: dict[Key, Connection] = {}
        for ref in refs:
            if ref in located:
                continue
            result = self.locate(*ref)
            located[ref] = result
            if not isinstance(result, SecretsError):
                conn, locator = result
                keys[(conn.provider.name, locator.secret)] = conn
        return located, keys

    def _finish(
        self,
        located: Mapping[Ref, tuple[Connection, Locator] | SecretsError],
        outcomes: Mapping[Key, Outcome],
        hits: Iterable[Key],
        template: str | None,
    ) -> dict[Ref, tuple[str | SecretsError, float]]:
        hit_keys = set(hits)
        now = self.timer()
        out: dict[Ref, tuple[str | SecretsError, float]] = {}
        for ref, result in located.items():
            value: str | SecretsError
            expires = now
            if isinstance(result, SecretsError):
                value = result
            else:
                conn, locator = result
                outcome = outcomes[(conn.provider.name, locator.secret)]
                if isinstance(outcome, SecretsError):
                    value = _for_ref(outcome, *ref)
                else:
                    try:
                        value = conn.provider.select(outcome.document, locator)
                        expires = outcome.expires
                    except SecretsError as exc:
                        value = _for_ref(exc, *ref)
                    except (TypeError, ValueError) as exc:  # a value that is not text
                        value = SecretNotFoundError(
                            f"Secret value for {ref[1]} cannot be printed as text "
                            f"({type(exc).__name__})",
                            provider=ref[0],
                            path=ref[1],
                        )
            out[ref] = (value, expires)
            if self.on_value is not None and isinstance(value, str):
                self.on_value(value)
            if self._handed_out is not None and isinstance(value, str):
                self._handed_out.add(value)
            if self.audit is not None:
                key = None if isinstance(result, SecretsError) else (ref[0], result[1].secret)
                self._audit(ref, value, key in hit_keys, template)
        return out

    def _audit(self, ref: Ref, value: str | SecretsError, hit: bool, template: str | None) -> None:
        assert self.audit is not None
        outcome = value.code if isinstance(value, SecretsError) else "ok"
        try:
            self.audit(
                {
                    "time": time.time(),
                    "template": template,
                    "connection": ref[0],
                    "path": ref[1],
                    "cache": "hit" if hit else "miss",
                    "outcome": outcome,
                }
            )
        except Exception:  # an audit sink must not break rendering
            log.exception("audit hook failed")

    def lookup(
        self, refs: Iterable[Ref], *, template: str | None = None
    ) -> dict[Ref, tuple[str | SecretsError, float]]:
        """Resolve many references in one round: value (or error) and expiry each."""
        located, keys = self._plan(refs)
        claim = self._cache.claim(keys)
        outcomes: dict[Key, Outcome] = dict(claim.hits)
        try:
            if claim.owned:
                self._fetcher.fetch(claim.owned, keys)
        finally:
            self._cache.abandon(
                [k for k, f in claim.owned.items() if not f.done()], "fetch did not complete"
            )
        for key, future in {**claim.owned, **claim.waiting}.items():
            outcomes[key] = future.result()
        return self._finish(located, outcomes, claim.hits, template)

    async def lookup_async(
        self, refs: Iterable[Ref], *, template: str | None = None
    ) -> dict[Ref, tuple[str | SecretsError, float]]:
        """Async :meth:`lookup`: fetches run on the running loop."""
        located, keys = self._plan(refs)
        claim = self._cache.claim(keys)
        outcomes: dict[Key, Outcome] = dict(claim.hits)
        try:
            if claim.owned:
                await self._fetcher.fetch_async(claim.owned, keys)
        except asyncio.CancelledError:
            raise  # the submitted batches still complete, for whoever else waits
        except BaseException:
            self._cache.abandon(
                [k for k, f in claim.owned.items() if not f.done()], "fetch did not complete"
            )
            raise
        for key, future in {**claim.owned, **claim.waiting}.items():
            outcomes[key] = await asyncio.wrap_future(future)
        return self._finish(located, outcomes, claim.hits, template)

    def get_many(self, refs: Iterable[Ref]) -> dict[Ref, str | SecretsError]:
        """Resolve many references together; each maps to its value or its error."""
        return {ref: value for ref, (value, _) in self.lookup(refs).items()}

    async def get_many_async(self, refs: Iterable[Ref]) -> dict[Ref, str | SecretsError]:
        """Async :meth:`get_many`."""
        found = await self.lookup_async(refs)
        return {ref: value for ref, (value, _) in found.items()}

    def get(self, connection: str, path: str) -> str:
        """The value of one reference. Raises its :class:`SecretsError`."""
        value = self.get_many([(connection, path)])[(connection, path)]
        if isinstance(value, SecretsError):
            raise value.copy()
        return value

    async def get_async(self, connection: str, path: str) -> str:
        """Async :meth:`get`."""
        value = (await self.get_many_async([(connection, path)]))[(connection, path)]
        if isinstance(value, SecretsError):
            raise value.copy()
        return value

    def prefetch(self, refs: Iterable[Ref]) -> None:
        """Warm the cache for ``refs``; errors are kept for when they are used."""
        self.lookup(refs)

    async def prefetch_async(self, refs: Iterable[Ref]) -> None:
        await self.lookup_async(refs)

    # -- connection checks -------------------------------------------------------

    def check(self, name: str) -> None:
        """Live connection test (the spec's "connect"); cached ``connection_ttl``.

        Returns nothing on success; raises :class:`SecretConnectionError` (or
        :class:`SecretValidationError` for an unknown connection) on failure.
        """
        conn = self.connection(name)
        if self._use_cached_status(name):
            return
        try:
            conn.provider.check()
        except Exception as exc:
            self._fail_check(name, exc)
        self._store_status(name, None)

    async def check_async(self, name: str) -> None:
        """Async :meth:`check`."""
        conn = self.connection(name)
        if self._use_cached_status(name):
            return
        try:
            await conn.provider.check_async()
        except Exception as exc:
            self._fail_check(name, exc)
        self._store_status(name, None)

    def _fail_check(self, name: str, exc: Exception) -> NoReturn:
        """Cache a failed check's error and raise it."""
        error: SecretsError
        if isinstance(exc, SecretsError):
            error = exc if exc.provider == name else _for_ref(exc, name, exc.path)
        else:
            error = SecretConnectionError(f"{type(exc).__name__} during check", provider=name)
        self._store_status(name, error)
        raise error.copy() from None

    def _use_cached_status(self, name: str) -> bool:
        """True if a fresh status is cached (re-raising its error), else False."""
        cached = self._cached_status(name)
        if cached is None:
            return False
        if cached[1] is not None:
            raise cached[1].copy()
        return True

    def _cached_status(self, name: str) -> tuple[float, SecretsError | None] | None:
        with self._lock:
            status = self._status.get(name)
        if status is not None and status[0] > self.timer():
            return status
        return None

    def _store_status(self, name: str, error: SecretsError | None) -> None:
        with self._lock:
            self._status[name] = (self.timer() + self.connection_ttl, error)

    # -- templates: cached runs of text and values ---------------------------------

    def cached_run(self, key: str, escaped: bool = False) -> Any:
        """A rendered run of template text and values, if still fresh, else None.

        Held here, never in the template cache: it holds secret values.
        """
        entry = (self._runs_escaped if escaped else self._runs).get(key)
        if entry is not None and entry[0] > self.timer() and entry[1] == self._generation:
            return entry[2]
        return None

    def generation(self) -> int:
        """A counter bumped whenever cached secrets are invalidated."""
        return self._generation

    def store_run(
        self, key: str, value: Any, expires: float, generation: int, *, escaped: bool = False
    ) -> None:
        """Keep a rendered run until ``expires`` unless the config changed since."""
        runs = self._runs_escaped if escaped else self._runs
        with self._lock:
            if generation != self._generation or expires <= self.timer():
                return
            if len(runs) >= self.maxsize:
                runs.clear()
            runs[key] = (expires, generation, value)

    # -- nested data -------------------------------------------------------------

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
        values = {ref: value for ref, (value, _) in found.items()}
        return rebuild(obj, values, on_missing or self.on_missing)

    async def resolve_async(
        self, obj: Any, *, on_missing: OnMissing | None = None, source: str | None = None
    ) -> Any:
        """Async :meth:`resolve`."""
        refs = collect(obj)
        if not refs:
            return obj
        found = await self.lookup_async({r.key for r in refs}, template=source)
        values = {ref: value for ref, (value, _) in found.items()}
        return rebuild(obj, values, on_missing or self.on_missing)

    # -- lifecycle and safety ------------------------------------------------------

    def remember_values(self) -> None:
        """Keep every value handed out from now on (in memory), so that
        :meth:`redact` also knows those of uncached connections. For one-shot
        processes such as the CLI."""
        if self._handed_out is None:
            self._handed_out = set()

    def redact(self, text: str, *, placeholder: str = "<redacted>") -> str:
        """``text`` with every cached (or remembered) secret value of 4
        characters or more replaced: for messages that may quote a value."""
        values: set[str] = set(self._handed_out or ())

        def leaves(doc: Any) -> None:
            if isinstance(doc, str):
                values.add(doc)
            elif isinstance(doc, Mapping):
                for item in doc.values():
                    leaves(item)
            elif isinstance(doc, (list, tuple)):
                for item in doc:
                    leaves(item)
            elif doc is not None:
                values.add(str(doc))

        for document in self._cache.documents():
            leaves(document)
        for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
            text = text.replace(value, placeholder)
        return text

    def close(self) -> None:
        """Shut the thread pool down and close provider clients."""
        self._fetcher.close()
        for conn in self._connections.values():
            conn.provider.close()

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._connections))
        return f"<Resolver connections=[{names}] cached={len(self._cache)}>"

    def __getstate__(self) -> dict[str, Any]:
        # Settings and providers (rebuilt from their options) only: no cached
        # secrets, locks, pools or SDK clients.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["_policy"] = self._policy
        state["_connections"] = {
            name: (c.provider, c.ttl, c.concurrency, c.spec)
            for name, c in self._connections.items()
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        connections = state.pop("_connections")
        self.__dict__.update(state)
        self._init_runtime()
        self._connections = {
            name: Connection(provider, ttl, concurrency, spec)
            for name, (provider, ttl, concurrency, spec) in connections.items()
        }
