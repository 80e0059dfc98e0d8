"""``watch``: keep rendered outputs current while secrets rotate (as consul-template).

A :class:`Watcher` runs *rounds*. A round is ``render``'s flow (see
:mod:`._rendering`): plan, collect the variables, render every template into
memory, and, only if all of them rendered, write the outputs whose bytes or
mode changed (atomically; unchanged ones keep their inode and mtime). A failed
round (a backend down, a template error, a refused output) writes nothing:
the last good outputs stay as they are.

When rounds run:

- a **timed** round every *period*: ``--interval`` seconds, or else the
  shortest cache TTL of the configured connections. A timed round forgets the
  cached secrets first (``Resolver.invalidate``), so every secret is looked up
  again;
- a **file** round as soon as a watched file changes. Files are polled (no
  inotify): their size, mtime and inode, once a second or every period if
  shorter. Watched are the vars files, the template (or every file of the
  template folder, except the output folder) and every template the last
  round loaded (includes, imports). A file round uses the cache;
- after a **failed** round, a timed round after a backoff of 1 s, doubling,
  capped at the period (the TTL);
- at once on **SIGHUP**, after reading the config file again (a config that
  no longer loads is logged and the old one kept).

SIGINT and SIGTERM end the loop after the current round, with exit 0.
``--once`` runs one round and exits with ``render``'s exit codes.

``--exec COMMAND`` (through the shell) runs after each round that changed at
least one output; never two at once: a round that changes outputs while it
still runs makes it run once more when it ends. Its exit status is logged,
never fatal.

Logs go to standard error, one line per round (``round 3: 2 changed,
8 unchanged, 0.21 s``); a failure is described as ``render`` describes it
(code, connection, path, place; never a value).

Time is injected: the loop asks a :class:`~._scheduling.Clock` for the time
and to sleep, so unit tests drive it without waiting (see :mod:`._scheduling`
for the real clock, the schedule and the ``--exec`` runner).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..resolver import Resolver
from ._audit import Reporter
from ._errors import EXIT_OK, EXIT_USAGE, UsageProblem, describe, exit_code
from ._options import guarded, render_options, session, worst
from ._output import OutputError
from ._rendering import (
    Request,
    build_outputs,
    plan_request,
    render_plan,
    walk_tree,
)
from ._scheduling import Clock, ExecRunner, Log, RealClock, Schedule

__all__ = ["RoundResult", "Watcher", "default_period", "watch"]

Fingerprint = dict[str, tuple[int, int, int] | None]


@dataclass
class RoundResult:
    """What one round did. ``code`` is ``render``'s exit code for it."""

    number: int
    code: int
    changed: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK


class Watcher:
    """The rounds of ``watch`` and the loop that schedules them (see the module
    docstring). ``clock`` is injectable; ``runner`` is the ``--exec`` runner."""

    def __init__(
        self,
        request: Request,
        resolver: Resolver,
        clock: Clock,
        *,
        period: float,
        log: Log,
        runner: ExecRunner | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.request = request
        self.resolver = resolver
        self.clock = clock
        self.schedule = Schedule(period)
        self.log = log
        self.runner = runner
        self.reporter = reporter
        self.rounds = 0
        self._loaded: list[str] = []
        self._seen: Fingerprint = {}
        self._stop = False
        self._hangup = False

    # -- signals (called from handlers: they only set flags) ----------------------

    def stop(self) -> None:
        """End the loop after the current round."""
        self._stop = True

    def hangup(self) -> None:
        """Read the config again and run a round at once."""
        self._hangup = True

    # -- one round ------------------------------------------------------------------

    def run_round(self, *, fresh: bool) -> RoundResult:
        """Render everything; write what changed; ``--exec`` if something did.

        ``fresh`` forgets cached secrets first. Never raises for a failed
        render: the failure is logged and the outputs are left alone.
        """
        self.rounds += 1
        start = self.clock.now()
        self._seen = self.fingerprint()
        result = RoundResult(self.rounds, EXIT_OK)
        if fresh:
            self.resolver.invalidate()
        try:
            plan = plan_request(self.request)
            rendered = render_plan(self.resolver, plan, self.request, self.reporter)
            self._loaded = rendered.loaded or self._loaded
            for file, st in self.fingerprint().items():
                self._seen.setdefault(file, st)  # newly loaded: watched from now on
            if rendered.failures:
                codes = set()
                for job, exc in rendered.failures:
                    codes.add(exit_code(exc))
                    self._describe(exc, template=job.file, root=plan.root)
                result.code = worst(codes)
            else:
                outputs = build_outputs(plan, rendered, self.request.mode)
                written = outputs.commit() if outputs is not None else []
                result.changed = len(written)
                result.unchanged = (len(outputs) if outputs is not None else 0) - len(written)
        except (UsageProblem, OutputError) as exc:
            self.log(f"error: {exc.format_message() if isinstance(exc, UsageProblem) else exc}")
            result.code = EXIT_USAGE
        except OSError as exc:  # a file of the tree (a --copy source) went away, say
            self.log(f"error: {exc.filename}: {exc.strerror or type(exc).__name__}")
            result.code = EXIT_USAGE
        except Exception as exc:  # a vars file, the config: described, never a value
            self._describe(exc)
            result.code = exit_code(exc)
        result.seconds = self.clock.now() - start
        if result.ok:
            self.log(
                f"round {result.number}: {result.changed} changed, "
                f"{result.unchanged} unchanged, {result.seconds:.2f} s"
            )
            if result.changed and self.runner is not None:
                self.runner.request()
        return result

    def _describe(self, exc: BaseException, **where: Any) -> None:
        for line in describe(exc, **where):
            self.log(line)

    # -- what is watched ----------------------------------------------------------------

    def watched(self) -> list[str]:
        """The files whose change starts a round (see the module docstring)."""
        files = list(self.request.vars_files)
        source = self.request.source
        if source.is_dir():
            skip = self.request.output.resolve() if self.request.output is not None else None
            files += [os.path.join(source, rel) for rel in walk_tree(source, skip, ())]
        else:
            files.append(os.fspath(source))
        return files + self._loaded

    def fingerprint(self) -> Fingerprint:
        """Size, mtime and inode of every watched file (``None``: missing)."""
        out: Fingerprint = {}
        for file in self.watched():
            key = os.path.abspath(file)
            try:
                st = os.stat(key)
            except OSError:
                out[key] = None
            else:
                out[key] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return out

    # -- the loop ------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Round after round until :meth:`stop`; with ``once``, one round.

        Returns the exit code: ``render``'s for ``once``, else 0."""
        result = self.run_round(fresh=True)
        if once:
            if self.runner is not None:
                self.runner.wait()
            return result.code
        due = self._next(result)
        while not self._stop:
            if self.runner is not None:
                self.runner.poll()
            now = self.clock.now()
            if self._hangup:
                self._hangup = False
                self._reload()
                due = self._next(self.run_round(fresh=True))
            elif now >= due:
                due = self._next(self.run_round(fresh=True))
            elif self.fingerprint() != self._seen:
                result = self.run_round(fresh=False)
                if not result.ok or self.schedule.failures:
                    due = self._next(result)
            else:
                self.clock.sleep(max(0.0, min(due, now + self.schedule.poll) - now))
        if self.runner is not None:
            self.runner.wait()
        return EXIT_OK

    def _next(self, result: RoundResult) -> float:
        """When the next timed round is due after ``result``; logs a retry."""
        wait = self.schedule.delay(result.ok)
        if not result.ok:
            self.log(f"round {result.number}: failed, outputs kept; retry in {wait:g} s")
        return self.clock.now() + wait

    def _reload(self) -> None:
        try:
            self.resolver.reload()
        except Exception as exc:  # keep the old config; described, never a value
            self._describe(exc)
            self.log("config: not reloaded; the old one stays in use")
        else:
            self.log("config: reloaded")


def default_period(resolver: Resolver) -> float:
    """The shortest cache TTL of the connections (that cache at all), else the
    resolver's default TTL."""
    ttls = [resolver.connection(name).ttl for name in resolver.connections]
    positive = [ttl for ttl in ttls if ttl > 0]
    return min(positive) if positive else resolver.ttl if resolver.ttl > 0 else 300.0


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Output file (or folder, for a folder SOURCE).",
)
@render_options
@click.option(
    "--exec",
    "command",
    metavar="COMMAND",
    help="A shell command run after each round that changed an output (one at a "
    "time; its exit status is logged, not fatal). E.g. 'systemctl reload nginx'.",
)
@click.option("--once", is_flag=True, help="One round, then exit with render's exit codes.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Look every secret up again this often (default: the shortest cache TTL).",
)
@guarded
def watch(
    source: Path,
    output: Path,
    config: Path | None,
    audit_log: str | None,
    verbose: int,
    command: str | None,
    once: bool,
    interval: float | None,
    **request_options: Any,
) -> None:
    """Render SOURCE like render, then keep OUTPUT current as secrets rotate.

    Secrets are looked up again every --interval seconds (default: when their
    cache TTL lapses); the template and vars files are read again when they
    change on disk (polled once a second). Only outputs whose content changed
    are written, atomically; a failure (a backend down, a template error) keeps
    the last good outputs and is retried with backoff. SIGHUP reads the config
    again and renders at once; SIGINT and SIGTERM exit 0 after the current
    round. Logs go to stderr, one line per round.

    \b
    Exit codes (--once): as for render. Without --once: 0 when stopped by a
    signal, 2 for a usage or configuration error at start.
    """
    reporter = Reporter(verbose)
    request = Request.from_params(source, output, **request_options)
    plan_request(request)  # usage errors (a folder without -o, a link) end it now

    def log(line: str) -> None:
        click.echo(line, err=True)

    clock = RealClock()
    try:
        with session(config, audit_log, reporter, near=(source,)) as resolver:
            runner = ExecRunner(command, log) if command else None
            watcher = Watcher(
                request,
                resolver,
                clock,
                period=interval or default_period(resolver),
                log=log,
                runner=runner,
                reporter=reporter,
            )
            handlers = {
                signal.SIGHUP: watcher.hangup,
                signal.SIGINT: watcher.stop,
                signal.SIGTERM: watcher.stop,
            }
            with clock.signals(handlers):
                code = watcher.run(once=once)
    finally:
        clock.close()
    if code:
        raise click.exceptions.Exit(code)
