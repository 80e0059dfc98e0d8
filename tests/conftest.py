"""Shared fixtures: an in-memory provider that counts fetches, a fake clock, and
the real servers (``moto``, ``bao``: one per test module, started on a free
loopback port and stopped by PID; see servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import pytest
from servers import Server, start_bao, start_moto
from support import STORE, FakeClock, MemoryProvider

from jinja_apsecrets import Resolver
from jinja_apsecrets.providers.base import Document


@pytest.fixture
def store() -> Iterator[dict[str, Document]]:
    STORE.clear()
    STORE.update(
        {
            "prod/db": {"username": "admin", "password": "pw-Secret-1", "port": 5432},
            "prod/api": {"token": "tok-Secret-2", "nested": {"a": [1, 2]}},
            "plain": "plain-Secret-3",
            "tricky": {"value": "<<mem|ap_sep_v1|prod/db:password>> {{ 7 * 6 }} {% if x %}"},
            "html": {"value": "<b>&'\""},
        }
    )
    yield STORE
    STORE.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mem(store: dict[str, Document]) -> MemoryProvider:
    return MemoryProvider("mem")


@pytest.fixture
def resolver(mem: MemoryProvider, clock: FakeClock) -> Iterator[Resolver]:
    r = Resolver({"mem": mem}, timer=clock)
    yield r
    r.close()


@pytest.fixture
def make_env(resolver: Resolver) -> Callable[..., jinja2.Environment]:
    def make(
        cls: type[jinja2.Environment] = jinja2.Environment, **options: Any
    ) -> jinja2.Environment:
        env = cls(extensions=["jinja_apsecrets.SecretsExtension"], **options)
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        return env

    return make


@pytest.fixture
def env(make_env: Callable[..., jinja2.Environment]) -> jinja2.Environment:
    return make_env()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_bao(tmp_path_factory.mktemp("bao"))
    yield server
    server.stop()
