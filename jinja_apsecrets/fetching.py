"""Fetching: claimed secrets gathered into rounds, batched, run concurrently.

The unit of fetching is the user's job, not one lookup: renders that start
together (threads, ``asyncio.gather``) should share their backend requests.
So claims are gathered into **rounds**, one open round per connection:

* For a connection whose provider batches (``max_batch`` > 1: AWS, 1Password,
  Conjur), a claim joins the connection's open round. The first claim opens
  it and its caller leads it: the round stays open for a short gathering
  window (:data:`GATHER_WINDOW`, 2 ms), then is dispatched. While a round of
  that connection is in flight, claims gather in the next round, dispatched as
  soon as the one in flight is done (group commit). So a burst of renders
  costs at most two rounds of batch calls, and a lone cold lookup pays 2 ms.
* A provider without batches (Vault: one read per path) gains nothing from
  waiting: its claims are dispatched at once.

A dispatched round is planned into batches (the provider's :meth:`plan`) that
form a queue, drained by up to ``concurrency`` lanes (bounded again per
connection by a semaphore across rounds). A sync caller is itself a lane of
every round it leads, so progress never depends on a free pool thread; pool
tasks never wait for other pool tasks, so the pool cannot deadlock, and a
sync render blocking an event loop never waits on that loop. The pool is
sized from the connections' ``concurrency``.

Every result, error or crash ends in the cache (:meth:`SecretCache.complete`),
so no waiter is ever left hanging. Each backend request is logged once, at
INFO on the ``jinja_apsecrets`` logger: connection, how many secrets, outcome
and time (never a value), which is what ``-v`` shows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .cache import Claim, Key, Outcome, SecretCache
from .errors import SecretConnectionError, SecretsError
from .providers.base import Document, Provider, SecretId

__all__ = ["DEFAULT_CONCURRENCY", "GATHER_WINDOW", "Connection", "Fetcher"]

log = logging.getLogger("jinja_apsecrets")

DEFAULT_CONCURRENCY = 16
#: How long a round of a batching connection stays open for more claims (s).
GATHER_WINDOW = 0.002
#: Pool threads beyond the connections' lanes: rounds waiting out their window.
_SPARE_THREADS = 4

Claims = Mapping[Key, "Future[Outcome]"]


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

    @property
    def batches(self) -> bool:
        """Whether one request can fetch several secrets (rounds are worth gathering)."""
        return self.provider.max_batch > 1

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


def _outcome(result: Any, batch: Sequence[SecretId]) -> str:
    """A request's outcome for the log: ok, or error codes with counts."""
    if isinstance(result, SecretsError):
        return result.code
    if not isinstance(result, Mapping):
        return "ok"
    failed = [r.code for r in (result.get(s) for s in batch) if isinstance(r, SecretsError)]
    if not failed:
        return "ok"
    counts = {code: failed.count(code) for code in dict.fromkeys(failed)}
    return ", ".join(f"{n} {code}" for code, n in counts.items())


@dataclass(eq=False)
class Round:
    """The claims of one connection fetched together."""

    conn: Connection
    claims: dict[Key, Future[Outcome]] = field(default_factory=dict)
    queue: deque[list[SecretId]] = field(default_factory=deque)
    lanes: int = 0  # lanes still draining the queue


class Fetcher:
    """Runs fetch rounds for a resolver and files the results in its cache.

    ``connections`` gives the live connections (to size the pool from their
    ``concurrency``); ``max_workers`` overrides that size.
    """

    def __init__(
        self,
        cache: SecretCache,
        connections: Callable[[], Iterable[Connection]],
        max_workers: int | None = None,
        window: float = GATHER_WINDOW,
    ) -> None:
        self.cache = cache
        self.connections = connections
        self.max_workers = max_workers
        self.window = window
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._size = 0
        self._open: dict[int, Round] = {}  # id(connection) -> the round gathering claims
        self._busy: dict[int, int] = {}  # id(connection) -> rounds in flight
        self._requests = 0

    # -- the pool ------------------------------------------------------------------

    def _pool_size(self) -> int:
        if self.max_workers:
            return self.max_workers
        lanes = sum(c.concurrency for c in self.connections())
        return max(lanes, 1) + _SPARE_THREADS

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The pool, grown when connections with more lanes were added."""
        size = self._pool_size()
        with self._lock:
            if self._executor is None or size > self._size:
                old, self._size = self._executor, size
                self._executor = ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix="apsecrets"
                )
                if old is not None:
                    old.shutdown(wait=False)  # its running tasks still finish
            return self._executor

    @property
    def requests(self) -> int:
        """How many backend requests were made so far (for ``-v`` summaries)."""
        return self._requests

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's pool (its threads do not exist
        here, yet it would count them as idle and never start new ones) and
        its rounds (their lanes are gone; their claims were dropped)."""
        self._lock = threading.Lock()
        self._executor = None
        self._open, self._busy = {}, {}

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    # -- the doors -------------------------------------------------------------------

    def fetch(self, claim: Claim, keys: Mapping[Key, Connection]) -> dict[Key, Outcome]:
        """Fetch what ``claim`` owns (leading the rounds it opens, as one of
        their lanes), then wait for every claimed key: the outcomes."""
        led = self._join(claim.owned, keys)
        if led:
            self._lead(led, helping=True)
        outcomes: dict[Key, Outcome] = dict(claim.hits)
        for key, future in itertools.chain(claim.owned.items(), claim.waiting.items()):
            outcomes[key] = future.result()
        return outcomes

    async def fetch_async(self, claim: Claim, keys: Mapping[Key, Connection]) -> dict[Key, Outcome]:
        """Async :meth:`fetch`. Rounds are led from the pool and results filed
        there, never on the caller's loop: a sync render blocking that loop
        while it waits on the same secret cannot deadlock, and a cancelled
        render does not stop fetches others are waiting for."""
        led = self._join(claim.owned, keys)
        if led:
            try:
                self.executor.submit(self._lead, led, helping=False)
            except BaseException:
                self._abandon(led)
                raise
        outcomes: dict[Key, Outcome] = dict(claim.hits)
        for key, future in itertools.chain(claim.owned.items(), claim.waiting.items()):
            if not future.done():
                # Shielded: cancelling this render must not cancel the shared
                # future others wait on.
                await asyncio.shield(asyncio.wrap_future(future))
            outcomes[key] = future.result()
        return outcomes

    # -- rounds ----------------------------------------------------------------------

    def _join(self, owned: Claims, keys: Mapping[Key, Connection]) -> list[Round]:
        """File ``owned`` claims in rounds; the rounds this caller leads."""
        # SDKs are imported here, on the caller's thread, never in the pool
        # (see Provider.prepare: an import there can hang a forked worker).
        for conn in {id(keys[key]): keys[key] for key in owned}.values():
            conn.provider.prepare()
        led: list[Round] = []
        with self._lock:
            for key, future in owned.items():
                conn = keys[key]
                if not conn.batches:  # nothing to gain by waiting: a round of its own now
                    mine = next((r for r in led if r.conn is conn), None)
                    if mine is None:
                        mine = Round(conn)
                        led.append(mine)
                    mine.claims[key] = future
                    continue
                gathering = self._open.get(id(conn))
                if gathering is None:
                    gathering = self._open[id(conn)] = Round(conn)
                    if not self._busy.get(id(conn)):
                        led.append(gathering)  # else the round in flight starts it
                gathering.claims[key] = future
        return led

    def _lead(self, rounds: list[Round], *, helping: bool) -> None:
        """Start ``rounds`` (those of batching connections after the gathering
        window) and, when ``helping``, be a lane of the last ones started, so
        the caller never sleeps while a round counts on its lane."""
        try:
            gathering = [r for r in rounds if r.conn.batches]
            at_once = [r for r in rounds if not r.conn.batches]
            for r in at_once:
                self._start(r, helping and not gathering)
            if gathering:
                time.sleep(self.window)  # let concurrent claims join
                for r in gathering:
                    self._start(r, helping)
            if helping:
                for r in gathering or at_once:
                    self._drain(r)
        except BaseException:  # a crash must not leave waiters hanging
            self._abandon(rounds)
            raise

    def _abandon(self, rounds: Iterable[Round]) -> None:
        for r in rounds:
            self.cache.abandon(r.claims, "fetch did not complete")

    def _start(self, round_: Round, helping: bool) -> None:
        """Close ``round_`` to new claims, plan its batches, start its lanes."""
        conn = round_.conn
        with self._lock:
            if self._open.get(id(conn)) is round_:
                del self._open[id(conn)]
            self._busy[id(conn)] = self._busy.get(id(conn), 0) + 1
            ids = list(dict.fromkeys(key[1] for key in round_.claims))
        batches = conn.provider.plan(ids)
        lanes = max(1, min(conn.concurrency, len(batches)))
        with self._lock:
            round_.queue.extend(batches)
            round_.lanes = lanes
        pool_lanes = lanes - (1 if helping else 0)
        started = 0
        try:
            for _ in range(pool_lanes):
                self.executor.submit(self._drain, round_)
                started += 1
        except BaseException:
            # Lanes that never started (the caller's too: it raises instead of
            # draining) count as done, or the connection would stay busy and its
            # next round never start. The caller abandons the claims.
            for _ in range(lanes - started):
                self._lane_done(round_)
            raise

    def _drain(self, round_: Round) -> None:
        """One lane: run batches of ``round_`` until its queue is empty."""
        try:
            while True:
                with self._lock:
                    batch = round_.queue.popleft() if round_.queue else None
                if batch is None:
                    return
                try:
                    self._fetch(round_, batch)
                except BaseException:  # a bug: fail this batch's waiters, not hang them
                    self.cache.abandon(
                        {k: f for k, f in round_.claims.items() if k[1] in batch}, "fetch failed"
                    )
                    raise
        finally:
            self._lane_done(round_)

    def _lane_done(self, round_: Round) -> None:
        """The last lane out ends the round and starts the one gathered meanwhile."""
        conn = round_.conn
        with self._lock:
            round_.lanes -= 1
            if round_.lanes > 0:
                return
            busy = self._busy.get(id(conn), 1) - 1
            self._busy[id(conn)] = busy
            waiting = self._open.get(id(conn)) if busy == 0 else None
            if busy == 0:
                del self._busy[id(conn)]
        if waiting is not None:
            # Gathered for a whole round trip already: no window.
            self.executor.submit(self._start_gathered, waiting)

    def _start_gathered(self, round_: Round) -> None:
        try:
            self._start(round_, helping=False)
        except BaseException:
            self.cache.abandon(round_.claims, "fetch did not start")
            raise

    def _fetch(self, round_: Round, batch: Sequence[SecretId]) -> None:
        """One backend request: fetch ``batch``, log it, file the results."""
        conn = round_.conn
        with conn.semaphore:
            started = time.perf_counter()
            try:
                result: Any = conn.provider.fetch(batch)
            except Exception as exc:
                result = _failure(conn.provider, exc)
            took = time.perf_counter() - started
        with self._lock:
            self._requests += 1
        log.info(
            "request %s: %d secret%s, %s, %.0f ms",
            conn.provider.name,
            len(batch),
            "" if len(batch) == 1 else "s",
            _outcome(result, batch),
            took * 1000,
        )
        name = conn.provider.name
        out: dict[Key, Document | SecretsError] = {}
        for sid in batch:
            item = result.get(sid) if isinstance(result, Mapping) else result
            if item is None:
                item = SecretConnectionError(f"provider returned no result for {sid}")
            out[(name, sid)] = item
        # A value is kept ``ttl`` seconds from when it arrived: never fetched
        # twice within one TTL window.
        self.cache.complete(out, {k: round_.claims[k] for k in out}, conn.ttl)
