"""A flaky gateway for retry tests: a proxy on 127.0.0.1 in front of a real server.

:class:`FlakyGateway` stands where a load balancer or reverse proxy stands in
production. Each request takes the next step of its ``plan``: a status (502,
503, 504, 500: answered by the gateway with an empty JSON error body, as
Vault's own 5xx answers carry ``{"errors": [...]}``), ``"reset"`` (the
connection is closed before any answer: the client sees a reset), or nothing
left (the request is forwarded unchanged to ``upstream``, a real server, and its
answer is passed back). Only the failures are made up; every real answer
comes from the server behind.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = int | str


class FlakyGateway(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/")
        self.plan: list[Step] = []
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_step(self) -> Step | None:
        with self.lock:
            return self.plan.pop(0) if self.plan else None


class _Handler(BaseHTTPRequestHandler):
    server: FlakyGateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        self.server.seen.append((self.command, self.path))
        step = self.server.next_step()
        if step == "reset":
            self.close_connection = True
            self.connection.close()
            return
        if isinstance(step, int):
            payload = json.dumps({"errors": [f"gateway answered {step}"]}).encode()
            self._answer(step, payload, {"Content-Type": "application/json"})
            return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=body or None,
            headers=headers,
            method=self.command,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                status, data, reply = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, data, reply = exc.code, exc.read(), exc.headers
        kept = {k: v for k, v in reply.items() if k.lower() == "content-type"}
        self._answer(status, data, kept)

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@contextmanager
def flaky_gateway(upstream: str) -> Iterator[FlakyGateway]:
    gateway = FlakyGateway(upstream)
    thread = threading.Thread(target=gateway.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        gateway.shutdown()
        gateway.server_close()
        thread.join()
