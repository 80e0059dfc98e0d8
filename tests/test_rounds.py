"""A job fetches in few rounds (issue 13): concurrent claims join a round, the
pool follows the connections' concurrency, one log line per backend request,
and no SDK is imported for a render that needs none.

Backends are :class:`~support.MemoryProvider` doubles (an in-memory store that
counts fetch calls; ``batch`` sets ``max_batch``: 20 behaves like AWS's
BatchGetSecretValue, 1 like Vault's one read per path). A ``gate`` holds the
first fetch so that the other callers' claims are all filed while a round is
in flight: the counts then do not depend on thread timing, and nothing waits
for time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support import STORE, FakeClock, MemoryProvider, memory

from jinja_apsecrets import Resolver
from jinja_apsecrets.providers.base import FetchResult, SecretId

WAIT = 30.0  # bounded waits for events that normally come at once
N = 20  # secrets
PW = "pw-Secret-1"


@pytest.fixture
def secrets(store: Any) -> list[tuple[str, str]]:
    for i in range(N):
        STORE[f"s{i:02d}"] = {"a": f"value-{i}-a", "b": f"value-{i}-b"}
    return [(f"s{i:02d}", k) for i in range(N) for k in ("a", "b")]


def subset(refs: list[tuple[str, str]], i: int) -> list[tuple[str, str]]:
    """The references of caller ``i``: a different mix of the shared secrets."""
    return [
        (c, p) for j, (c, p) in enumerate((("mem", f"{s}:{k}") for s, k in refs)) if j % 7 != i % 7
    ]


def wait_until_claimed(resolver: Resolver, count: int) -> None:
    """Until ``count`` secrets are claimed (white box: the cache's in-flight table)."""
    done = threading.Event()
    while len(resolver._cache._inflight) < count:
        done.wait(0.001)


class TestConcurrentClaimsJoinRounds:
    def test_16_threads_cold_make_at_most_2_batch_calls(self, secrets: Any) -> None:
        provider = memory("mem", batch=20)
        provider.gate = threading.Event()
        resolver = Resolver({"mem": provider}, timer=FakeClock())
        results: list[dict[Any, Any]] = []
        threads = [
            threading.Thread(
                target=lambda i=i: results.append(resolver.get_many(subset(secrets, i)))
            )
            for i in range(16)
        ]
        for t in threads:
            t.start()
        wait_until_claimed(resolver, N)
        provider.gate.set()
        for t in threads:
            t.join(WAIT)
        assert len(results) == 16
        assert all(
            v == f"value-{p[1:3].lstrip('0') or '0'}-{p[-1]}"
            for r in results
            for (_, p), v in r.items()
        )
        assert provider.fetched <= 2
        assert sorted(s.name for call in provider.calls for s in call) == sorted(
            f"s{i:02d}" for i in range(N)
        )
        resolver.close()

    def test_100_concurrent_async_lookups_cold_make_at_most_2_batch_calls(
        self, secrets: Any
    ) -> None:
        provider = memory("mem", batch=20)
        provider.gate = threading.Event()
        resolver = Resolver({"mem": provider}, timer=FakeClock())

        async def main() -> list[dict[Any, Any]]:
            tasks = [
                asyncio.ensure_future(resolver.get_many_async(subset(secrets, i)))
                for i in range(100)
            ]
            while len(resolver._cache._inflight) < N:
                await asyncio.sleep(0)  # every task files its claims before its first wait
            provider.gate.set()
            return await asyncio.gather(*tasks)

        results = asyncio.run(asyncio.wait_for(main(), WAIT))
        assert len(results) == 100
        assert provider.fetched <= 2
        resolver.close()

    def test_a_lone_lookup_is_one_round(self, secrets: Any) -> None:
        provider = memory("mem", batch=20)
        resolver = Resolver({"mem": provider}, timer=FakeClock())
        resolver.get_many([("mem", f"{s}:{k}") for s, k in secrets])
        assert provider.fetched == 1
        resolver.close()

    def test_connections_without_batches_do_not_wait(self, secrets: Any) -> None:
        provider = memory("mem", batch=1)
        resolver = Resolver({"mem": provider}, timer=FakeClock())
        resolver._fetcher.window = WAIT  # a gathering window would show as a hang
        resolver.get_many([("mem", f"{s}:{k}") for s, k in secrets])
        assert provider.fetched == N
        resolver.close()


class Rendezvous(MemoryProvider):
    """Test double: every fetch waits until ``parties`` fetches run at once
    (a barrier), so a pool smaller than the connection's concurrency fails."""

    def __init__(self, name: str, parties: int) -> None:
        super().__init__(name, {"batch": 1})
        self.barrier = threading.Barrier(parties, timeout=WAIT)

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        self.barrier.wait()
        return super().fetch(ids)


class TestPoolSize:
    def test_the_pool_follows_the_connections_concurrency(self, store: Any) -> None:
        for i in range(40):
            STORE[f"p{i}"] = f"value-{i}"
        provider = Rendezvous("mem", 40)
        resolver = Resolver(timer=FakeClock())
        resolver.add_connection(provider, concurrency=40)
        values = resolver.get_many([("mem", f"p{i}") for i in range(40)])
        assert values == {("mem", f"p{i}"): f"value-{i}" for i in range(40)}
        resolver.close()

    def test_max_workers_still_caps_it(self, store: Any) -> None:
        resolver = Resolver(timer=FakeClock(), max_workers=3)
        resolver.add_connection(memory("mem"), concurrency=40)
        assert resolver._fetcher.executor._max_workers == 3
        resolver.close()


class LazySdk(MemoryProvider):
    """Test double: its "SDK" is a module written by the test, imported lazily."""

    sdk_modules = ("apsecrets_fake_sdk", "apsecrets_no_such_sdk")


class TestSdkImportsOnTheCallersThread:
    """An SDK is imported on the thread that asks for a round, never in the
    pool: in a process forked while a lock was held (Ansible's workers hold its
    display lock), a pool thread's import-time warning on stderr hung the worker."""

    def test_prepared_before_the_pool(
        self, store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "apsecrets_fake_sdk.py").write_text(
            "import threading\nIMPORTED_ON = threading.current_thread().name\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "apsecrets_fake_sdk", raising=False)
        STORE["s"] = {"k": "v"}
        resolver = Resolver(timer=FakeClock())
        resolver.add_connection(LazySdk("mem", {"batch": 1}))
        assert resolver.get("mem", "s:k") == "v"
        imported_on = sys.modules["apsecrets_fake_sdk"].IMPORTED_ON
        assert imported_on == threading.current_thread().name
        resolver.close()

    def test_a_missing_sdk_is_left_to_fetch(self, store: Any) -> None:
        STORE["s"] = {"k": "v"}
        provider = LazySdk("mem")
        provider.sdk_modules = ("apsecrets_no_such_sdk",)
        provider.prepare()  # no ImportError: fetch reports a missing SDK with its hint
        assert "apsecrets_no_such_sdk" not in sys.modules


class TestRequestLog:
    def test_one_info_line_per_backend_request(
        self, secrets: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        STORE["s00"] = {"a": PW, "b": "x"}
        provider = memory("mem", batch=8)
        resolver = Resolver({"mem": provider}, timer=FakeClock())
        refs = [("mem", f"{s}:{k}") for s, k in secrets] + [("mem", "gone:x")]
        with caplog.at_level(logging.INFO, logger="jinja_apsecrets"):
            resolver.get_many(refs)
            resolver.get_many(refs[:-1])  # warm: no request, no line
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == provider.fetched == 3  # 21 secrets in batches of 8
        assert sorted(int(line.split(": ")[1].split()[0]) for line in lines) == [5, 8, 8]
        assert any("1 SECRET_MANAGER_GET_SECRET_FAILED" in line for line in lines)
        assert all(line.startswith("request mem: ") and line.endswith(" ms") for line in lines)
        assert PW not in caplog.text
        assert resolver._fetcher.requests == 3
        resolver.close()


STARTUP = """
import json, sys
import jinja2
import jinja_apsecrets
resolver = jinja_apsecrets.Resolver.from_config(sys.argv[1])
env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
env.install_secret_resolver(resolver)
out = env.from_string("a=<<env|ap_sep_v1|APSECRETS_T>> b=<<local|ap_sep_v1|app:k>>").render()
heavy = ("boto3", "botocore", "hvac", "requests", "onepassword")
print(json.dumps([out, sorted(m for m in sys.modules if m.split(".")[0] in heavy)]))
"""


class TestStartup:
    def test_env_and_file_render_imports_no_sdk(self, tmp_path: Path) -> None:
        (tmp_path / "s.yaml").write_text("app: {k: file-value}\n")
        config = tmp_path / "c.yaml"
        config.write_text(
            "connections:\n  env: {provider: env}\n"
            f"  local: {{provider: file, path: {tmp_path / 's.yaml'}}}\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", STARTUP, str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "APSECRETS_T": "env-value"},
            check=True,
        )
        out, heavy = json.loads(done.stdout)
        assert out == "a=env-value b=file-value"
        assert heavy == []

    def test_cli_render_imports_no_sdk(self, tmp_path: Path) -> None:
        (tmp_path / "t.j2").write_text("a=<<env|ap_sep_v1|APSECRETS_T>>\n")
        (tmp_path / "apsecrets.yaml").write_text("connections:\n  env: {provider: env}\n")
        code = (
            "import sys, json\n"
            "from jinja_apsecrets.cli import main\n"
            "try:\n    main(['render', 't.j2', '-o', 'out.txt'])\n"
            "except SystemExit:\n    pass\n"
            "heavy = ('boto3', 'botocore', 'hvac', 'requests', 'onepassword')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "APSECRETS_T": "env-value"},
            check=True,
        )
        assert (tmp_path / "out.txt").read_text() == "a=env-value\n"
        assert json.loads(done.stdout.splitlines()[-1]) == []


class TestFailures:
    def test_a_pool_that_refuses_work_leaves_no_connection_busy(
        self, secrets: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from jinja_apsecrets.fetching import Fetcher

        provider = memory("mem", batch=5)
        resolver = Resolver({"mem": provider}, timer=FakeClock())
        refs = [("mem", f"{s}:{k}") for s, k in secrets]

        def refuse(self: Fetcher) -> Any:
            raise RuntimeError("cannot schedule new futures after shutdown")

        with monkeypatch.context() as patch:
            patch.setattr(Fetcher, "executor", property(refuse))
            with pytest.raises(RuntimeError):
                resolver.get_many(refs)
        # The claims were released and the connection is not left busy:
        # the next lookup fetches (with a bounded wait, it would hang otherwise).
        done = threading.Event()
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: (results.append(resolver.get_many(refs)), done.set())
        )
        thread.start()
        assert done.wait(WAIT)
        assert results[0][("mem", "s01:a")] == "value-1-a"
        resolver.close()
