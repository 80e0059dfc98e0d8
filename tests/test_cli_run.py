"""``run``: a real ``jinja-apsecrets run`` process starting real child processes.

Children are small Python scripts (``sys.executable -c``) that report what
they saw in their environment without printing values, or print values to show
the masking. Backends: the local ``file`` and ``env`` providers, a real
``moto_server`` and a real ``bao server -dev``. No doubles.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import boto3
import hvac
import pytest
from servers import Server, closed_port
from support import MemoryProvider

from jinja_apsecrets.cli._environ import Source, references, resolve_values
from jinja_apsecrets.resolver import OnMissing, Resolver

PW = "s3cr3t-pw-1"
TOKEN = "tok-Secret-22"
C = "<concealed by jinja-apsecrets>"
PY = sys.executable
#: How long a test waits for output it expects before failing (never a timing assertion).
GUARD = 60.0


def command(*args: str) -> list[str]:
    return [PY, "-m", "jinja_apsecrets.cli", "run", *args]


def child(code: str) -> list[str]:
    return [PY, "-c", code]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # PYTEST_CURRENT_TEST names the test, parameters included: references, which
    # run would resolve like any other variable's.
    drop = {"APSECRETS_CONFIG", "PYTEST_CURRENT_TEST"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **(extra or {})}


def run(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``run`` to completion, on pipes (so no terminal), stdin closed."""
    return subprocess.run(
        command(*args),
        cwd=cwd,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        timeout=120,
    )


def start(args: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    """``run`` in the background, on pipes, stdin closed (no terminal: a
    signal sent to it is forwarded)."""
    return subprocess.Popen(
        command(*args),
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(fd: int, marker: bytes) -> bytes:
    """Read ``fd`` until ``marker`` has arrived; everything read."""
    got = b""
    while marker not in got:
        ready, _, _ = select.select([fd], [], [], GUARD)
        assert ready, f"no {marker!r} after {GUARD} s; got {got!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"output ended before {marker!r}; got {got!r}"
        got += chunk
    return got


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text(f"app: {{pw: {PW}, token: {TOKEN}}}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n"
        "  local: {provider: file, path: secrets.yaml}\n"
        "  gone: {provider: file, path: gone.yaml}\n"
        "  env: {}\n"
    )
    return tmp_path


SHOW = (
    "import os, sys; names = sys.argv[1:]; "
    "print(' '.join(f'{n}={os.environ.get(n)!r}' for n in names))"
)


class TestEnvironment:
    def test_reference_spellings_are_resolved(self, project: Path) -> None:
        extra = {
            "A": "<<local|ap_sep_v1|app:pw>>",
            "B": "{{local|ap_sep_v1|app:pw}}",
            "C": "local|ap_sep_v1|app:pw",
            "D": "postgres://u:<<local|ap_sep_v1|app:pw>>@db/<<local|ap_sep_v1|app:token>>",
            "PLAIN": "no reference here",
            "NOT_BARE": " x local|ap_sep_v1|app:pw",
        }
        code = (
            "import os; e = os.environ; "
            f"print(e['A'] == e['B'] == e['C'] == {PW!r}, "
            f"e['D'] == 'postgres://u:{PW}@db/{TOKEN}', e['PLAIN'], e['NOT_BARE'])"
        )
        done = run(["--", *child(code)], project, extra)
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"True True no reference here  x local|ap_sep_v1|app:pw\n"

    def test_env_files_then_env_options_win(self, project: Path) -> None:
        (project / "a.env").write_text(
            "# first\nexport X='<<local|ap_sep_v1|app:pw>>'\nY=from-a\nZ=from-a\n"
        )
        (project / "b.env").write_text('Y="from b"  # later file wins\n')
        done = run(
            [
                "--env-file",
                "a.env",
                "--env-file",
                "b.env",
                "--env",
                "Z=<<local|ap_sep_v1|app:token>>",
                "--no-masking",
                "--",
                *child(SHOW),
                "X",
                "Y",
                "Z",
            ],
            project,
            {"Y": "from-environment"},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"X='{PW}' Y='from b' Z='{TOKEN}'\n".encode()

    def test_env_provider(self, project: Path) -> None:
        extra = {"REAL_TOKEN": "from-the-env-1", "T": "env|ap_sep_v1|REAL_TOKEN"}
        done = run(["--no-masking", "--", *child(SHOW), "T"], project, extra)
        assert done.stdout == b"T='from-the-env-1'\n"

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [("keep", b"A='x<<local|ap_sep_v1|app:nope>>'\n"), ("undefined", b"A='x'\n")],
    )
    def test_on_missing(self, project: Path, policy: str, expected: bytes) -> None:
        done = run(
            [
                "--on-missing",
                policy,
                "--env",
                "A=x<<local|ap_sep_v1|app:nope>>",
                "--",
                *child(SHOW),
                "A",
            ],
            project,
        )
        assert (done.returncode, done.stdout) == (0, expected)

    def test_no_reference_needs_no_config(self, tmp_path: Path) -> None:
        done = run(["--", *child("print('hi')")], tmp_path)
        assert (done.returncode, done.stdout) == (0, b"hi\n")

    def test_audit_log_names_references_never_values(self, project: Path) -> None:
        done = run(
            ["--audit-log", "audit.jsonl", "--env", "A=<<local|ap_sep_v1|app:pw>>", "--", "true"],
            project,
        )
        assert done.returncode == 0, done.stderr
        text = (project / "audit.jsonl").read_text()
        assert PW not in text
        record = json.loads(text.splitlines()[0])
        assert (record["connection"], record["path"], record["template"]) == (
            "local",
            "app:pw",
            "run",
        )


class TestMasking:
    def test_values_in_stdout_and_stderr_are_concealed(self, project: Path) -> None:
        code = (
            "import os, sys; print('pw is', os.environ['A']); "
            "print('token', os.environ['B'], file=sys.stderr)"
        )
        extra = {"A": "<<local|ap_sep_v1|app:pw>>", "B": "local|ap_sep_v1|app:token"}
        done = run(["--", *child(code)], project, extra)
        assert done.returncode == 0
        assert done.stdout == f"pw is {C}\n".encode()
        assert done.stderr == f"token {C}\n".encode()

    def test_no_masking_passes_values(self, project: Path) -> None:
        extra = {"A": "<<local|ap_sep_v1|app:pw>>"}
        done = run(
            ["--no-masking", "--", *child("import os; print(os.environ['A'])")], project, extra
        )
        assert done.stdout == f"{PW}\n".encode()

    def test_output_without_values_passes_byte_for_byte(self, project: Path) -> None:
        blob = bytes(range(256)) * 300 + b"s3cr3t-p" + b"\xff\xfe no newline at the end"
        (project / "blob").write_bytes(blob)
        code = "import sys; sys.stdout.buffer.write(open('blob', 'rb').read())"
        done = run(["--env", "A=<<local|ap_sep_v1|app:pw>>", "--", *child(code)], project)
        assert done.stdout == blob

    def test_a_value_split_across_two_reads(self, project: Path) -> None:
        """The child writes half a value, flushes and waits; only when ``run``
        has passed on the text before the value (and held back the half) does
        the test let it write the other half: two reads of the pipe for sure."""
        half = len(PW) // 2
        code = (
            "import os, sys; v = os.environ['A']; out = sys.stdout; "
            f"out.write('token=' + v[:{half}]); out.flush(); "
            f"sys.stdin.readline(); out.write(v[{half}:] + ' end\\n'); out.flush()"
        )
        with subprocess.Popen(
            command("--env", "A=<<local|ap_sep_v1|app:pw>>", "--", *child(code)),
            cwd=project,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            first = read_until(proc.stdout.fileno(), b"token=")
            assert first == b"token="  # at once; the half value is held back, not shown
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            rest = proc.stdout.read()
            assert proc.wait(GUARD) == 0
        assert first + rest == f"token={C} end\n".encode()

    def test_a_terminal_is_passed_only_without_masking(self, project: Path) -> None:
        code = "import sys; print(sys.stdout.isatty())"
        for flag, expected in (("--masking", b"False"), ("--no-masking", b"True")):
            leader, follower = pty.openpty()
            try:
                with subprocess.Popen(
                    command(flag, "--", *child(code)),
                    cwd=project,
                    env=clean_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=follower,
                    stderr=subprocess.PIPE,
                ) as proc:
                    os.close(follower)
                    assert expected in read_until(leader, expected)
                    assert proc.wait(GUARD) == 0
            finally:
                os.close(leader)


class TestExit:
    def test_the_childs_exit_code(self, project: Path) -> None:
        assert run(["--", *child("raise SystemExit(42)")], project).returncode == 42

    def test_killed_by_a_signal_is_128_plus_n(self, project: Path) -> None:
        code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        assert run(["--", *child(code)], project).returncode == 128 + signal.SIGKILL

    def test_command_not_found_is_127(self, project: Path) -> None:
        done = run(["--", "no-such-command-here"], project)
        assert done.returncode == 127
        assert b"no-such-command-here: command not found" in done.stderr

    MARK = "open('started', 'w').close()"

    @pytest.mark.parametrize(
        ("value", "code"),
        [
            ("<<local|ap_sep_v1|app:missing>>", 1),
            ("<<nope|ap_sep_v1|app:pw>>", 1),
            ("<<gone|ap_sep_v1|app:pw>>", 3),
        ],
    )
    def test_a_failure_starts_nothing(self, project: Path, value: str, code: int) -> None:
        done = run(
            [
                "--env",
                "OK=<<local|ap_sep_v1|app:pw>>",
                "--env",
                f"BAD={value}",
                "--",
                *child(self.MARK),
            ],
            project,
        )
        assert done.returncode == code, done.stderr
        assert not (project / "started").exists()
        assert b"(--env BAD)" in done.stderr
        assert PW.encode() not in done.stderr

    def test_no_config_is_2_and_starts_nothing(self, tmp_path: Path) -> None:
        done = run(["--env", "A=<<x|ap_sep_v1|y>>", "--", *child(self.MARK)], tmp_path)
        assert done.returncode == 2
        assert not (tmp_path / "started").exists()

    def test_an_env_file_error_names_the_line(self, project: Path) -> None:
        (project / "bad.env").write_text("A=1\nthis is not dotenv hunter2\n")
        done = run(["--env-file", "bad.env", "--", *child(self.MARK)], project)
        assert done.returncode == 2
        assert b"bad.env: line 2: " in done.stderr
        assert b"hunter2" not in done.stderr
        assert not (project / "started").exists()

    def test_a_reference_in_an_env_file_names_file_and_line(self, project: Path) -> None:
        (project / "app.env").write_text("A=1\nB=<<local|ap_sep_v1|app:missing>>\n")
        done = run(["--env-file", "app.env", "--", "true"], project)
        assert done.returncode == 1
        assert b"(app.env:2)" in done.stderr

    @pytest.mark.parametrize("args", [["--env", "hunter2-no-name", "--", "true"], []])
    def test_usage_errors_are_2(self, project: Path, args: list[str]) -> None:
        done = run(args, project)
        assert done.returncode == 2
        assert b"hunter2" not in done.stderr


TRAP = (
    "import signal, sys, time\n"
    "def bye(n, f): print('got', n, flush=True); sys.exit(7)\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, bye)\n"
    "print('ready', flush=True)\n"
    "while True: signal.pause()\n"
)


class TestSignals:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
    def test_forwarded_and_waited_for(self, project: Path, sig: signal.Signals) -> None:
        with start(["--", *child(TRAP)], project) as proc:
            assert proc.stdout is not None
            read_until(proc.stdout.fileno(), b"ready\n")
            proc.send_signal(sig)
            status = proc.wait(GUARD)
            assert proc.stderr is not None
            # run's own stderr says why, should it ever end otherwise (seen once, not reproduced).
            assert status == 7, proc.stderr.read()
            assert proc.stdout.read() == f"got {int(sig)}\n".encode()

    def test_a_child_killed_by_the_forwarded_signal(self, project: Path) -> None:
        code = "import signal; print('ready', flush=True); signal.pause()"
        with start(["--", *child(code)], project) as proc:
            assert proc.stdout is not None
            read_until(proc.stdout.fileno(), b"ready\n")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(GUARD) == 128 + signal.SIGTERM


# -- the environment's references, in-process ---------------------------------------------


class TestResolveValues:
    """:func:`resolve_values` with the in-memory provider of tests/support.py (a
    double that counts its fetch calls)."""

    def test_one_round_for_every_variable(self, resolver: Resolver, mem: MemoryProvider) -> None:
        values = {
            "A": "<<mem|ap_sep_v1|prod/db:password>>",
            "B": "{{mem|ap_sep_v1|prod/db:username}}",
            "C": "mem|ap_sep_v1|prod/api:token",
            "D": "x=<<mem|ap_sep_v1|prod/db:password>>;y=<<mem|ap_sep_v1|plain>>",
            "E": "nothing",
        }
        sources = {k: Source(k) for k in values}
        out = resolve_values(resolver, values, sources, audit_name="run", on_missing=None)
        assert out.values == {
            "A": "pw-Secret-1",
            "B": "admin",
            "C": "tok-Secret-2",
            "D": "x=pw-Secret-1;y=plain-Secret-3",
        }
        assert sorted(out.secrets) == sorted(
            ["pw-Secret-1", "admin", "tok-Secret-2", "plain-Secret-3"]
        )
        assert len(mem.calls) == 1  # one fetch call: one round, all secrets in it
        assert "Secret" not in repr(out)

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [("keep", "mem|ap_sep_v1|prod/db:nope"), ("undefined", "")],
    )
    def test_missing_policy_on_a_bare_reference(
        self, resolver: Resolver, policy: OnMissing, expected: str
    ) -> None:
        values = {"A": "mem|ap_sep_v1|prod/db:nope"}
        out = resolve_values(
            resolver, values, {"A": Source("A")}, audit_name="run", on_missing=policy
        )
        assert out.values == {"A": expected}

    @pytest.mark.parametrize(
        "value",
        [
            " mem|ap_sep_v1|plain",
            "mem|ap_sep_v1|plain\n",
            "say mem|ap_sep_v1|plain",
            "mem|ap_sep_v1|",
        ],
    )
    def test_bare_means_the_whole_value(self, value: str) -> None:
        assert references(value) == []


# -- real servers ------------------------------------------------------------------------


def aws(url: str) -> str:
    return (
        f"{{provider: aws, region: us-east-1, endpointUrl: '{url}', accessKeyId: testing, "
        "secretAccessKey: testing, connectTimeout: 1, maxAttempts: 1}\n"
    )


@pytest.mark.server
class TestServers:
    @pytest.fixture
    def project(self, tmp_path: Path, moto: Server, bao: Server) -> Path:
        sm = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("secretsmanager", endpoint_url=moto.url)
        name = f"run/{tmp_path.name}"
        sm.create_secret(Name=name, SecretString=json.dumps({"password": PW}))
        hvac.Client(url=bao.url, token="root").secrets.kv.v2.create_or_update_secret(
            f"run/{tmp_path.name}", {"token": TOKEN}
        )
        (tmp_path / "app.env").write_text(
            f"DB_PASSWORD=<<aws|ap_sep_v1|{name}:password>>\n"
            f"API_TOKEN='{{{{hashicorp|ap_sep_v1|secret/data/run/{tmp_path.name}/token}}}}'\n"
        )
        (tmp_path / "apsecrets.yaml").write_text(
            "connections:\n"
            f"  aws: {aws(moto.url)}"
            f"  hashicorp: {{url: '{bao.url}', token: root}}\n"
            f"  aws-down: {aws(f'http://127.0.0.1:{closed_port()}')}"
        )
        return tmp_path

    def test_secrets_from_moto_and_bao(self, project: Path) -> None:
        code = (
            "import os; e = os.environ; "
            f"print(e['DB_PASSWORD'] == {PW!r}, e['API_TOKEN'] == {TOKEN!r}); "
            "print(e['DB_PASSWORD'], e['API_TOKEN'])"
        )
        done = run(["--env-file", "app.env", "--", *child(code)], project)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"True True\n{C} {C}\n".encode()

    def test_unreachable_backend_is_3_and_starts_nothing(self, project: Path) -> None:
        done = run(
            [
                "--env-file",
                "app.env",
                "--env",
                "X=<<aws-down|ap_sep_v1|a:b>>",
                "--",
                *child(TestExit.MARK),
            ],
            project,
        )
        assert done.returncode == 3, done.stderr
        assert not (project / "started").exists()
