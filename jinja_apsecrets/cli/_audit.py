"""What the CLI tells about lookups: the audit log (JSON lines) and ``-v`` output.

Both receive the resolver's audit events, one per reference looked up, and
copy only the fields named in :data:`FIELDS`: the event carries no value, and
whatever a future resolver adds to it is not passed on unless listed here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import click

from ..errors import SecretsError
from ..redaction import Redactor
from ..resolver import Resolver

__all__ = ["FIELDS", "AuditLog", "Reporter", "fan_out", "library_logging"]

#: The audit record, in this order.
FIELDS = ("time", "template", "connection", "path", "cache", "outcome")

AuditHook = Callable[[Mapping[str, Any]], None]


def _timestamp(value: Any) -> Any:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds; others as given."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def record(event: Mapping[str, Any]) -> dict[str, Any]:
    """The audit record of ``event``: :data:`FIELDS` only, time as ISO 8601."""
    out = {name: event.get(name) for name in FIELDS}
    out["time"] = _timestamp(out["time"])
    return out


class AuditLog:
    """Appends one JSON object per line to ``path`` (``-``: standard error).

    A new file is created with mode 0600. Each line is one ``write`` on a file
    opened for appending, so several processes may share one log. Lines are
    on disk as soon as the lookup is done, even if the command later fails.
    """

    def __init__(self, path: str, redactor: Redactor | None = None) -> None:
        self.path = path
        #: Takes whole values out of paths: a template may compute a path from a
        #: value (``secret("aws", "db:" ~ secret(..))``).
        self.redactor = redactor
        self._lock = threading.Lock()
        self._fd: int | None = None
        if path != "-":
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, event: Mapping[str, Any]) -> None:
        out = record(event)
        if self.redactor is not None and isinstance(out["path"], str):
            out["path"] = self.redactor.redact_values(out["path"])
        line = json.dumps(out, ensure_ascii=False) + "\n"
        with self._lock:
            if self._fd is None:
                click.echo(line, err=True, nl=False)
            else:
                os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Reporter:
    """``-v`` output on standard error: what the command does, never a value.

    Backend requests are reported by the library itself (one INFO line per
    request, see :mod:`jinja_apsecrets.fetching`); lookups are only counted
    here, for :meth:`summary`.
    """

    def __init__(self, verbosity: int) -> None:
        self.verbosity = verbosity
        self.references: set[tuple[str, str]] = set()

    def __bool__(self) -> bool:
        return self.verbosity > 0

    def info(self, message: str) -> None:
        if self.verbosity > 0:
            click.echo(message, err=True)

    def lookup(self, event: Mapping[str, Any]) -> None:
        """Count the reference looked up (the audit hook of ``-v``)."""
        self.references.add((event["connection"], event["path"]))

    def summary(self, resolver: Resolver) -> str:
        """References, distinct secrets and backend requests so far, as text."""
        secrets = set()
        for ref in self.references:
            located = resolver.locate(*ref)
            if not isinstance(located, SecretsError):
                secrets.add((ref[0], located[1].secret))
        counts = (
            _count(len(self.references), "reference"),
            _count(len(secrets), "distinct secret"),
            _count(resolver.requests, "backend request"),
        )
        return ", ".join(counts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fan_out(*hooks: AuditHook | None) -> AuditHook | None:
    """One audit hook that calls each given hook, or ``None`` if none is given."""
    live = [hook for hook in hooks if hook is not None]
    if not live:
        return None

    def hook(event: Mapping[str, Any]) -> None:
        for each in live:
            each(event)

    return hook


class _EchoHandler(logging.Handler):
    """Log records to click's standard error (so tests' runners capture them).

    The library logs names and paths, never values; but a path may be computed
    from a value (``secret("aws", "db:" ~ secret(..))``), so whole values are
    taken out with the run's redactor."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor

    def emit(self, rec: logging.LogRecord) -> None:
        try:
            text = self.format(rec)
            if self.redactor is not None:
                text = self.redactor.redact_values(text)
            click.echo(f"{rec.levelname.lower()}: {text}", err=True)
        except Exception:  # a log line must never break a render
            self.handleError(rec)


@contextmanager
def library_logging(verbosity: int, redactor: Redactor | None = None) -> Iterator[None]:
    """Show the library's log on standard error while the command runs:
    warnings always, info with ``-v``, debug with ``-vv``. The library never
    logs values (DESIGN.md); ``redactor`` (the run's) takes out a value that a
    template put into a path."""
    logger = logging.getLogger("jinja_apsecrets")
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _EchoHandler(redactor)
    handler.setLevel(level)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
