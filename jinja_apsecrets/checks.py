"""Live connection checks (the spec's "connect") and their cached outcomes.

A check's outcome (passed, or the error it failed with) is kept
``connection_ttl`` seconds (the spec's 30 s) in a :class:`cachetools.TTLCache`
on the resolver's clock, so ``check`` in a loop does not hammer a backend and
TTL tests never sleep. As everywhere in cachetools, the cache is not
thread-safe by itself: the lock guards reads and writes only; the check itself
runs outside it. Cached errors are shared, so each raise gets its own copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NoReturn

from cachetools import TTLCache

from .errors import SecretConnectionError, SecretsError
from .providers.base import Provider
from .twins import MaybeAwaitable, then

__all__ = ["ConnectionChecks"]

#: What the cache holds for a check that passed.
_PASSED = "passed"


class ConnectionChecks:
    """Outcomes of connection checks by connection name, ``ttl`` seconds each."""

    def __init__(self, ttl: float, timer: Callable[[], float], maxsize: int = 1024) -> None:
        self._timer = timer
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._ttl = float(ttl)
        self._outcomes = self._new_outcomes()

    def _new_outcomes(self) -> TTLCache[str, SecretsError | str]:
        return TTLCache(self._maxsize, self._ttl, timer=self._timer)

    @property
    def ttl(self) -> float:
        return self._ttl

    @ttl.setter
    def ttl(self, seconds: float) -> None:
        # A TTLCache has one lifetime: a new one drops the outcomes kept under
        # the old, so only a change makes one.
        if float(seconds) != self._ttl:
            self._ttl = float(seconds)
            with self._lock:
                self._outcomes = self._new_outcomes()

    def fresh(self, name: str) -> bool:
        """True if a passed check is cached; raises a cached failure; else False."""
        with self._lock:
            outcome = self._outcomes.get(name)
        if isinstance(outcome, SecretsError):
            raise outcome.copy()
        return outcome is not None

    def passed(self, name: str) -> None:
        with self._lock:
            self._outcomes[name] = _PASSED

    def failed(self, name: str, exc: Exception) -> NoReturn:
        """Keep the error a check of ``name`` failed with, and raise it."""
        error: SecretsError
        if isinstance(exc, SecretsError):
            error = exc if exc.provider == name else exc.copy(provider=name)
        else:  # a provider bug: name its type only, never what it holds
            error = SecretConnectionError(f"{type(exc).__name__} during check", provider=name)
        with self._lock:
            self._outcomes[name] = error
        raise error.copy() from None

    def run(
        self, name: str, provider: Provider, probe: Callable[[Provider], MaybeAwaitable[None]]
    ) -> MaybeAwaitable[None]:
        """Check ``name`` with ``probe`` (``Provider.check`` or its async twin)
        unless a fresh outcome is cached; keep the outcome. Returns what the
        probe returns: nothing, or an awaitable for the async door."""
        if self.fresh(name):  # raises a cached failure
            return None
        try:
            probing = probe(provider)
        except Exception as exc:
            self.failed(name, exc)
        return then(probing, lambda _: self.passed(name), lambda exc: self.failed(name, exc))

    def forget(self, name: str | None = None) -> None:
        """Drop the outcome of one connection, or of all."""
        with self._lock:
            if name is None:
                self._outcomes.clear()
            else:
                self._outcomes.pop(name, None)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
