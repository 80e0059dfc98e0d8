"""``run``: start a command with secrets in its environment, its output masked.

What ``op run`` and envconsul do, for this library's references:

1. The child's environment is the current one, then each ``--env-file``
   (dotenv, later files win), then each ``--env NAME=VALUE`` (last). Every
   value holding a reference (``<<conn|ap_sep_v1|path>>``, the ``{{...}}``
   spelling, embedded or alone, or the whole value as bare
   ``conn|ap_sep_v1|path``) gets its values, all looked up in one round
   (:mod:`._environ`). Any failure and nothing is started; exit codes as for
   ``render``.
2. The child runs with its standard output and error read through pipes, and
   every resolved value is replaced by ``<concealed by jinja-apsecrets>`` on
   the way (:class:`~jinja_apsecrets.masking.StreamMasker`: a value split
   across two reads is still masked; other output passes at once, byte for
   byte). A child on pipes has no terminal; ``--no-masking`` hands it ours.
3. SIGINT, SIGTERM and SIGHUP sent to ``run`` go to the child, and ``run``
   waits for it. A Ctrl-C typed at the terminal already reached the child
   (same process group), so it is not sent a second time.
4. The exit status is the child's; a child killed by signal N gives 128 + N,
   as a shell reports it.

The state of one run (the child, signals that came before it started) lives
in a :class:`_Child` made by the command, never in module globals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, BinaryIO, Literal

import click

from ..dotenv import DotenvError, parse
from ..masking import StreamMasker
from ..resolver import ON_MISSING, OnMissing
from ._audit import Reporter
from ._environ import Source, references, resolve_values
from ._errors import EXIT_CODES_HELP, UsageProblem
from ._options import (
    audit_option,
    config_option,
    guarded,
    session,
    verbose_option,
)

__all__ = ["child_exit_code", "run"]

#: Signals passed on to the child.
FORWARDED = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)

#: Exit statuses of a command that cannot be started, as a shell gives them.
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126

_READ_SIZE = 65536


@click.command(
    epilog=EXIT_CODES_HELP
    + "\n\n\b\nOtherwise run exits with the command's status (128 + N if a signal N killed it).",
    context_settings={"allow_interspersed_args": False},
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A dotenv file of variables to add (NAME=value, quotes, comments, 'export'; "
    "repeatable, later files win).",
)
@click.option(
    "--env",
    "assignments",
    multiple=True,
    metavar="NAME=VALUE",
    help="A variable to add (repeatable); wins over the environment and --env-file.",
)
@click.option(
    "--masking/--no-masking",
    default=True,
    show_default=True,
    help="Replace every resolved value in the command's output with "
    "<concealed by jinja-apsecrets>. --no-masking passes the terminal on instead.",
)
@config_option
@click.option(
    "--on-missing",
    type=click.Choice(ON_MISSING),
    default=None,
    help="A missing secret stops the run (error, the default), leaves the reference in "
    "the variable as written (keep), or makes that reference empty (undefined).",
)
@audit_option
@verbose_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@guarded
def run(
    env_files: Sequence[str],
    assignments: Sequence[str],
    masking: bool,
    config: Path | None,
    on_missing: OnMissing | None,
    audit_log: str | None,
    verbose: int,
    command: Sequence[str],
) -> None:
    """Run COMMAND with the secrets its environment refers to.

    Each variable whose value holds a reference (<<aws|ap_sep_v1|prod/db:password>>,
    anywhere in the value, or the whole value as bare aws|ap_sep_v1|prod/db:password)
    gets the secret's value. All references are looked up before COMMAND starts; if
    one fails, it is not started. Its output is masked: each value is replaced by
    <concealed by jinja-apsecrets>.

    \b
      export DB_PASSWORD='<<aws|ap_sep_v1|prod/db:password>>'
      jinja-apsecrets run -- ./serve --port 80
      jinja-apsecrets run --env-file app.env --env 'T=vault|ap_sep_v1|secret/data/t' -- npm start
    """
    reporter = Reporter(verbose)
    env, sources = _environment(env_files, assignments)
    secrets: list[str] = []
    if any(references(value) for value in env.values()):
        with session(config, audit_log, reporter) as resolver:
            resolved = resolve_values(
                resolver, env, sources, audit_name="run", on_missing=on_missing
            )
        env.update(resolved.values)
        secrets = resolved.secrets
        reporter.info(f"run: {len(resolved.values)} variables hold references")
    reporter.info(f"run: starting {command[0]}")
    code = _Child(list(command), env, secrets if masking else None).run()
    if code:
        raise click.exceptions.Exit(code)


def _environment(
    env_files: Sequence[str], assignments: Sequence[str]
) -> tuple[dict[str, str], dict[str, Source]]:
    """The child's environment before resolution, and where each value came from."""
    env = dict(os.environ)
    sources = {name: Source(f"environment variable {name}") for name in env}
    for file in env_files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageProblem(f"{file}: not UTF-8 text") from None
        try:
            parsed = parse(text)
        except DotenvError as exc:
            raise UsageProblem(f"{file}: {exc}") from None
        for line in parsed.entries:
            assert line.entry is not None
            assert line.entry.value is not None
            env[line.entry.name] = line.entry.value
            sources[line.entry.name] = Source(file, line.lineno)
    for item in assignments:
        name, eq, value = item.partition("=")
        if not eq or not name or "\0" in item:
            # Not echoed: a value passed without its name would be printed.
            raise UsageProblem("--env: expected NAME=VALUE")
        env[name] = value
        sources[name] = Source(f"--env {name}")
    return env, sources


def child_exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: 128 + N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Child:
    """One child process: started, its signals forwarded, its output masked."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    #: Values to mask; ``None``: no masking, the child inherits our streams.
    secrets: list[str] | None = field(repr=False)
    process: subprocess.Popen[bytes] | None = None
    early: list[int] = field(default_factory=list)

    def run(self) -> int:
        """Start the child, pass its output on, wait; its exit status."""
        masked = self.secrets is not None
        pipe = subprocess.PIPE if masked else None
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            try:
                self.process = subprocess.Popen(self.argv, env=self.env, stdout=pipe, stderr=pipe)
            except FileNotFoundError:
                click.echo(f"error: {self.argv[0]}: command not found", err=True)
                return EXIT_NOT_FOUND
            except PermissionError:
                click.echo(f"error: {self.argv[0]}: permission denied", err=True)
                return EXIT_NOT_EXECUTABLE
            for sig in self.early:  # arrived while the child was being started
                self.process.send_signal(sig)
            pumps = []
            if masked:
                assert self.secrets is not None
                pumps = [
                    _pump(self.process.stdout, "stdout", self.secrets),
                    _pump(self.process.stderr, "stderr", self.secrets),
                ]
            returncode = self.process.wait()
            # The output ends when every writer closed it (the child, and any
            # process it left behind holding it).
            for pump in pumps:
                pump.join()
            return child_exit_code(returncode)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self.process is None:
            self.early.append(signum)
        elif signum == signal.SIGINT and _terminal_sent_it():
            pass  # Ctrl-C went to the whole foreground process group, the child too
        elif self.process.poll() is None:
            self.process.send_signal(signum)


def _terminal_sent_it() -> bool:
    """Whether a SIGINT is likely to come from our terminal: we (and so the
    child, which shares our process group) are its foreground process group."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _pump(
    source: IO[bytes] | None, stream: Literal["stdout", "stderr"], secrets: list[str]
) -> threading.Thread:
    """A thread copying ``source`` to our ``stream``, values masked."""
    assert source is not None
    # Through sys, so that a runner replacing the streams (click's) sees the output.
    target = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
    thread = threading.Thread(
        target=_copy, args=(source, target, StreamMasker(secrets)), daemon=True
    )
    thread.start()
    return thread


def _copy(source: IO[bytes], target: BinaryIO, masker: StreamMasker) -> None:
    fd = source.fileno()
    write: Callable[[bytes], None] = _writer(target)
    try:
        while True:
            chunk = os.read(fd, _READ_SIZE)
            if not chunk:
                write(masker.flush())
                return
            write(masker.feed(chunk))
    except OSError:
        # Our side is closed (``run ... | head``): close the child's pipe too,
        # so it sees a broken pipe as it would without us.
        return
    finally:
        source.close()


def _writer(target: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        if data:
            target.write(data)
            target.flush()

    return write
