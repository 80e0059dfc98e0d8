"""The resolver: cache, single-flight, dedup, batching, policy, checks, nesting."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
from typing import Any

import pytest

from jinja_apsecrets import Resolver, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.errors import SecretConnectionError

PW = "pw-Secret-1"


class TestCache:
    def test_ttl_window(self, resolver: Resolver, mem: Any, clock: Any) -> None:
        resolver.get("mem", "prod/db:password")
        clock.advance(299)
        resolver.get("mem", "prod/db:password")
        assert mem.fetched == 1
        clock.advance(2)
        resolver.get("mem", "prod/db:password")
        assert mem.fetched == 2

    def test_many_keys_of_one_secret_cost_one_fetch(self, resolver: Resolver, mem: Any) -> None:
        refs = [("mem", f"prod/db:{k}") for k in ("username", "password", "port")] * 30
        values = resolver.get_many(refs)
        assert values[("mem", "prod/db:port")] == "5432"
        assert mem.calls == [[mem.parse_path("prod/db").secret]]

    def test_batches_follow_the_provider_plan(self, store: Any, clock: Any) -> None:
        from support import memory

        provider = memory("mem", batch=2)
        r = Resolver({"mem": provider}, timer=clock)
        r.get_many([("mem", n) for n in ("plain", "prod/db:port", "prod/api:token")])
        assert sorted(len(c) for c in provider.calls) == [1, 2]

    def test_errors_are_not_cached(self, resolver: Resolver, mem: Any, store: Any) -> None:
        with pytest.raises(SecretNotFoundError):
            resolver.get("mem", "later:x")
        store["later"] = {"x": "now"}
        assert resolver.get("mem", "later:x") == "now"

    def test_50_threads_one_fetch_per_key_per_ttl_window(
        self, resolver: Resolver, mem: Any, clock: Any
    ) -> None:
        refs = [("mem", "prod/db:password"), ("mem", "prod/api:token"), ("mem", "plain")]
        for window in range(3):
            mem.gate = threading.Event()  # hold the first fetch until all threads wait
            barrier = threading.Barrier(50)
            results: list[Any] = []

            def render(barrier: threading.Barrier = barrier, results: list[Any] = results) -> None:
                barrier.wait()
                results.append(resolver.get_many(refs))

            threads = [threading.Thread(target=render) for _ in range(50)]
            for t in threads:
                t.start()
            while not mem.calls or len(mem.calls) < window + 1:
                threading.Event().wait(0.001)
            mem.gate.set()
            for t in threads:
                t.join()
            assert len(results) == 50
            assert all(r[("mem", "plain")] == "plain-Secret-3" for r in results)
            assert len(mem.calls) == window + 1
            assert len(mem.calls[-1]) == 3
            clock.advance(301)

    def test_zero_ttl_connection_is_always_fresh(self, store: Any, clock: Any) -> None:
        from support import memory

        provider = memory("mem")
        r = Resolver(timer=clock)
        r.add_connection(provider, ttl=0)
        r.get("mem", "plain")
        r.get("mem", "plain")
        assert provider.fetched == 2


class TestPolicy:
    def test_refused_before_any_network_call(self, mem: Any, clock: Any) -> None:
        r = Resolver({"mem": mem}, policy=["mem:prod/*"], timer=clock)
        assert r.get("mem", "prod/db:username") == "admin"
        with pytest.raises(SecretNotFoundError, match="policy"):
            r.get("mem", "plain")
        assert [s.name for c in mem.calls for s in c] == ["prod/db"]


class TestValidation:
    def test_unknown_connection(self, resolver: Resolver) -> None:
        with pytest.raises(SecretValidationError, match="configured connections: mem"):
            resolver.get("nope", "x")

    def test_bad_path_never_fetches(self, resolver: Resolver, mem: Any) -> None:
        with pytest.raises(SecretValidationError, match="Wrong key format"):
            resolver.get("mem", "a:")
        assert mem.fetched == 0


class TestChecks:
    def test_status_is_cached(self, resolver: Resolver, mem: Any, clock: Any) -> None:
        resolver.check("mem")
        resolver.check("mem")
        assert mem.checks == 1
        clock.advance(31)
        resolver.check("mem")
        assert mem.checks == 2

    def test_failure_is_a_connection_error(self, store: Any, clock: Any) -> None:
        from support import memory

        r = Resolver({"down": memory("down", fail=True)}, timer=clock)
        with pytest.raises(SecretConnectionError, match="No token received") as info:
            r.check("down")
        assert info.value.to_dict() == {
            "code": "SECRET_MANAGER_CONNECTION_FAILED",
            "message": "No token received",
            "provider": "down",
        }
        assert asyncio.run(_check_async(r)) == "SECRET_MANAGER_CONNECTION_FAILED"


async def _check_async(r: Resolver) -> str:
    try:
        await r.check_async("down")
    except SecretConnectionError as exc:
        return exc.code
    return "ok"


class TestConfigChanges:
    def test_only_the_changed_connection_is_invalidated(self, store: Any, clock: Any) -> None:
        config: dict[str, Any] = {
            "connections": {"a": {"provider": "memory"}, "b": {"provider": "memory"}}
        }
        r = Resolver.from_config(config, timer=clock)
        a, b = r.connections["a"], r.connections["b"]
        r.get_many([("a", "plain"), ("b", "plain")])
        config["connections"]["b"] = {"provider": "memory", "batch": 5}
        from jinja_apsecrets.config import load_config

        r.configure(load_config(config))
        assert r.connections["a"] is a
        assert r.connections["b"] is not b
        r.get_many([("a", "plain"), ("b", "plain")])
        assert a.fetched == 1  # type: ignore[attr-defined]
        assert r.connections["b"].fetched == 1  # type: ignore[attr-defined]


class TestNested:
    def test_resolve_walks_and_never_mutates(self, resolver: Resolver) -> None:
        data = {
            "api": {"key": "<<mem|ap_sep_v1|prod/api:token>>", "n": 3},
            "db": ("{{mem|ap_sep_v1|prod/db:password}}", "x <<mem|ap_sep_v1|plain>> y"),
            "list": ["plain text", "aws|ap_sep_v1|not:a-ref"],
        }
        before = copy.deepcopy(data)
        out = resolver.resolve(data)
        assert data == before
        assert out == {
            "api": {"key": "tok-Secret-2", "n": 3},
            "db": (PW, "x plain-Secret-3 y"),
            "list": ["plain text", "aws|ap_sep_v1|not:a-ref"],
        }
        assert out["list"] is data["list"]

    def test_resolve_async(self, resolver: Resolver) -> None:
        out = asyncio.run(resolver.resolve_async(["<<mem|ap_sep_v1|plain>>", 1]))
        assert out == ["plain-Secret-3", 1]

    def test_resolve_on_missing(self, resolver: Resolver) -> None:
        data = ["<<mem|ap_sep_v1|gone:x>>", "a <<mem|ap_sep_v1|gone:x>> b"]
        assert resolver.resolve(data, on_missing="keep") == data
        assert resolver.resolve(data, on_missing="undefined") == [None, "a  b"]
        with pytest.raises(SecretNotFoundError):
            resolver.resolve(data)

    def test_resolved_values_are_not_parsed_again(self, resolver: Resolver) -> None:
        assert resolver.resolve("<<mem|ap_sep_v1|tricky:value>>").startswith("<<mem|")


class TestAsync:
    def test_100_concurrent_async_lookups_share_fetches(self, resolver: Resolver, mem: Any) -> None:
        refs = [("mem", "prod/db:password"), ("mem", "prod/api:token")]

        async def main() -> list[Any]:
            return await asyncio.gather(*(resolver.get_many_async(refs) for _ in range(100)))

        results = asyncio.run(main())
        assert all(r[refs[0]] == PW for r in results)
        assert sum(len(c) for c in mem.calls) == 2


class TestSafety:
    def test_pickle_has_no_values_and_works(self, resolver: Resolver) -> None:
        resolver.get("mem", "prod/db:password")
        blob = pickle.dumps(resolver)
        assert PW.encode() not in blob
        assert pickle.loads(blob).get("mem", "prod/db:password") == PW

    def test_repr_has_no_values(self, resolver: Resolver) -> None:
        resolver.get("mem", "prod/db:password")
        assert PW not in repr(resolver)
        assert PW not in repr(resolver._cache._entries)


class TestStaleIfError:
    def make(self, clock: Any, stale: float) -> tuple[Resolver, Any]:
        from support import memory

        provider = memory("mem")
        return Resolver({"mem": provider}, timer=clock, ttl=60, stale_if_error=stale), provider

    def test_serves_last_value_while_backend_is_down(
        self, store: Any, clock: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        r, provider = self.make(clock, stale=600)
        assert r.get("mem", "prod/db:password") == PW
        provider.options["fail"] = True
        clock.advance(61)
        assert r.get("mem", "prod/db:password") == PW
        assert "stale" in caplog.text
        assert PW not in caplog.text
        clock.advance(600)
        with pytest.raises(SecretConnectionError):
            r.get("mem", "prod/db:password")

    def test_off_by_default(self, store: Any, clock: Any) -> None:
        r, provider = self.make(clock, stale=0)
        r.get("mem", "prod/db:password")
        provider.options["fail"] = True
        clock.advance(61)
        with pytest.raises(SecretConnectionError):
            r.get("mem", "prod/db:password")

    def test_missing_secret_is_not_served_stale(self, store: Any, clock: Any) -> None:
        r, _ = self.make(clock, stale=600)
        r.get("mem", "plain")
        del store["plain"]
        clock.advance(61)
        with pytest.raises(SecretNotFoundError):
            r.get("mem", "plain")

    def test_configured_in_yaml(self) -> None:
        r = Resolver.from_config({"cache": {"stale_if_error": 120}})
        assert r.stale_if_error == 120


def test_failed_check_raises_even_without_status_cache(store: Any, clock: Any) -> None:
    from support import memory

    r = Resolver({"down": memory("down", fail=True)}, timer=clock, connection_ttl=0)
    for _ in range(2):
        with pytest.raises(SecretConnectionError):
            r.check("down")


def test_from_config_keywords_win_over_the_file(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cache: {ttl: 300}\nconnections: {env: {}}\n")
    r = Resolver.from_config(path, ttl=1)
    assert r.ttl == 1
    r.reload()
    assert r.ttl == 1
    assert pickle.loads(pickle.dumps(r)).config_overrides == {"ttl": 1}


class TestAsyncHazards:
    def test_sync_lookup_in_the_loop_while_a_task_owns_the_fetch(
        self, resolver: Resolver, mem: Any
    ) -> None:
        mem.gate = threading.Event()

        async def main() -> tuple[str, str]:
            owner = asyncio.ensure_future(resolver.get_async("mem", "plain"))
            await asyncio.sleep(0)  # the owner claims and submits its fetch
            threading.Timer(0.05, mem.gate.set).start()
            value = resolver.get("mem", "plain")  # blocks the loop; completes from the pool
            return value, await owner

        assert asyncio.run(asyncio.wait_for(main(), 10)) == ("plain-Secret-3", "plain-Secret-3")
        assert mem.fetched == 1

    def test_a_cancelled_render_does_not_fail_the_others(
        self, resolver: Resolver, mem: Any
    ) -> None:
        mem.gate = threading.Event()

        async def main() -> str:
            owner = asyncio.ensure_future(resolver.get_async("mem", "plain"))
            await asyncio.sleep(0)
            waiter = asyncio.ensure_future(resolver.get_async("mem", "plain"))
            await asyncio.sleep(0)
            owner.cancel()
            mem.gate.set()
            return await waiter

        assert asyncio.run(asyncio.wait_for(main(), 10)) == "plain-Secret-3"
        assert mem.fetched == 1


def test_changing_the_policy_applies_to_references_already_seen(resolver: Resolver) -> None:
    assert resolver.get("mem", "plain") == "plain-Secret-3"
    resolver.policy = ["mem:prod/*"]
    with pytest.raises(SecretNotFoundError, match="policy"):
        resolver.get("mem", "plain")
    assert pickle.loads(pickle.dumps(resolver)).policy == ("mem:prod/*",)
    resolver.policy = None
    assert resolver.get("mem", "plain") == "plain-Secret-3"


class TestOnValue:
    def test_called_once_with_every_string_value_handed_out(self, mem: Any, clock: Any) -> None:
        seen: list[str] = []
        r = Resolver({"mem": mem}, timer=clock, on_value=seen.append)
        r.get_many([("mem", "prod/db:password"), ("mem", "plain"), ("mem", "gone:x")])
        assert sorted(seen) == sorted([PW, "plain-Secret-3"])
        r.get("mem", "plain")  # a cache hit is handed out too
        assert seen.count("plain-Secret-3") == 2

    def test_pickled_as_the_hook_pickles_itself(self, mem: Any, clock: Any) -> None:
        from jinja_apsecrets.redaction import Redactor

        redactor = Redactor()
        r = Resolver({"mem": mem}, timer=clock, on_value=redactor.add)
        r.get("mem", "plain")
        blob = pickle.dumps(r)
        assert b"plain-Secret-3" not in blob  # the redactor leaves its values out
        copy = pickle.loads(blob)
        assert copy.on_value is not None
        copy.get("mem", "plain")
        assert copy.on_value.__self__.redact("x plain-Secret-3") == "x <redacted>"


class TestAudit:
    def test_one_record_per_reference_hit_or_miss_never_a_value(self, mem: Any, clock: Any) -> None:
        records: list[dict[str, Any]] = []
        r = Resolver({"mem": mem}, timer=clock, audit=records.append)
        r.lookup([("mem", "prod/db:password"), ("mem", "gone:x")], template="t.j2")
        r.get("mem", "prod/db:password")
        assert [(x["template"], x["path"], x["cache"], x["outcome"]) for x in records] == [
            ("t.j2", "prod/db:password", "miss", "ok"),
            ("t.j2", "gone:x", "miss", "SECRET_MANAGER_GET_SECRET_FAILED"),
            (None, "prod/db:password", "hit", "ok"),
        ]
        assert PW not in repr(records)

    def test_a_failing_sink_does_not_break_the_lookup(
        self, mem: Any, clock: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(record: dict[str, Any]) -> None:
            raise RuntimeError("sink down")

        r = Resolver({"mem": mem}, timer=clock, audit=broken)
        assert r.get("mem", "prod/db:password") == PW
        assert "audit hook failed" in caplog.text


class TestMemos:
    def test_parse_memo_is_lru_bounded(self, mem: Any, clock: Any) -> None:
        r = Resolver({"mem": mem}, timer=clock, maxsize=3)
        for i in range(5):
            r.locate("mem", f"s{i}:k")
        r.locate("mem", "s3:k")  # recently used: kept
        r.locate("mem", "s9:k")
        assert set(r._parsed) == {("mem", "s3:k"), ("mem", "s4:k"), ("mem", "s9:k")}

    def test_check_status_lives_connection_ttl_on_the_injected_clock(
        self, resolver: Resolver, mem: Any, clock: Any
    ) -> None:
        resolver.connection_ttl = 5
        resolver.check("mem")
        clock.advance(4)
        resolver.check("mem")
        assert mem.checks == 1
        clock.advance(2)
        resolver.check("mem")
        assert mem.checks == 2
        assert asyncio.run(resolver.check_async("mem")) is None
        assert mem.checks == 2


def test_only_settings_keywords_are_kept_for_reload(tmp_path: Any, mem: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("connections: {env: {}}\n")
    r = Resolver.from_config(path, ttl=1, connections={"mem": mem})
    assert r.config_overrides == {"ttl": 1}
    r.reload()
    assert sorted(r.connections) == ["env"]
