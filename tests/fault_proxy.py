"""A fault-injecting HTTP reverse proxy, for tests of how providers report outages.

:class:`FaultProxy` listens on 127.0.0.1 and a free port and forwards every
request to one upstream server (a ``moto_server``, a ``bao server -dev``, the
local Conjur double), unless a fault is armed. A fault answers the matching
requests the way a failing backend or the network in between does:

``500`` / ``503``
    the status with a short body, as a failing server or load balancer sends;
``429``
    Too Many Requests; for AWS's JSON protocol the body names
    ``ThrottlingException``, as AWS does over its rate limits;
``truncated``
    the upstream's real status and headers (``Content-Length`` included), then
    half of its body, then the connection closes: a response cut off mid-way;
``garbled``
    ``200 OK`` with a body that is no JSON at all (a captive portal, a
    misrouted endpoint);
``reset``
    the request is read, then the connection is reset (``SO_LINGER`` 0, so
    the client sees ``ECONNRESET``, not an orderly close).

Faults are armed on demand (:meth:`FaultProxy.arm`), optionally only for
requests whose target contains some text or whose headers say so, and the
proxy counts what it forwarded and what it broke, so tests can assert that a
fault was really met. Requests are read and forwarded with the standard
library only; the proxy speaks HTTP/1.1 with one request per connection
(``Connection: close``), which every client here handles.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FAULTS", "FaultProxy"]

#: Every fault the proxy can inject.
FAULTS = ("500", "503", "429", "truncated", "garbled", "reset")

#: Decides whether a request meets the armed fault: (method, target, headers).
Matcher = Callable[[str, str, Mapping[str, str]], bool]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
)


class FaultProxy(ThreadingHTTPServer):
    """Forwards to ``upstream`` (``http://host:port``); breaks what it is told to."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._fault: str | None = None
        self._match: Matcher | None = None
        self.forwarded = 0
        self.broken: list[str] = []  # the fault applied to each broken request, in order
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    # -- control -----------------------------------------------------------------

    def arm(self, fault: str | None, match: Matcher | None = None) -> None:
        """Break every later request ``match`` accepts (all if ``None``) with
        ``fault``; ``None`` disarms."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._fault, self._match = fault, match

    @contextmanager
    def armed(self, fault: str, match: Matcher | None = None) -> Iterator[FaultProxy]:
        self.arm(fault, match)
        try:
            yield self
        finally:
            self.arm(None)

    def fault_for(self, method: str, target: str, headers: Mapping[str, str]) -> str | None:
        with self._lock:
            fault, match = self._fault, self._match
        if fault is None or (match is not None and not match(method, target, headers)):
            return None
        with self._lock:
            self.broken.append(fault)
        return fault

    # -- life --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        """Start; stop on leaving."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read the counters, not a log

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = dict(self.headers.items())
        fault = self.server.fault_for(self.command, self.path, headers)
        if fault == "reset":
            self._reset()
        elif fault in ("500", "503", "429"):
            self._status(int(fault), headers)
        elif fault == "garbled":
            self._reply(200, b"<html>this is not the service you asked for", "text/html")
        else:
            status, reason, answer_headers, answer = self._forward(body, headers)
            if fault == "truncated":
                self._truncated(status, reason, answer_headers, answer)
            else:
                self._send(status, reason, answer_headers, answer)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_LIST = _handle

    def _forward(
        self, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=30
        )
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            sent["Connection"] = "close"
            conn.request(self.command, self.path, body=body or None, headers=sent)
            resp = conn.getresponse()
            answer = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            with self.server._lock:
                self.server.forwarded += 1
            return resp.status, resp.reason, kept, answer
        finally:
            conn.close()

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status, reason)
        for key, value in headers:
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self._send(status, http.client.responses.get(status, ""), [("Content-Type", kind)], body)

    def _status(self, status: int, headers: Mapping[str, str]) -> None:
        """An error status, with the body the backend at hand would send."""
        if any(k.lower() == "x-amz-target" for k in headers):
            # AWS's JSON protocol: the error type is in ``__type``.
            kinds = {500: "InternalServiceError", 503: "ServiceUnavailable"}
            kind = kinds.get(status, "ThrottlingException")
            body = json.dumps({"__type": kind, "message": "fault injected"}).encode()
            self._reply(status, body, "application/x-amz-json-1.1")
        elif self.path.startswith("/v1/"):
            # Vault's shape: {"errors": [...]}.
            self._reply(status, b'{"errors":["fault injected"]}', "application/json")
        else:
            self._reply(status, b"fault injected", "text/plain")

    def _truncated(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Headers promising the whole body, half of it, then a closed connection."""
        self.send_response_only(status, reason)
        for key, value in headers:
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(max(len(body), 2)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self) -> None:
        # Linger on, timeout 0: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
