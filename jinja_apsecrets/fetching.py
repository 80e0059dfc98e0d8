"""Fetching: a round's missing secrets, batched per provider, run concurrently.

Each connection's batches form a queue. The sync path drains the queues with
the calling thread plus up to ``concurrency - 1`` pool threads per connection
(a pool owned by the resolver); the calling thread works on every queue, so a
busy pool never stalls a render. The async path runs batches on the running
loop, bounded per connection by a semaphore; providers without a native async
fetch run in the pool. Every result, error or crash ends in the cache, so no
waiter is ever left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .cache import Key, Outcome, SecretCache
from .errors import SecretConnectionError, SecretsError
from .providers.base import Document, Provider, SecretId

__all__ = ["DEFAULT_CONCURRENCY", "Connection", "Fetcher"]

log = logging.getLogger("jinja_apsecrets")

DEFAULT_CONCURRENCY = 16

Queue = deque[tuple["Connection", list[SecretId]]]


@dataclass
class Connection:
    """A named connection: its provider and the resolver's settings for it."""

    provider: Provider
    ttl: float
    concurrency: int
    spec: Any = None  # the configuration it was built from, to detect changes
    semaphore: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.semaphore = threading.BoundedSemaphore(self.concurrency)

    def _after_fork(self) -> None:
        """In a forked child: a new semaphore (the parent's threads may have held
        slots of the old one), and the provider rebuilt from its name and options
        as unpickling does, so no SDK client, session or lock of the parent's is
        used here (their sockets are the parent's too)."""
        self.semaphore = threading.BoundedSemaphore(self.concurrency)
        self.provider.__setstate__(self.provider.__getstate__())


def _failure(provider: Provider, exc: Exception) -> SecretsError:
    """What a provider's exception means for the batch it was fetching."""
    if isinstance(exc, SecretsError):
        return exc
    # A provider bug must not hang waiters, nor print what it was holding.
    log.warning("provider %s failed: %s", provider.name, type(exc).__name__)
    return SecretConnectionError(
        f"{type(exc).__name__} from provider {provider.id}", provider=provider.name
    )


class Fetcher:
    """Runs fetch rounds for a resolver and files the results in its cache."""

    def __init__(self, cache: SecretCache, max_workers: int | None = None) -> None:
        self.cache = cache
        # At least enough threads for every connection's lanes at the default
        # concurrency; threads are only started when needed.
        self.max_workers = max_workers or 32
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="apsecrets"
                )
            return self._executor

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's pool (its threads do not exist
        here, yet it would count them as idle and never start new ones)."""
        self._lock = threading.Lock()
        self._executor = None

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    @staticmethod
    def _queues(owned: Iterable[Key], keys: Mapping[Key, Connection]) -> dict[str, Queue]:
        grouped: dict[str, list[SecretId]] = {}
        for key in owned:
            grouped.setdefault(key[0], []).append(key[1])
        queues: dict[str, Queue] = {}
        for name, ids in grouped.items():
            conn = keys[(name, ids[0])]
            queues[name] = deque((conn, batch) for batch in conn.provider.plan(ids))
        return queues

    def _complete(self, conn: Connection, batch: Sequence[SecretId], result: Any) -> None:
        name = conn.provider.name
        out: dict[Key, Document | SecretsError] = {}
        for sid in batch:
            item = result.get(sid) if isinstance(result, Mapping) else result
            if item is None:
                item = SecretConnectionError(f"provider returned no result for {sid}")
            out[(name, sid)] = item
        # A value is kept ``ttl`` seconds from when it arrived: never fetched
        # twice within one TTL window.
        self.cache.complete(out, {name: conn.ttl})

    def _run_batch(self, conn: Connection, batch: Sequence[SecretId]) -> None:
        with conn.semaphore:
            try:
                result: Any = conn.provider.fetch(batch)
            except Exception as exc:
                result = _failure(conn.provider, exc)
        self._complete(conn, batch, result)

    def _drain(self, queue: Queue) -> None:
        """Run the batches of ``queue`` until it is empty (one lane)."""
        while True:
            try:
                conn, batch = queue.popleft()
            except IndexError:
                return
            self._run_batch(conn, batch)

    def fetch(self, owned: Mapping[Key, Future[Outcome]], keys: Mapping[Key, Connection]) -> None:
        """Fetch the claimed keys ``owned``; returns when all are filed."""
        # The longest queue first: the calling thread starts on it, and every
        # other connection gets its pool lanes at once, so no backend waits
        # for another one's batches.
        queues = sorted(self._queues(owned, keys).values(), key=len, reverse=True)
        futures: list[Future[None]] = []
        for i, queue in enumerate(queues):
            lanes = min(queue[0][0].concurrency, len(queue)) - (1 if i == 0 else 0)
            futures += [self.executor.submit(self._drain, queue) for _ in range(lanes)]
        # The calling thread works too, on every queue, so progress never
        # depends on a free pool thread.
        for queue in queues:
            self._drain(queue)
        for future in futures:
            future.result()

    async def fetch_async(
        self, owned: Mapping[Key, Future[Outcome]], keys: Mapping[Key, Connection]
    ) -> None:
        """Async :meth:`fetch`: the batches run in the pool, awaited on the loop.

        Every batch is submitted before the first ``await``, and results are
        filed from the pool threads, never from the caller's loop: a sync
        render blocking that loop while it waits on the same secret (a
        synchronous render in an ``async def`` endpoint) cannot deadlock, and
        a cancelled render does not stop fetches others are waiting for.
        """
        loop = asyncio.get_running_loop()
        jobs: list[asyncio.Future[None]] = []
        for queue in self._queues(owned, keys).values():
            lanes = min(queue[0][0].concurrency, len(queue))
            jobs += [loop.run_in_executor(self.executor, self._drain, queue) for _ in range(lanes)]
        await asyncio.gather(*jobs)
