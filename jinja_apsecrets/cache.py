"""The secret cache: TTL per connection, shared by threads, single-flight per key.

Keys are ``(connection, SecretId)``; values are fetched documents with their
expiry time. The lock guards only reads and writes of the cache and of the
in-flight table; fetches run outside it. A caller that finds a key neither
cached nor in flight *claims* it (gets a future it must complete); callers that
find it in flight wait on that future. So one key is fetched once per TTL
window, however many threads or tasks ask at once.

The clock is injectable (``timer``), so TTL tests never sleep.

Generations: :meth:`SecretCache.invalidate` drops entries *and* the claims in
flight, and counts a new generation. A result is stored only while its claim
is still the current one, so a fetch that started before an invalidation
answers the callers already waiting on it and is never stored; a claim
planned under an older generation is refused (the caller plans again).

With ``stale_if_error`` > 0, the last good document of each key is kept that
many seconds past its expiry; when a refresh fails because the backend cannot
be reached, that document is served instead (and a warning logged).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Union

from cachetools import TLRUCache

from .errors import SecretConnectionError, SecretsError
from .providers.base import Document, SecretId

__all__ = ["CacheEntry", "Claim", "Key", "Outcome", "SecretCache"]

log = logging.getLogger("jinja_apsecrets")

Key = tuple[str, SecretId]


@dataclass(frozen=True)
class CacheEntry:
    """A fetched document and the time (on the cache's clock) it expires."""

    document: Document
    expires: float

    def __repr__(self) -> str:  # never show the document
        return f"CacheEntry(expires={self.expires!r})"


#: What a lookup yields for one key: the entry, or the error for that key.
Outcome = Union[CacheEntry, SecretsError]  # noqa: UP007 - a runtime alias on 3.10


@dataclass
class Claim:
    """The result of :meth:`SecretCache.claim`."""

    hits: dict[Key, CacheEntry]
    owned: dict[Key, Future[Outcome]]
    waiting: dict[Key, Future[Outcome]]


def _ttu(_key: Any, value: CacheEntry, _now: float) -> float:
    return value.expires


class SecretCache:
    """Thread-safe TTL cache of documents with single-flight claims."""

    def __init__(
        self, *, timer: Callable[[], float], maxsize: int = 10_000, stale_if_error: float = 0.0
    ) -> None:
        self.timer = timer
        self.stale_if_error = stale_if_error
        self._lock = threading.Lock()
        self._entries: TLRUCache[Key, CacheEntry] = TLRUCache(maxsize, _ttu, timer=timer)
        self._last: TLRUCache[Key, CacheEntry] = TLRUCache(maxsize, self._stale_ttu, timer=timer)
        self._inflight: dict[Key, Future[Outcome]] = {}
        #: A counter bumped by every :meth:`invalidate` and :meth:`bump` (read
        #: it, never write it). A plain attribute: warm renders read it once
        #: each, and a property would double what that read costs.
        self.generation = 0

    def bump(self) -> None:
        """Start a new generation without dropping entries (a policy change:
        what is cached is still right, but decisions made on it are not)."""
        with self._lock:
            self.generation += 1

    def _stale_ttu(self, _key: Any, value: CacheEntry, _now: float) -> float:
        return value.expires + self.stale_if_error

    def claim(self, keys: Iterable[Key], generation: int | None = None) -> Claim | None:
        """Split ``keys`` into cache hits, keys this caller must fetch, and keys
        another caller is fetching now.

        With ``generation`` (read before the keys were planned): ``None`` if
        the generation moved on since, so the caller plans again under the new
        configuration instead of claiming with connections it no longer has.
        """
        claim = Claim({}, {}, {})
        with self._lock:
            if generation is not None and generation != self.generation:
                return None
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    claim.hits[key] = entry
                    continue
                future = self._inflight.get(key)
                if future is not None:
                    claim.waiting[key] = future
                    continue
                future = Future()
                self._inflight[key] = future
                claim.owned[key] = future
        return claim

    def complete(
        self,
        results: Mapping[Key, Document | SecretsError],
        claims: Mapping[Key, Future[Outcome]],
        ttl: float,
    ) -> None:
        """File fetched documents (errors are not cached) and release ``claims``.

        ``ttl`` is the connection's cache lifetime; 0 means the document is
        handed to waiters but not kept. A result is stored only while its claim
        is still the current one: a claim that :meth:`invalidate` dropped while
        its fetch was in flight hands its result to the callers that were
        already waiting on it, and to no one else.
        """
        now = self.timer()
        done: list[tuple[Future[Outcome], Outcome]] = []
        with self._lock:
            for key, result in results.items():
                future = claims[key]
                current = self._inflight.get(key) is future
                if current:
                    del self._inflight[key]
                outcome: Outcome
                if isinstance(result, SecretsError):
                    outcome = self._stale(key, result, now, ttl, store=current)
                else:
                    outcome = CacheEntry(result, now + ttl)
                    if ttl > 0 and current:
                        self._entries[key] = outcome
                        if self.stale_if_error > 0:
                            self._last[key] = outcome
                done.append((future, outcome))
        for future, outcome in done:
            if not future.done():
                future.set_result(outcome)

    def _stale(
        self, key: Key, error: SecretsError, now: float, lifetime: float, *, store: bool
    ) -> Outcome:
        """The last good document if the backend is down and it is recent enough."""
        if self.stale_if_error <= 0 or not isinstance(error, SecretConnectionError):
            return error
        last = self._last.get(key)
        if last is None:
            return error
        deadline = last.expires + self.stale_if_error
        log.warning(
            "serving a stale value of %s|%s until %.0fs from now: refresh failed (%s)",
            key[0],
            key[1],
            deadline - now,
            error.code,
        )
        entry = CacheEntry(last.document, min(now + lifetime, deadline))
        if entry.expires > now and store:
            self._entries[key] = entry
        return entry

    def abandon(self, claims: Mapping[Key, Future[Outcome]], reason: str) -> None:
        """Release the claims among ``claims`` that were not completed (their
        fetch was cancelled or crashed), so no waiter hangs."""
        open_claims = {k: f for k, f in claims.items() if not f.done()}
        self.complete({k: SecretConnectionError(reason) for k in open_claims}, open_claims, 0.0)

    def documents(self) -> list[Document]:
        """The cached documents (for redaction; never logged)."""
        with self._lock:
            return [entry.document for entry in self._entries.values()]

    def invalidate(self, connection: str | None = None) -> None:
        """Drop cached documents of one connection, or all of them, and start
        a new generation.

        Claims in flight for them are dropped too: their fetches started
        before the invalidation, so what they bring back is handed to the
        callers already waiting and never stored, and a later caller fetches
        anew instead of waiting for a value from before.
        """
        with self._lock:
            self.generation += 1
            for table in (self._entries, self._last, self._inflight):
                if connection is None:
                    table.clear()
                    continue
                for key in [k for k in table if k[0] == connection]:
                    table.pop(key, None)

    def _after_fork(self) -> None:
        """In a forked child: a new lock; claims of the parent's fetches are
        dropped (nothing here will complete them). Cached entries stay."""
        self._lock = threading.Lock()
        self._inflight = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"<SecretCache entries={len(self)}>"
