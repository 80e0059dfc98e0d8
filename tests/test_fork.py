"""A resolver used before ``fork()`` keeps working in the child (issue 10, item 8).

The parent renders (so its pool has threads, its cache values, its providers
clients and locks), then forks; each child renders warm (no request), then
cold after the TTL (requests work, sync and async), within a bounded wait.
Fetches are counted by a provider double (:class:`Counting`: an in-memory
store; the real providers are rebuilt the same way, from name and options).
The clock is a :class:`~support.FakeClock` copied into each child, so a child
moves past the TTL without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import select
import signal
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
import pytest
from support import FakeClock

from jinja_apsecrets import Resolver
from jinja_apsecrets.providers.base import (
    Document,
    FetchResult,
    Locator,
    Provider,
    SecretId,
    split_key,
)

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()"),
    # Python 3.12+ warns when a process with threads forks: that is the scenario.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

#: How long a child may take before the test calls it hung (a bounded wait,
#: not a timing assertion: a healthy child answers in milliseconds).
HANG = 30.0
SECRETS = {f"s{i}": {"a": f"value-{i}-a", "b": f"value-{i}-b"} for i in range(4)}
SOURCE = "".join(f"{i}: <<count|ap_sep_v1|s{i}:a>> <<count|ap_sep_v1|s{i}:b>>\n" for i in range(4))
EXPECTED = "".join(f"{i}: value-{i}-a value-{i}-b\n" for i in range(4))


class Counting(Provider):
    """Test double: serves :data:`SECRETS`, one id per fetch, counting fetches.

    ``gate``, when set, holds every fetch until it is opened (a slow backend).
    """

    id = "counting"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.fetches = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def parse_path(self, path: str) -> Locator:
        parts = split_key(path)
        if parts is None:
            raise self.invalid(path, "Wrong key format. Should be name:key")
        return Locator(SecretId(parts[0]), parts[1])

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        with self._lock:
            self.fetches += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        out: dict[SecretId, Document] = {sid: SECRETS[sid.name] for sid in ids}
        return out

    def check(self) -> None:
        pass


def make(concurrency: int = 4) -> tuple[Resolver, Counting, FakeClock]:
    clock = FakeClock()
    provider = Counting("count")
    resolver = Resolver(timer=clock, ttl=2)
    resolver.add_connection(provider, concurrency=concurrency)
    return resolver, provider, clock


def in_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a child made by ``os.fork``; its JSON result, or fail.

    The child reports through a pipe and ends with ``os._exit`` (never
    returning into pytest). A child that does not answer within :data:`HANG`
    seconds is killed and the test fails.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            answer = {"ok": work()}
        except BaseException:  # report anything, never return into pytest
            answer = {"error": traceback.format_exc()}
        with os.fdopen(write, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        ready, _, _ = select.select([pipe], [], [], HANG)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung for {HANG:g} s")
        text = pipe.read()
    os.waitpid(pid, 0)
    answer = json.loads(text)
    assert "error" not in answer, answer.get("error")
    return answer["ok"]


def environment(resolver: Resolver, **options: Any) -> jinja2.Environment:
    env = jinja2.Environment(
        extensions=["jinja_apsecrets.SecretsExtension"], keep_trailing_newline=True, **options
    )
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    return env


def renders_in_child(resolver: Resolver, provider: Counting, clock: FakeClock) -> dict[str, int]:
    """In the child: warm sync and async renders, then cold ones after the TTL."""
    sync_env, async_env = environment(resolver), environment(resolver, enable_async=True)
    counts = {"start": provider.fetches}
    for _ in range(20):
        assert sync_env.from_string(SOURCE).render() == EXPECTED
        assert asyncio.run(async_env.from_string(SOURCE).render_async()) == EXPECTED
    counts["warm"] = provider.fetches
    clock.advance(3)  # past the TTL: cold again
    assert sync_env.from_string(SOURCE).render() == EXPECTED
    counts["cold_sync"] = provider.fetches
    clock.advance(3)
    assert asyncio.run(async_env.from_string(SOURCE).render_async()) == EXPECTED
    counts["cold_async"] = provider.fetches
    return counts


def warm_parent() -> tuple[Resolver, Counting, FakeClock]:
    resolver, provider, clock = make()
    assert environment(resolver).from_string(SOURCE).render() == EXPECTED
    assert provider.fetches == 4  # one per secret, on pool threads that linger
    return resolver, provider, clock


class TestOsFork:
    def test_children_render_warm_without_requests_and_cold_with_them(self) -> None:
        resolver, provider, clock = warm_parent()
        for _ in range(4):
            counts = in_child(lambda: renders_in_child(resolver, provider, clock))
            # The child's counter starts afresh (its provider was rebuilt);
            # warm renders cost nothing, a cold round one fetch per secret.
            assert counts == {"start": 0, "warm": 0, "cold_sync": 4, "cold_async": 8}
        assert provider.fetches == 4  # the parent fetched nothing more
        assert resolver.get("count", "s1:a") == "value-1-a"  # and still works
        resolver.close()

    def test_a_fetch_in_flight_in_the_parent_does_not_block_the_child(self) -> None:
        # concurrency 1: the parent's stuck fetch holds the connection's only
        # slot and the claim on s0 while the process forks.
        resolver, provider, _ = make(concurrency=1)
        provider.gate = threading.Event()
        stuck = threading.Thread(target=resolver.get, args=("count", "s0:a"))
        stuck.start()
        assert provider.entered.wait(HANG)

        def child() -> list[str]:
            return [resolver.get("count", "s0:a"), asyncio.run(resolver.get_async("count", "s0:b"))]

        try:
            assert in_child(child) == ["value-0-a", "value-0-b"]
        finally:
            provider.gate.set()
            stuck.join(HANG)
        resolver.close()

    def test_a_resolver_collected_before_the_fork_is_forgotten(self) -> None:
        from jinja_apsecrets import forksafe

        resolver, _, _ = make()
        before = len(forksafe._live)
        del resolver
        assert len(forksafe._live) == before - 1


class TestMultiprocessingFork:
    def test_fork_context_processes_render(self) -> None:
        resolver, provider, clock = warm_parent()
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()

        def work() -> None:
            try:
                results.put(renders_in_child(resolver, provider, clock))
            except BaseException:
                results.put({"error": traceback.format_exc()})

        procs = [ctx.Process(target=work) for _ in range(3)]
        for proc in procs:
            proc.start()
        try:
            answers = [results.get(timeout=HANG) for _ in procs]
        finally:
            for proc in procs:
                proc.join(HANG)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        assert answers == [{"start": 0, "warm": 0, "cold_sync": 4, "cold_async": 8}] * 3
        assert [p.exitcode for p in procs] == [0, 0, 0]
        resolver.close()
