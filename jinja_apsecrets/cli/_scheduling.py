"""The machinery under ``watch``'s loop: time, the schedule of rounds, ``--exec``.

:class:`Clock` is what the loop asks for the time and to sleep; tests pass a
clock that moves only when the loop sleeps. :class:`RealClock` sleeps in
``select`` on a pipe that signal handlers write to (``signal.set_wakeup_fd``),
so a signal, or the end of the ``--exec`` child (SIGCHLD), wakes it at once;
the handlers themselves only set flags.

:class:`Schedule` says when the next timed round is due (the period, or a
backoff after failures); :class:`ExecRunner` runs ``--exec`` one at a time.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

__all__ = ["BACKOFF_START", "POLL", "Clock", "ExecRunner", "Log", "RealClock", "Schedule"]

#: Files are checked at least this often (seconds).
POLL = 1.0
#: The first retry after a failed round (seconds); it doubles up to the period.
BACKOFF_START = 1.0

Log = Callable[[str], None]


class Clock(Protocol):
    """Time for the loop: ``now`` (monotonic seconds) and ``sleep``, which may
    return early (a signal arrived)."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """``time.monotonic``, and a sleep that signals cut short.

    While :meth:`signals` is active, each handled signal writes a byte to a
    pipe (``signal.set_wakeup_fd``); :meth:`sleep` waits in ``select`` on it.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            ready, _, _ = select.select([self._read], [], [], seconds)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._read, 512):
                        pass

    @contextlib.contextmanager
    def signals(self, handlers: dict[signal.Signals, Callable[[], None]]) -> Iterator[None]:
        """Install ``handlers`` (and a SIGCHLD handler that only wakes the
        sleep) for the duration; the previous ones are restored after."""

        def call(action: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
            return lambda _signum, _frame: action()

        wanted: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
            sig: call(action) for sig, action in handlers.items()
        }
        wanted[signal.SIGCHLD] = lambda _signum, _frame: None
        old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


@dataclass
class Schedule:
    """When the next timed round runs: every ``period`` seconds after a good
    round; after failed ones, ``backoff`` seconds doubling, capped at the period."""

    period: float
    backoff: float = BACKOFF_START
    failures: int = 0

    @property
    def poll(self) -> float:
        """How often watched files are checked."""
        return min(POLL, self.period)

    def delay(self, ok: bool) -> float:
        """The wait until the next timed round, after a round that was ``ok`` or not."""
        if ok:
            self.failures = 0
            return self.period
        wait = min(self.backoff * float(2**self.failures), self.period)
        self.failures += 1
        return wait


class ExecRunner:
    """Runs ``--exec`` through the shell, one at a time.

    :meth:`request` asks for a run; if one is going, another follows when it
    ends (requests meanwhile are merged into that one). :meth:`poll` notices
    the end (logging the exit status) and starts what was asked for.
    """

    def __init__(
        self,
        command: str,
        log: Log,
        spawn: Callable[[str], subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.command = command
        self.log = log
        self.spawn = spawn or _spawn
        self.runs = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = False

    @property
    def running(self) -> bool:
        return self._proc is not None

    def request(self) -> None:
        self._pending = True
        self.poll()

    def poll(self) -> None:
        if self._proc is not None:
            status = self._proc.poll()
            if status is None:
                return  # a pending run starts when this one ends
            self._ended(status)
        if self._pending:
            self._pending = False
            self.runs += 1
            try:
                self._proc = self.spawn(self.command)
            except OSError as exc:
                self.log(f"exec: cannot start: {exc.strerror or exc}")

    def wait(self) -> None:
        """Wait for the run that is going, and the one asked for after it."""
        while self._proc is not None or self._pending:
            if self._proc is not None:
                self._proc.wait()
            self.poll()

    def _ended(self, status: int) -> None:
        self._proc = None
        if status < 0:
            self.log(f"exec: killed by signal {-status}")
        else:
            self.log(f"exec: exit status {status}")


def _spawn(command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL)  # noqa: S602 - --exec is a shell command by contract
