"""A fetch in flight across ``invalidate()`` or ``configure()`` is never stored
(issue 10, item 2).

The backend is a test double (:class:`Slow`): it reads its store when a fetch
starts, then holds the answer until the test opens that call's gate, as a slow
backend does while the secret is rotated behind it. Nothing waits for time:
calls are sequenced with events, and the clock is a :class:`~support.FakeClock`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from support import FakeClock

from jinja_apsecrets import Resolver
from jinja_apsecrets.cache import SecretCache
from jinja_apsecrets.config import load_config
from jinja_apsecrets.providers import register_provider
from jinja_apsecrets.providers.base import Document, FetchResult, Locator, Provider, SecretId

WAIT = 30.0  # a bounded wait for an event that normally comes at once
STORE: dict[str, str] = {}


class Slow(Provider):
    """Test double of a slow backend: reads :data:`STORE` as a fetch starts,
    answers when that call's gate (``gates[i]`` for the i-th call) opens."""

    id = "slow"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.gates: dict[int, threading.Event] = {}
        self.started: list[threading.Event] = [threading.Event() for _ in range(8)]
        self.calls = 0
        self._lock = threading.Lock()

    def parse_path(self, path: str) -> Locator:
        return Locator(SecretId(path))

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        with self._lock:
            call, self.calls = self.calls, self.calls + 1
        answer: dict[SecretId, Document] = {sid: STORE[sid.name] for sid in ids}
        self.started[call].set()
        gate = self.gates.get(call)
        if gate is not None:
            gate.wait(WAIT)
        return answer

    def check(self) -> None:
        pass


register_provider("slow", Slow, clobber=True)


@pytest.fixture
def slow() -> Slow:
    STORE.clear()
    STORE["db"] = "old-Value-1"
    return Slow("slow")


@pytest.fixture
def resolver(slow: Slow) -> Resolver:
    return Resolver({"slow": slow}, timer=FakeClock())


def in_thread(resolver: Resolver) -> tuple[threading.Thread, list[str]]:
    got: list[str] = []
    thread = threading.Thread(target=lambda: got.append(resolver.get("slow", "db")))
    thread.start()
    return thread, got


class TestInvalidate:
    def test_a_request_after_invalidate_does_not_wait_for_the_old_fetch(
        self, resolver: Resolver, slow: Slow
    ) -> None:
        slow.gates[0] = threading.Event()
        old, old_got = in_thread(resolver)
        assert slow.started[0].wait(WAIT)
        STORE["db"] = "new-Value-2"  # rotated while the first fetch is in flight
        resolver.invalidate()
        assert resolver.get("slow", "db") == "new-Value-2"  # its own fetch (call 1)
        slow.gates[0].set()
        old.join(WAIT)
        assert old_got == ["old-Value-1"]  # requested before: handed its own result
        assert resolver.get("slow", "db") == "new-Value-2"  # the late old one was not stored
        assert slow.calls == 2

    def test_the_old_result_is_not_stored_when_it_comes_first(
        self, resolver: Resolver, slow: Slow
    ) -> None:
        slow.gates[0] = threading.Event()
        old, old_got = in_thread(resolver)
        assert slow.started[0].wait(WAIT)
        STORE["db"] = "new-Value-2"
        resolver.invalidate("slow")
        slow.gates[0].set()
        old.join(WAIT)
        assert old_got == ["old-Value-1"]
        assert resolver.get("slow", "db") == "new-Value-2"
        assert slow.calls == 2

    def test_callers_already_waiting_share_the_old_fetch(
        self, resolver: Resolver, slow: Slow
    ) -> None:
        slow.gates[0] = threading.Event()
        owner, owner_got = in_thread(resolver)
        assert slow.started[0].wait(WAIT)
        waiter, waiter_got = in_thread(resolver)
        # The waiter holds the old claim's future before the invalidation.
        while not waiter_got and _waiters(resolver) < 1:
            threading.Event().wait(0.001)
        resolver.invalidate()
        slow.gates[0].set()
        owner.join(WAIT)
        waiter.join(WAIT)
        assert owner_got == waiter_got == ["old-Value-1"]
        assert slow.calls == 1

    def test_async_request_after_invalidate_fetches_anew(
        self, resolver: Resolver, slow: Slow
    ) -> None:
        slow.gates[0] = threading.Event()

        async def main() -> tuple[str, str, str]:
            old = asyncio.ensure_future(resolver.get_async("slow", "db"))
            while not slow.started[0].is_set():
                await asyncio.sleep(0)  # until the pool thread runs the fetch
            STORE["db"] = "new-Value-2"
            resolver.invalidate()
            new = await resolver.get_async("slow", "db")
            slow.gates[0].set()
            return await old, new, await resolver.get_async("slow", "db")

        assert asyncio.run(asyncio.wait_for(main(), WAIT)) == (
            "old-Value-1",
            "new-Value-2",
            "new-Value-2",
        )
        assert slow.calls == 2


def _waiters(resolver: Resolver) -> int:
    """How many callers wait on the in-flight claim of ``slow|db`` (white box:
    a Future keeps no count, so count the threads parked on its condition)."""
    future = next(iter(resolver._cache._inflight.values()), None)
    if future is None:
        return 0
    return len(getattr(future._condition, "_waiters", ()))


class TestConfigure:
    def test_new_credentials_while_a_fetch_is_in_flight(self) -> None:
        STORE.clear()
        STORE["db"] = "old-Value-1"
        config: dict[str, Any] = {"connections": {"slow": {"provider": "slow"}}}
        resolver = Resolver.from_config(config, timer=FakeClock())
        first = resolver.connections["slow"]
        assert isinstance(first, Slow)
        first.gates[0] = threading.Event()
        old, _ = in_thread(resolver)
        assert first.started[0].wait(WAIT)
        STORE["db"] = "new-Value-2"
        config["connections"]["slow"] = {"provider": "slow", "ttl": 60}  # a changed connection
        resolver.configure(load_config(config))
        second = resolver.connections["slow"]
        assert second is not first
        assert resolver.get("slow", "db") == "new-Value-2"
        first.gates[0].set()
        old.join(WAIT)
        assert resolver.get("slow", "db") == "new-Value-2"
        assert (first.calls, second.calls) == (1, 1)  # type: ignore[attr-defined]

    def test_generation_changes_with_invalidate_configure_and_policy(
        self, resolver: Resolver
    ) -> None:
        seen = {resolver.generation()}
        resolver.invalidate()
        seen.add(resolver.generation())
        resolver.policy = ["slow:*"]
        seen.add(resolver.generation())
        resolver.policy = ["slow:*"]  # unchanged: same generation
        assert resolver.generation() in seen
        resolver.configure(load_config({"connections": {}}))
        seen.add(resolver.generation())
        assert len(seen) == 4
        same = resolver.generation()
        resolver.configure(load_config({"connections": {}}))  # nothing changed
        assert resolver.generation() == same
        resolver.configure(load_config({"cache": {"ttl": 60}, "connections": {}}))
        assert resolver.generation() != same


class TestCacheClaims:
    """The rule at the layer that decides it: :class:`SecretCache`."""

    def test_a_claim_planned_under_an_older_generation_is_refused(self) -> None:
        cache = SecretCache(timer=FakeClock())
        generation = cache.generation
        cache.invalidate("c")
        assert cache.claim([("c", SecretId("x"))], generation) is None
        assert cache.claim([("c", SecretId("x"))], cache.generation) is not None

    def test_a_dropped_claim_completes_its_waiters_but_stores_nothing(self) -> None:
        cache = SecretCache(timer=FakeClock())
        key = ("c", SecretId("x"))
        claim = cache.claim([key])
        assert claim is not None
        future: Future[Any] = claim.owned[key]
        cache.invalidate()
        newer = cache.claim([key])
        assert newer is not None
        assert key in newer.owned  # not the old in-flight one
        cache.complete({key: "old"}, claim.owned, 300)
        assert future.result().document == "old"
        assert not newer.owned[key].done()  # the newer claim is untouched
        cache.complete({key: "new"}, newer.owned, 300)
        again = cache.claim([key])
        assert again is not None
        assert again.hits[key].document == "new"
