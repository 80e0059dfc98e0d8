"""``watch``: the loop with an injected clock (no waiting), then the command as a
real process against moto_server and OpenBao (``bao server -dev``).

Doubles: :class:`StepClock` (time moves only when the loop sleeps), the
in-memory provider of ``support.py``, and :class:`FakeProcess` (a ``Popen``
whose end the test decides) for ``--exec``. The process tests use real
servers, real signals and a real shell.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from servers import Server, bao_ready, closed_port, find_binary, start_bao, start_server
from support import STORE, MemoryProvider, memory
from test_cli import EXE, run

from jinja_apsecrets import Resolver
from jinja_apsecrets.cli._rendering import Request
from jinja_apsecrets.cli._scheduling import ExecRunner, RealClock, Schedule
from jinja_apsecrets.cli.watch import RoundResult, Watcher, default_period

PW = "<<mem|ap_sep_v1|prod/db:password>>"


class StepClock:
    """Monotonic time that moves only when the loop sleeps; ``at(t, action)``
    runs ``action`` once the clock reaches ``t``."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.events: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        due = [e for e in self.events if e[0] <= self.t]
        self.events = [e for e in self.events if e[0] > self.t]
        for _, action in due:
            action()

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.events.append((t, action))


class FakeProcess:
    """A ``Popen`` stand-in: running until the test sets ``returncode``."""

    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = 0
        return self.returncode


@pytest.fixture
def mem() -> Iterator[MemoryProvider]:
    STORE.clear()
    STORE["prod/db"] = {"password": "pw-Secret-1"}
    yield memory("mem")
    STORE.clear()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def resolver(mem: MemoryProvider, clock: StepClock) -> Iterator[Resolver]:
    r = Resolver({"mem": mem}, timer=clock.now, ttl=10)
    yield r
    r.close()


class Harness:
    def __init__(self, tmp: Path, resolver: Resolver, clock: StepClock, period: float) -> None:
        self.tmp = tmp
        self.logs: list[str] = []
        self.processes: list[FakeProcess] = []
        self.runner = ExecRunner("reload", self.logs.append, spawn=self._spawn)
        (tmp / "t.j2").write_text(f"pw={PW}\n")
        self.out = tmp / "out" / "t"
        request = Request(source=tmp / "t.j2", output=self.out)
        self.watcher = Watcher(
            request, resolver, clock, period=period, log=self.logs.append, runner=self.runner
        )
        self.times: list[float] = []  # the clock at each round
        real = self.watcher.run_round

        def timed(*, fresh: bool) -> RoundResult:
            self.times.append(clock.now())
            return real(fresh=fresh)

        self.watcher.run_round = timed  # type: ignore[method-assign]

    def _spawn(self, command: str) -> subprocess.Popen[bytes]:
        self.processes.append(FakeProcess())
        return self.processes[-1]  # type: ignore[return-value]

    def rounds(self) -> list[str]:
        return [line for line in self.logs if line.startswith("round ")]


@pytest.fixture
def harness(tmp_path: Path, resolver: Resolver, clock: StepClock) -> Harness:
    return Harness(tmp_path, resolver, clock, period=10)


def stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


class TestRounds:
    def test_a_rotation_is_written_at_the_next_timed_round(
        self, harness: Harness, clock: StepClock, mem: MemoryProvider
    ) -> None:
        clock.at(5, lambda: STORE.update({"prod/db": {"password": "pw-Rotated-2"}}))
        clock.at(25, harness.watcher.stop)
        assert harness.watcher.run() == 0
        assert harness.out.read_text() == "pw=pw-Rotated-2\n"
        assert [line.split(",")[0] for line in harness.rounds()] == [
            "round 1: 1 changed",
            "round 2: 1 changed",  # t=10: looked up again, the rotation seen
            "round 3: 0 changed",  # t=20
        ]
        assert mem.fetched == 3
        assert len(harness.processes) == 2  # --exec after rounds 1 and 2 only

    def test_an_unchanged_output_keeps_inode_and_mtime(
        self, harness: Harness, clock: StepClock
    ) -> None:
        assert harness.watcher.run_round(fresh=True).changed == 1
        before = stat_of(harness.out)
        result = harness.watcher.run_round(fresh=True)
        assert (result.changed, result.unchanged) == (0, 1)
        assert stat_of(harness.out) == before

    def test_files_are_polled_and_a_change_renders_from_the_cache(
        self, harness: Harness, clock: StepClock, mem: MemoryProvider
    ) -> None:
        clock.at(3, lambda: (harness.tmp / "t.j2").write_text(f"password: {PW}\n"))
        clock.at(6, harness.watcher.stop)
        harness.watcher.run()
        assert harness.out.read_text() == "password: pw-Secret-1\n"
        assert len(harness.rounds()) == 2
        assert mem.fetched == 1  # the file round used the cache
        assert set(clock.sleeps) == {1.0}  # files are polled once a second

    def test_an_include_is_watched(self, harness: Harness, clock: StepClock) -> None:
        (harness.tmp / "part.j2").write_text("a\n")
        (harness.tmp / "t.j2").write_text("{% include 'part.j2' %}")
        clock.at(2, lambda: (harness.tmp / "part.j2").write_text("bb\n"))
        clock.at(4, harness.watcher.stop)
        harness.watcher.run()
        assert harness.out.read_text() == "bb\n"

    def test_interval_shorter_than_the_ttl_looks_up_again(
        self, tmp_path: Path, resolver: Resolver, clock: StepClock, mem: MemoryProvider
    ) -> None:
        h = Harness(tmp_path, resolver, clock, period=0.5)
        clock.at(2.2, h.watcher.stop)
        h.watcher.run()
        assert mem.fetched == 5  # t = 0, 0.5, 1, 1.5, 2: the TTL of 10 s does not matter
        assert set(clock.sleeps) == {0.5}


class TestFailures:
    def test_a_backend_failure_keeps_the_output_and_backs_off(
        self, harness: Harness, clock: StepClock, mem: MemoryProvider
    ) -> None:
        harness.watcher.run_round(fresh=True)
        before = (harness.out.read_bytes(), stat_of(harness.out))
        mem.options = {**mem.options, "fail": True}
        clock.at(26, harness.watcher.stop)
        assert harness.watcher.run() == 0
        failed = [line for line in harness.logs if "failed" in line]
        # retries after 1, 2, 4, 8 s, then capped at the period (10 s)
        assert [line.rsplit("retry in ", 1)[1] for line in failed] == [
            "1 s", "2 s", "4 s", "8 s", "10 s", "10 s",
        ]  # fmt: skip
        assert harness.times == [0, 0, 1, 3, 7, 15, 25]
        error = "error: SECRET_MANAGER_CONNECTION_FAILED: No token received [mem|prod/db:password]"
        assert any(line.startswith(error) for line in harness.logs)
        assert (harness.out.read_bytes(), stat_of(harness.out)) == before
        assert len(harness.processes) == 1  # not run for the failed rounds
        assert not any("pw-Secret-1" in line for line in harness.logs)

    def test_recovery_resets_the_backoff(
        self, harness: Harness, clock: StepClock, mem: MemoryProvider
    ) -> None:
        mem.options = {**mem.options, "fail": True}
        clock.at(2.5, lambda: mem.options.update(fail=False))
        clock.at(12, harness.watcher.stop)
        harness.watcher.run()
        assert harness.out.read_text() == "pw=pw-Secret-1\n"
        assert harness.watcher.schedule.failures == 0
        # failed at 0 and 1, good at 3, next timed round at 13
        assert [round(t, 1) for t in harness.times] == [0, 1, 3]

    def test_a_template_error_keeps_the_output(self, harness: Harness, clock: StepClock) -> None:
        harness.watcher.run_round(fresh=True)
        (harness.tmp / "t.j2").write_text("{{ nope }}")
        result = harness.watcher.run_round(fresh=False)
        assert result.code == 1
        assert harness.out.read_text() == "pw=pw-Secret-1\n"
        assert any("'nope' is undefined" in line for line in harness.logs)

    def test_a_link_at_the_output_is_a_failed_round(self, harness: Harness) -> None:
        harness.watcher.run_round(fresh=True)
        harness.out.unlink()
        (harness.tmp / "victim").write_text("mine")
        harness.out.symlink_to(harness.tmp / "victim")
        assert harness.watcher.run_round(fresh=True).code == 2
        assert (harness.tmp / "victim").read_text() == "mine"
        assert any("is a symbolic link" in line for line in harness.logs)


class TestSignalsAndConfig:
    def test_hangup_reloads_and_renders_at_once(
        self, harness: Harness, clock: StepClock, resolver: Resolver
    ) -> None:
        reloads = []
        resolver.reload = lambda: reloads.append(clock.now())  # type: ignore[method-assign]
        clock.at(3, harness.watcher.hangup)
        clock.at(5, harness.watcher.stop)
        harness.watcher.run()
        assert reloads == [3]
        assert harness.times == [0, 3]
        assert "config: reloaded" in harness.logs

    def test_a_config_that_no_longer_loads_keeps_the_old_one(
        self, harness: Harness, clock: StepClock, resolver: Resolver
    ) -> None:
        from jinja_apsecrets.errors import SecretValidationError

        def broken() -> None:
            raise SecretValidationError("apsecrets.yaml: unknown field 'regoin'")

        resolver.reload = broken  # type: ignore[method-assign]
        clock.at(1, harness.watcher.hangup)
        clock.at(2, harness.watcher.stop)
        assert harness.watcher.run() == 0
        assert "config: not reloaded; the old one stays in use" in harness.logs
        assert harness.out.read_text() == "pw=pw-Secret-1\n"

    def test_stop_ends_after_the_round_and_waits_for_exec(
        self, harness: Harness, clock: StepClock
    ) -> None:
        clock.at(1, harness.watcher.stop)
        assert harness.watcher.run() == 0
        assert harness.processes[0].returncode == 0  # waited for
        assert "exec: exit status 0" in harness.logs


class TestExecRunner:
    def test_never_two_at_once_and_requests_merge(self) -> None:
        logs: list[str] = []
        procs: list[FakeProcess] = []

        def spawn(command: str) -> subprocess.Popen[bytes]:
            procs.append(FakeProcess())
            return procs[-1]  # type: ignore[return-value]

        runner = ExecRunner("cmd", logs.append, spawn=spawn)
        runner.request()
        runner.request()
        runner.request()
        assert len(procs) == 1
        procs[0].returncode = 3
        runner.poll()
        assert len(procs) == 2  # the merged requests: one more run
        assert logs == ["exec: exit status 3"]
        procs[1].returncode = -9
        runner.poll()
        assert len(procs) == 2
        assert logs[-1] == "exec: killed by signal 9"

    def test_schedule_backoff_is_capped_at_the_period(self) -> None:
        schedule = Schedule(period=5)
        assert [schedule.delay(False) for _ in range(5)] == [1, 2, 4, 5, 5]
        assert schedule.delay(True) == 5
        assert schedule.delay(False) == 1
        assert Schedule(period=0.2).poll == 0.2

    def test_default_period_is_the_shortest_ttl(self, mem: MemoryProvider) -> None:
        r = Resolver({"mem": mem}, ttl=300)
        r.add_connection(memory("fast"), ttl=7)
        r.add_connection(memory("never"), ttl=0)
        assert default_period(r) == 7
        r.close()


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file-provider project: ``t.j2`` reads ``app:pw`` from ``s1.yaml``."""
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "s1.yaml").write_text("app: {pw: one-Secret}\n")
    (tmp_path / "s2.yaml").write_text("app: {pw: two-Secret}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: s1.yaml}\n"
    )
    (tmp_path / "t.j2").write_text("pw=<<local|ap_sep_v1|app:pw>>\n")
    return tmp_path


class TestOnce:
    def test_renders_writes_and_runs_exec(self, project: Path) -> None:
        code, _, err = run(
            "watch", "t.j2", "-o", "out/t", "--once", "--exec", "echo x >> n", cwd=project
        )
        assert code == 0, err
        assert (project / "out" / "t").read_text() == "pw=one-Secret\n"
        assert (project / "n").read_text() == "x\n"
        assert "round 1: 1 changed, 0 unchanged" in err
        assert "exec: exit status 0" in err

    def test_nothing_changed_runs_no_exec(self, project: Path) -> None:
        args = ("watch", "t.j2", "-o", "out/t", "--once", "--exec", "echo x >> n")
        run(*args, cwd=project)
        code, _, err = run(*args, cwd=project)
        assert code == 0
        assert (project / "n").read_text() == "x\n"
        assert "round 1: 0 changed, 1 unchanged" in err

    def test_a_failing_exec_is_not_fatal(self, project: Path) -> None:
        code, _, err = run("watch", "t.j2", "-o", "o", "--once", "--exec", "exit 4", cwd=project)
        assert code == 0
        assert "exec: exit status 4" in err

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (lambda p: (p / "t.j2").write_text("<<local|ap_sep_v1|app:nope>>"), 1),
            (lambda p: (p / "s1.yaml").unlink(), 3),
            (lambda p: (p / "apsecrets.yaml").write_text("connections: {x: {provider: nope}}"), 2),
        ],
        ids=["missing", "connection", "config"],
    )
    def test_exit_codes_are_renders(
        self, project: Path, change: Callable[[Path], object], expected: int
    ) -> None:
        change(project)
        code, _, err = run(
            "watch", "t.j2", "-o", "out/t", "--once", "--exec", "echo x >> n", cwd=project
        )
        assert code == expected, err
        assert not (project / "out").exists()
        assert not (project / "n").exists()
        assert "one-Secret" not in err

    def test_output_is_required(self, project: Path) -> None:
        assert run("watch", "t.j2", "--once", cwd=project)[0] == 2

    def test_set_json_reaches_the_template(self, project: Path) -> None:
        (project / "t.j2").write_text("n={{ n + 1 }} pw=<<local|ap_sep_v1|app:pw>>\n")
        code, _, err = run(
            "watch", "t.j2", "-o", "out/t", "--once", "--set-json", "n=1", cwd=project
        )
        assert code == 0, err
        assert (project / "out" / "t").read_text() == "n=2 pw=one-Secret\n"


#: Options only ``render`` has: watch always writes, and only to -o.
RENDER_ONLY = {"--dry-run"}


def help_options(command: str) -> set[str]:
    """The long options ``command --help`` lists."""
    code, out, _ = run(command, "--help")
    assert code == 0
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", out, re.MULTILINE))


def test_watch_takes_every_option_of_render() -> None:
    render, watch = help_options("render"), help_options("watch")
    assert {"--set-json", "--vars", "--mode", "--output"} <= render
    assert render - RENDER_ONLY <= watch
    assert render >= RENDER_ONLY  # the exceptions are real options of render


# -- real processes -----------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class WatchProcess:
    """``jinja-apsecrets watch ...`` as a real process, stderr to a file."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.log = cwd / "watch.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(EXE), "watch", *args],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def text(self) -> str:
        return self.log.read_text()

    def rounds(self) -> int:
        return self.text().count("round ")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def spawn_watch() -> Iterator[Callable[..., WatchProcess]]:
    started: list[WatchProcess] = []

    def spawn(cwd: Path, *args: str) -> WatchProcess:
        started.append(WatchProcess(cwd, *args))
        return started[-1]

    yield spawn
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(timeout=10)


class TestProcessSignals:
    def test_sighup_reads_the_config_again_and_sigterm_exits_0(
        self, project: Path, spawn_watch: Callable[..., WatchProcess]
    ) -> None:
        out = project / "out" / "t"
        w = spawn_watch(project, "t.j2", "-o", "out/t", "--interval", "3600")
        wait_for(lambda: read(out) == "pw=one-Secret\n", "the first round")
        (project / "apsecrets.yaml").write_text(
            "connections:\n  local: {provider: file, path: s2.yaml}\n"
        )
        w.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: read(out) == "pw=two-Secret\n", "the round after SIGHUP")
        assert "config: reloaded" in w.text()
        assert w.stop() == 0
        assert "two-Secret" not in w.text()
        assert "one-Secret" not in w.text()

    def test_sigint_exits_0(self, project: Path, spawn_watch: Callable[..., WatchProcess]) -> None:
        w = spawn_watch(project, "t.j2", "-o", "out/t", "--interval", "3600")
        wait_for(lambda: w.rounds() >= 1, "the first round")
        w.proc.send_signal(signal.SIGINT)
        assert w.proc.wait(timeout=30) == 0

    def test_a_template_edit_is_rendered(
        self, project: Path, spawn_watch: Callable[..., WatchProcess]
    ) -> None:
        out = project / "out" / "t"
        w = spawn_watch(project, "t.j2", "-o", "out/t", "--interval", "3600")
        wait_for(lambda: read(out) == "pw=one-Secret\n", "the first round")
        (project / "t.j2").write_text("password=<<local|ap_sep_v1|app:pw>>\n")
        wait_for(lambda: read(out) == "password=one-Secret\n", "the edit")
        assert w.stop() == 0


@pytest.mark.server
class TestAgainstMoto:
    @pytest.fixture
    def aws_project(self, tmp_path: Path, moto: Server, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        name = f"watch/{tmp_path.name}"
        self.client = boto3.client(
            "secretsmanager",
            region_name="us-east-1",
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.client.create_secret(Name=name, SecretString='{"pw": "aws-Secret-1"}')
        self.name = name
        (tmp_path / "apsecrets.yaml").write_text(
            "cache: {ttl: 1}\nconnections:\n"
            f"  aws: {{provider: aws, region: us-east-1, endpointUrl: '{moto.url}', "
            "accessKeyId: testing, secretAccessKey: testing, connectTimeout: 1, maxAttempts: 1}\n"
            f"  aws-down: {{provider: aws, region: us-east-1, "
            f"endpointUrl: 'http://127.0.0.1:{closed_port()}', accessKeyId: testing, "
            "secretAccessKey: testing, connectTimeout: 1, maxAttempts: 1}\n"
        )
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "app.conf.j2").write_text(f"pw=<<aws|ap_sep_v1|{name}:pw>>\n")
        (tmp_path / "src" / "static.conf.j2").write_text("static\n")
        return tmp_path

    def test_a_rotation_is_seen_within_ttl_and_interval(
        self, aws_project: Path, spawn_watch: Callable[..., WatchProcess]
    ) -> None:
        out = aws_project / "out"
        w = spawn_watch(
            aws_project, "src", "-o", "out", "--interval", "0.3", "--exec", "echo x >> count"
        )
        wait_for(lambda: read(out / "app.conf") == "pw=aws-Secret-1\n", "the first round")
        static = stat_of(out / "static.conf")
        wait_for(lambda: read(aws_project / "count") == "x\n", "the first exec")
        self.client.put_secret_value(SecretId=self.name, SecretString='{"pw": "aws-Secret-2"}')
        wait_for(lambda: read(out / "app.conf") == "pw=aws-Secret-2\n", "the rotation")
        wait_for(lambda: read(aws_project / "count") == "x\nx\n", "the second exec")
        rounds = w.rounds()
        wait_for(lambda: w.rounds() >= rounds + 2, "two more rounds")
        assert read(aws_project / "count") == "x\nx\n"  # unchanged rounds run no exec
        assert stat_of(out / "static.conf") == static
        assert w.stop() == 0
        assert "aws-Secret" not in w.text()

    @pytest.mark.parametrize(
        ("template", "expected"),
        [("pw=<<aws|ap_sep_v1|{name}:pw>>", 0), ("<<aws|ap_sep_v1|{name}:gone>>", 1),
         ("<<aws-down|ap_sep_v1|{name}:pw>>", 3)],
        ids=["ok", "missing", "connection"],
    )  # fmt: skip
    def test_once_exit_codes(self, aws_project: Path, template: str, expected: int) -> None:
        (aws_project / "src" / "app.conf.j2").write_text(template.format(name=self.name))
        done = subprocess.run(
            [str(EXE), "watch", "src", "-o", "out", "--once"],
            cwd=aws_project,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == expected, done.stderr
        assert (aws_project / "out").exists() == (expected == 0)
        assert "aws-Secret" not in done.stderr


@pytest.mark.server
class TestAgainstOpenBao:
    def test_a_backend_killed_and_restarted_never_breaks_the_file(
        self,
        tmp_path: Path,
        spawn_watch: Callable[..., WatchProcess],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        home = tmp_path / "bao-home"
        home.mkdir()
        bao = start_bao(home)
        try:
            self._run(tmp_path, bao, home, spawn_watch)
        finally:
            bao.stop()

    def _run(
        self, tmp: Path, bao: Server, home: Path, spawn_watch: Callable[..., WatchProcess]
    ) -> None:
        put(bao.url, "bao-Secret-1")
        (tmp / "apsecrets.yaml").write_text(
            "cache: {ttl: 1}\nconnections:\n"
            f"  hashicorp: {{url: '{bao.url}', token: root, timeout: 2}}\n"
        )
        (tmp / "t.j2").write_text("pw=<<hashicorp|ap_sep_v1|secret/data/app/db/pw>>\n")
        out = tmp / "out" / "t"
        w = spawn_watch(tmp, "t.j2", "-o", "out/t", "--interval", "0.3", "--exec", "echo x >> n")
        wait_for(lambda: read(out) == "pw=bao-Secret-1\n", "the first round")
        wait_for(lambda: read(tmp / "n") == "x\n", "the first exec")
        good = out.read_bytes()

        bao.stop()
        seen: list[bytes] = []

        def failed_twice() -> bool:
            seen.append(out.read_bytes())  # never missing, never partial
            return w.text().count("outputs kept; retry in") >= 2

        wait_for(failed_twice, "two failed rounds")
        assert set(seen) == {good}
        assert "SECRET_MANAGER_CONNECTION_FAILED" in w.text()
        assert "[hashicorp|secret/data/app/db/pw]" in w.text()
        assert read(tmp / "n") == "x\n"  # no exec for failed rounds

        # the same port again; a dev server starts empty, so the secret is written anew
        argv = [find_binary("bao"), "server", "-dev", "-dev-root-token-id=root",
                f"-dev-listen-address=127.0.0.1:{bao.port}"]  # fmt: skip
        again = start_server(
            argv, port=bao.port, ready=bao_ready, log=home / "bao2.log", env={"HOME": str(home)}
        )
        bao.process = again.process
        put(bao.url, "bao-Secret-2")
        wait_for(lambda: read(out) == "pw=bao-Secret-2\n", "the round after the restart")
        wait_for(lambda: read(tmp / "n") == "x\nx\n", "the exec after the restart")
        assert w.stop() == 0
        assert "bao-Secret" not in w.text()


def put(url: str, value: str) -> None:
    """Write ``secret/app/db`` (KV v2) with ``pw=value`` through Vault's HTTP API."""
    import json
    import urllib.request

    request = urllib.request.Request(
        url + "/v1/secret/data/app/db",
        data=json.dumps({"data": {"pw": value}}).encode(),
        headers={"X-Vault-Token": "root", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status < 300


class TestWatchedFiles:
    def test_a_vars_file_change_renders(
        self, tmp_path: Path, resolver: Resolver, clock: StepClock
    ) -> None:
        (tmp_path / "t.j2").write_text("{{ greeting }} " + PW)
        (tmp_path / "v.yaml").write_text("greeting: hi\n")
        request = Request(source=tmp_path / "t.j2", output=tmp_path / "o", vars_files=("v.yaml",))
        logs: list[str] = []
        watcher = Watcher(request, resolver, clock, period=10, log=logs.append)
        clock.at(2, lambda: (tmp_path / "v.yaml").write_text("greeting: hello\n"))
        clock.at(4, watcher.stop)
        old = Path.cwd()
        os.chdir(tmp_path)
        try:
            watcher.run()
        finally:
            os.chdir(old)
        assert (tmp_path / "o").read_text() == "hello pw-Secret-1"
        assert [line.split(":")[0] for line in logs] == ["round 1", "round 2"]

    def test_a_new_template_in_a_folder_renders(
        self, tmp_path: Path, resolver: Resolver, clock: StepClock
    ) -> None:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.j2").write_text("a")
        request = Request(source=tmp_path / "src", output=tmp_path / "src" / "out")
        watcher = Watcher(request, resolver, clock, period=10, log=lambda _: None)
        clock.at(2, lambda: (tmp_path / "src" / "b.j2").write_text(PW))
        clock.at(4, watcher.stop)
        watcher.run()
        assert (tmp_path / "src" / "out" / "b").read_text() == "pw-Secret-1"
        assert watcher.rounds == 2  # the outputs inside the folder are not watched


class TestRealClock:
    def test_a_handled_signal_wakes_the_sleep(self) -> None:
        """The handler runs, and the wakeup byte waits in the pipe for ``sleep``:
        a sleep begun after the signal returns at once (it drains the pipe)."""
        clock = RealClock()
        seen: list[str] = []
        try:
            with clock.signals({signal.SIGHUP: lambda: seen.append("hup")}):
                os.kill(os.getpid(), signal.SIGHUP)
                assert seen == ["hup"]
                assert select.select([clock._read], [], [], 0)[0]  # the byte is there
                clock.sleep(60)  # returns at once: the byte is read
                assert not select.select([clock._read], [], [], 0)[0]
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # restored
        finally:
            clock.close()
