"""A local stand-in for Conjur's REST API, for the example only. NOT Conjur.

Conjur itself needs PostgreSQL and its Rails appliance, so this example runs
against a small ``http.server`` on 127.0.0.1 that answers the three endpoints
the provider uses, as Conjur documents them:

- ``POST /authn/{account}/{login}/authenticate``: body is the API key; 200
  with a JSON access token, or 401;
- ``GET /secrets?variable_ids=<account>:variable:<id>,...``: 200 with a JSON
  object keyed by full resource id, or 404 naming the first missing variable;
  with ``Accept-Encoding: base64`` (which the provider sends, so that values
  that are not ASCII survive Conjur's JSON) the values are base64-encoded and
  the answer says ``Content-Encoding: base64``;
- ``GET /secrets/{account}/variable/{id}``: the raw value, or 404;

both GETs require ``Authorization: Token token="<base64 token>"`` (401
otherwise). It logs the requests it served.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


class FakeConjur(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, account: str, login: str, api_key: str, variables: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.account, self.login, self.api_key = account, login, api_key
        self.variables = variables
        self.tokens: set[bytes] = set()
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeConjur
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.log.append(f"{self.command} {self.path} -> {code}")

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(
        self, status: int, body: bytes = b"", kind: str = "application/json", base64: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if base64:
            self.send_header("Content-Encoding", "base64")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv = self.server
        expected = f"/authn/{srv.account}/{srv.login}/authenticate"
        if unquote(self.path) != expected or body != srv.api_key.encode():
            self._reply(401)
            return
        token = json.dumps({"protected": "e30=", "payload": secrets.token_urlsafe(24),
                            "signature": secrets.token_urlsafe(16)}).encode()  # fmt: skip
        srv.tokens.add(token)
        self._reply(200, token)

    def do_GET(self) -> None:
        srv = self.server
        header = self.headers.get("Authorization", "")
        token = header.removeprefix('Token token="').removesuffix('"')
        if base64.b64decode(token or "e30=") not in srv.tokens:
            self._reply(401)
            return
        url = urlsplit(self.path)
        prefix = f"{srv.account}:variable:"
        if url.path == "/secrets":
            full_ids = parse_qs(url.query)["variable_ids"][0].split(",")
            ids = [f.removeprefix(prefix) for f in full_ids]
            missing = [f for f, i in zip(full_ids, ids, strict=True) if i not in srv.variables]
            if missing:
                message = f"CONJ00076E Variable {missing[0]} is empty or not found."
                error = {"error": {"code": "not_found", "message": message}}
                self._reply(404, json.dumps(error).encode())
                return
            encode = self.headers.get("Accept-Encoding", "").lower() == "base64"
            body = {
                f: base64.encodebytes(srv.variables[i].encode()).decode()
                if encode
                else srv.variables[i]
                for f, i in zip(full_ids, ids, strict=True)
            }
            self._reply(200, json.dumps(body).encode(), base64=encode)
            return
        ident = unquote(url.path.removeprefix(f"/secrets/{srv.account}/variable/"))
        if ident in srv.variables:
            self._reply(200, srv.variables[ident].encode(), "application/octet-stream")
        else:
            self._reply(404, b'{"error":{"code":"not_found","message":"CONJ00076E"}}')


@contextmanager
def running(server: FakeConjur) -> Iterator[FakeConjur]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
