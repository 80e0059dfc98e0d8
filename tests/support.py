"""Test support: an in-memory provider that counts fetches, and a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from jinja_apsecrets.errors import SecretNotFoundError, SecretsError
from jinja_apsecrets.providers import register_provider
from jinja_apsecrets.providers.base import (
    Document,
    FetchResult,
    Field,
    Locator,
    Provider,
    SecretId,
    split_key,
)

#: Documents served by every MemoryProvider, by secret name.
STORE: dict[str, Document] = {}


class MemoryProvider(Provider):
    """A provider backed by :data:`STORE`; counts fetch calls and ids."""

    id = "memory"
    fields = {"batch": Field(int, default=20), "fail": Field(bool, default=False)}
    path_format = "name:key"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.calls: list[list[SecretId]] = []
        self.checks = 0
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    @property
    def max_batch(self) -> int:  # type: ignore[override]
        return int(self.options["batch"])

    def parse_path(self, path: str) -> Locator:
        parts = split_key(path)
        if parts is None:
            if not path or ":" in path:
                raise self.invalid(path, f"Wrong key format. Should be {self.path_format}")
            return Locator(SecretId(path))
        return Locator(SecretId(parts[0]), parts[1])

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        with self._lock:
            self.calls.append(list(ids))
        if self.gate is not None:
            self.gate.wait(10)
        if self.options["fail"]:
            from jinja_apsecrets.errors import SecretConnectionError

            raise SecretConnectionError("No token received")
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            doc = STORE.get(sid.name)
            out[sid] = SecretNotFoundError(f"Secret {sid.name} not found") if doc is None else doc
        return out

    def check(self) -> None:
        self.checks += 1
        if self.options["fail"]:
            from jinja_apsecrets.errors import SecretConnectionError

            raise SecretConnectionError("No token received")

    @property
    def fetched(self) -> int:
        return len(self.calls)


register_provider("memory", MemoryProvider, clobber=True)


class FakeClock:
    """A clock tests move by hand: TTL tests never sleep."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory(name: str, **options: Any) -> MemoryProvider:
    """A MemoryProvider connection named ``name``."""
    return MemoryProvider(name, options)
