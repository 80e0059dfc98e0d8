"""A loopback HTTP/1.1 proxy that delays every request and counts them.

The benchmarks put one in front of each local backend (moto_server, bao) to
model a remote one: each request is held for ``delay`` seconds (default 50 ms,
a cross-region round trip) before it is forwarded. The proxy understands HTTP
framing (Content-Length and chunked bodies, keep-alive), so the delay applies
to every request, also on the kept-alive connections botocore and requests
reuse, not once per connection. Optionally ``connect_delay`` holds each new
client connection once (a TCP handshake to a remote host).

Every request is counted: in total, under ``METHOD /path``, and under any
labels a ``classify`` callback returns for it (for example one label per
secret named in a batch call), with the time it arrived.

In process (a thread runs the event loop)::

    with DelayProxy("127.0.0.1", backend_port, delay=0.05) as proxy:
        client = make_client(endpoint_url=proxy.url)
        ...
        proxy.requests, proxy.counts()

As a command (prints its address; counts on Ctrl-C)::

    python benchmarks/delay_proxy.py 127.0.0.1:8200 --delay-ms 50 [--port 8300]

It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Classifier", "DelayProxy", "ProxyProcess", "Request"]

#: Labels to count for one request: (method, target, headers, body) -> labels.
#: Header names are lower-case; the body is de-chunked.
Classifier = Callable[[str, str, Mapping[str, str], bytes], Iterable[str]]

_HEAD_LIMIT = 1 << 20
_BODY_KEPT = 1 << 16
_NO_BODY_STATUS = (204, 304)


@dataclass(frozen=True)
class Request:
    """One request that passed through: when it arrived and what it was counted as."""

    time: float  # time.monotonic() on arrival, before the delay (system-wide clock)
    method: str
    target: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes = field(default=b"", repr=False)  # de-chunked, at most _BODY_KEPT bytes
    labels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "method": self.method,
            "target": self.target,
            "headers": dict(self.headers),
            "body": self.body.decode("latin-1"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Request:
        return cls(
            float(data["time"]),
            str(data["method"]),
            str(data["target"]),
            dict(data["headers"]),
            str(data["body"]).encode("latin-1"),
        )


def _labelled(requests: Iterable[Request], classify: Classifier | None) -> list[Request]:
    out = []
    for r in requests:
        labels: list[str] = []
        if classify is not None:
            try:
                labels = list(classify(r.method, r.target, r.headers, r.body))
            except Exception as exc:  # a counting bug must not hide the request
                labels = [f"classify-error:{type(exc).__name__}"]
        out.append(dataclasses.replace(r, labels=tuple(labels)))
    return out


def _count(requests: Iterable[Request]) -> Counter[str]:
    counter: Counter[str] = Counter()
    for request in requests:
        counter[f"{request.method} {request.target.split('?', 1)[0]}"] += 1
        counter.update(request.labels)
    return counter


class _Closed(Exception):
    """The peer closed the connection between messages."""


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the headers (names lower-cased; repeats joined)."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return lines[0], headers


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            raise _Closed from None
        raise


async def _read_body(
    reader: asyncio.StreamReader, headers: Mapping[str, str], *, to_eof: bool
) -> tuple[bytes, bytes]:
    """The body as sent (raw) and de-chunked."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        data = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then an empty line
                    line = await reader.readuntil(b"\r\n")
                    raw += line
                    if line == b"\r\n":
                        return bytes(raw), bytes(data)
            chunk = await reader.readexactly(size + 2)
            raw += chunk
            data += chunk[:-2]
    length = headers.get("content-length")
    if length is not None:
        body = await reader.readexactly(int(length))
        return body, body
    if to_eof:
        body = await reader.read()
        return body, body
    return b"", b""


def _keep_alive(start_line: str, headers: Mapping[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return "HTTP/1.0" not in start_line or "keep-alive" in tokens


class DelayProxy:
    """Forward HTTP from ``127.0.0.1:port`` to ``host:target_port``, ``delay`` s later.

    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`).
    ``classify`` adds labels to count per request. Thread-safe counters.
    """

    def __init__(
        self,
        host: str,
        target_port: int,
        delay: float = 0.05,
        *,
        port: int = 0,
        name: str = "backend",
        classify: Classifier | None = None,
        connect_delay: float = 0.0,
    ) -> None:
        self.target = (host, target_port)
        self.delay = delay
        self.connect_delay = connect_delay
        self.name = name
        self.classify = classify
        self._want_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        """Listen and serve from a daemon thread; returns once listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"delay-proxy-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop listening, drop open connections, join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(
            self._serve, "127.0.0.1", self._want_port, limit=_HEAD_LIMIT
        )
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- counters --------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests received since the last :meth:`reset`."""
        with self._lock:
            return len(self._log)

    @property
    def connections(self) -> int:
        """Client connections accepted since the last :meth:`reset`."""
        with self._lock:
            return self._connections

    def log(self) -> list[Request]:
        """The requests received since the last :meth:`reset`, in order, with labels."""
        with self._lock:
            raw = list(self._log)
        return _labelled(raw, self.classify)

    def counts(self) -> Counter[str]:
        """Requests by ``METHOD /path`` and by the labels ``classify`` gave them."""
        return _count(self.log())

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._connections = 0

    def _record(self, request: Request) -> None:
        with self._lock:
            self._log.append(request)

    # -- forwarding ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            if self.connect_delay > 0:
                await asyncio.sleep(self.connect_delay)
            while True:
                try:
                    head = await _read_head(reader)
                except _Closed:
                    return
                arrived = time.monotonic()
                start_line, headers = _parse_head(head)
                method, _, rest = start_line.partition(" ")
                target = rest.rpartition(" ")[0] or rest
                raw, body = await _read_body(reader, headers, to_eof=False)
                self._record(Request(arrived, method, target, headers, body[:_BODY_KEPT]))
                await asyncio.sleep(self.delay)
                upstream, response, keep = await self._exchange(upstream, method, head + raw)
                writer.write(response)
                await writer.drain()
                if not keep or not _keep_alive(start_line, headers):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:  # stop(): end quietly
            return
        finally:
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None:
                    stream.close()

    async def _exchange(
        self,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
        method: str,
        request: bytes,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bytes, bool]:
        """Send one request upstream; the connection, the response, keep-alive."""
        for attempt in (1, 2):
            if upstream is None:
                upstream = await asyncio.open_connection(*self.target, limit=_HEAD_LIMIT)
            up_reader, up_writer = upstream
            try:
                up_writer.write(request)
                await up_writer.drain()
                out = bytearray()
                while True:
                    head = await _read_head(up_reader)
                    status_line, headers = _parse_head(head)
                    status = int(status_line.split(" ", 2)[1])
                    if 100 <= status < 200:  # interim (100 Continue): relay, read on
                        out += head
                        continue
                    break
                if method == "HEAD" or status in _NO_BODY_STATUS:
                    raw = b""
                else:
                    framed = "content-length" in headers or "chunked" in headers.get(
                        "transfer-encoding", ""
                    )
                    raw, _ = await _read_body(up_reader, headers, to_eof=not framed)
                    if not framed:
                        headers["connection"] = "close"
                out += head + raw
                keep = _keep_alive(status_line, headers)
                if not keep:
                    up_writer.close()
                    upstream = None
                return upstream, bytes(out), keep
            except (_Closed, ConnectionError):
                # The backend dropped an idle kept-alive connection: retry once, fresh.
                up_writer.close()
                upstream = None
                if attempt == 2:
                    raise ConnectionError("backend closed the connection") from None
        raise AssertionError("unreachable")


class ProxyProcess:
    """A :class:`DelayProxy` in a child process, driven over its stdin/stdout.

    Same interface as :class:`DelayProxy`. Use it when the proxy's own CPU
    time must not be charged to the process being measured (a real network
    costs the client no CPU while it waits). The child runs
    ``delay_proxy.py --control``, in its own process group; :meth:`stop` asks
    it to quit and kills it by PID if it does not. It also exits when its
    stdin closes (the parent died).
    """

    def __init__(
        self,
        host: str,
        target_port: int,
        delay: float = 0.05,
        *,
        port: int = 0,
        name: str = "backend",
        classify: Classifier | None = None,
        connect_delay: float = 0.0,
    ) -> None:
        self.target = (host, target_port)
        self.delay = delay
        self.connect_delay = connect_delay
        self.name = name
        self.classify = classify
        self._want_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> ProxyProcess:
        if self._process is not None:
            return self
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            f"{self.target[0]}:{self.target[1]}",
            "--control",
            f"--port={self._want_port}",
            f"--delay-ms={self.delay * 1000!r}",
            f"--connect-delay-ms={self.connect_delay * 1000!r}",
        ]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the parent only
        )
        try:
            self.port = int(self._call("port"))
        except BaseException:
            self.stop()
            raise
        return self

    def _call(self, command: str) -> Any:
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError(f"proxy {self.name} is not running")
        with self._lock:
            process.stdin.write(command + "\n")
            process.stdin.flush()
            line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"proxy {self.name} exited (code {process.poll()})")
        return json.loads(line)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.write("quit\n")
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def requests(self) -> int:
        return int(self._call("requests"))

    @property
    def connections(self) -> int:
        return int(self._call("connections"))

    def log(self) -> list[Request]:
        raw = [Request.from_json(item) for item in self._call("log")]
        return _labelled(raw, self.classify)

    def counts(self) -> Counter[str]:
        return _count(self.log())

    def reset(self) -> None:
        self._call("reset")

    def set_delay(self, seconds: float) -> None:
        """Hold requests ``seconds`` from now on (0: a plain forwarder)."""
        self._call(f"delay {seconds!r}")
        self.delay = seconds


def _control(proxy: DelayProxy) -> int:
    """Answer one JSON line on stdout per command line on stdin, until quit or EOF."""
    answers: dict[str, Callable[[], Any]] = {
        "port": lambda: proxy.port,
        "requests": lambda: proxy.requests,
        "connections": lambda: proxy.connections,
        "log": lambda: [r.to_json() for r in proxy.log()],
        "reset": proxy.reset,
    }
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command.startswith("delay "):
                proxy.delay = float(command.split()[1])
                sys.stdout.write(json.dumps(proxy.delay) + "\n")
                sys.stdout.flush()
                continue
            answer = answers.get(command)
            result = answer() if answer is not None else {"error": f"unknown command {command}"}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        proxy.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="backend HOST:PORT, e.g. 127.0.0.1:8200")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="delay per request")
    parser.add_argument("--connect-delay-ms", type=float, default=0.0, help="delay per connection")
    parser.add_argument(
        "--control", action="store_true", help="driven by ProxyProcess over stdin/stdout"
    )
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the proxy forwards to loopback backends only")
    proxy = DelayProxy(
        host,
        int(port),
        args.delay_ms / 1000,
        port=args.port,
        connect_delay=args.connect_delay_ms / 1000,
    ).start()
    if args.control:
        return _control(proxy)
    print(f"{proxy.url} -> http://{args.target} (+{args.delay_ms:g} ms per request)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(f"{proxy.requests} requests on {proxy.connections} connections")
        for label, count in sorted(proxy.counts().items()):
            print(f"  {count:6d}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
