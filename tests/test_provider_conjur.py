"""Tests of the ``cyberark-conjur`` provider, against a local stand-in for Conjur's REST API.

No Conjur server can run here (it needs PostgreSQL and a Rails appliance).
:class:`FakeConjur` is a small ``http.server`` on 127.0.0.1 and a free port
that implements the endpoints the provider uses as Conjur documents them:
``POST /authn/{account}/{login}/authenticate`` (API key as the body, 200 with
a JSON token or 401), ``GET /secrets?variable_ids=...`` (comma-separated full
resource ids; 200 with a JSON object keyed by them, or 404 / 403 / 406 for
the whole batch), ``GET /secrets/{account}/variable/{id}`` (the raw value),
and ``Authorization: Token token="<base64 token>"`` (401 when unknown). Tests
assert the exact requests the provider makes.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2
import pytest
from servers import closed_port

from jinja_apsecrets import Resolver
from jinja_apsecrets.errors import SecretConnectionError, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.providers.base import Locator, SecretId
from jinja_apsecrets.providers.conjur import ConjurProvider
from jinja_apsecrets.testing import ProviderContract

ACCOUNT = "myorg"
LOGIN = "host/app/web-01"
API_KEY = "3x4mpl3-api-key-9c1d"
LOGIN_PATH = "/authn/myorg/host%2Fapp%2Fweb-01/authenticate"


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    auth: str | None
    body: bytes


class FakeConjur(ThreadingHTTPServer):
    """Conjur's authn and secrets endpoints for one account."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.variables: dict[str, bytes | None] = {
            "prod/db/password": b"pw-5e2a91",
            "prod/db/user": b"app_user",
            "team a/api+key": b"key-0b7f33",
            "prod/empty": None,  # declared in policy, no value yet
            "prod/blob": b"\xff\xfe\x00binary",
            "prod/admin/root": b"root-secret",  # exists, but the login may not execute it
        }
        self.forbidden = {"prod/admin/root"}
        self.tokens: set[bytes] = set()
        self.issued = 0
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def logins(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    @property
    def gets(self) -> list[str]:
        return [s.target for s in self.seen if s.method == "GET"]

    def issue(self) -> bytes:
        with self._lock:
            self.issued += 1
            n = self.issued
            payload = base64.urlsafe_b64encode(json.dumps({"sub": LOGIN, "n": n}).encode())
            token = json.dumps(
                {
                    "protected": "eyJhbGciOiJjb25qdXIub3JnL3Nsb3NpbG8vdjIifQ==",
                    "payload": payload.decode(),
                    "signature": f"sig-{n}",
                }
            ).encode()
            self.tokens.add(token)
            return token


class _Handler(BaseHTTPRequestHandler):
    server: FakeConjur
    protocol_version = "HTTP/1.1"  # keep-alive, as Conjur's server speaks it
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, json.dumps({"error": {"code": code, "message": message}}).encode())

    def _record(self, body: bytes = b"") -> None:
        auth = self.headers.get("Authorization")
        self.server.seen.append(Seen(self.command, self.path, auth, body))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._record(body)
        parts = self.path.split("/")
        ok = (
            len(parts) == 5
            and parts[1] == "authn"
            and parts[2] == ACCOUNT
            and unquote(parts[3]) == LOGIN
            and parts[4] == "authenticate"
            and body == API_KEY.encode()
        )
        if ok:
            self._reply(200, self.server.issue())
        else:
            self._reply(401)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not (header.startswith('Token token="') and header.endswith('"')):
            return False
        try:
            return base64.b64decode(header[13:-1], validate=True) in self.server.tokens
        except ValueError:
            return False

    def do_GET(self) -> None:
        self._record()
        if not self._authorized():
            self._reply(401)
            return
        url = urlsplit(self.path)
        if url.path == "/secrets":
            self._batch(parse_qs(url.query).get("variable_ids", [""])[0].split(","))
        elif url.path.startswith(f"/secrets/{ACCOUNT}/variable/"):
            self._one(unquote(url.path.removeprefix(f"/secrets/{ACCOUNT}/variable/")))
        else:
            self._error(404, "not_found", "no route")

    def _batch(self, full_ids: list[str]) -> None:
        if len(set(full_ids)) != len(full_ids) or "" in full_ids:
            self._error(422, "argument_error", "variable_ids")
            return
        prefix = f"{ACCOUNT}:variable:"
        ids = [f.removeprefix(prefix) for f in full_ids]
        for full, ident in zip(full_ids, ids, strict=True):
            if not full.startswith(prefix) or self.server.variables.get(ident) is None:
                self._error(404, "not_found", f"CONJ00076E Variable {full} is empty or not found.")
                return
        if any(ident in self.server.forbidden for ident in ids):
            self._error(403, "forbidden", "Forbidden")
            return
        try:
            values = {
                f: (self.server.variables[f.removeprefix(prefix)] or b"").decode() for f in full_ids
            }
        except UnicodeDecodeError:
            self._error(406, "not_acceptable", "Issue encoding secret into JSON format")
            return
        self._reply(200, json.dumps(values).encode())

    def _one(self, ident: str) -> None:
        value = self.server.variables.get(ident)
        if value is None:
            self._error(
                404,
                "not_found",
                f"CONJ00076E Variable {ACCOUNT}:variable:{ident} is empty or not found.",
            )
        elif ident in self.server.forbidden:
            self._error(403, "forbidden", "Forbidden")
        else:
            self._reply(200, value, "application/octet-stream")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakeConjur]:
    srv = FakeConjur()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(server: FakeConjur, clock: Clock | None = None, **options: Any) -> ConjurProvider:
    config = {
        "url": server.url,
        "organizationAccountName": ACCOUNT,
        "loginId": LOGIN,
        "apiKey": API_KEY,
        **options,
    }
    return ConjurProvider("cyberark-conjur", config, clock=clock or Clock())


@pytest.fixture
def provider(server: FakeConjur, clock: Clock) -> Iterator[ConjurProvider]:
    p = make(server, clock)
    yield p
    p.close()


def ids(*names: str) -> list[SecretId]:
    return [SecretId(n) for n in names]


def bearer(token: bytes) -> str:
    return f'Token token="{base64.b64encode(token).decode()}"'


class TestPaths:
    def test_variable_id_and_full_resource_id_name_one_secret(
        self, provider: ConjurProvider
    ) -> None:
        expected = Locator(SecretId("prod/db/password"))
        assert provider.parse_path("prod/db/password") == expected
        assert provider.parse_path("myorg:variable:prod/db/password") == expected

    @pytest.mark.parametrize("path", ["", " prod/x", "/prod/x", "prod/x/", "prod//x", "prod\tx"])
    def test_malformed_ids_fail_offline(
        self, provider: ConjurProvider, server: FakeConjur, path: str
    ) -> None:
        with pytest.raises(SecretValidationError, match="Should be a Conjur variable id"):
            provider.parse_path(path)
        assert server.seen == []

    def test_bad_url_is_a_config_error(self, server: FakeConjur) -> None:
        with pytest.raises(SecretValidationError, match="url"):
            make(server, url="conjur.example.com")


class TestLogin:
    def test_login_request_and_token_header(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        provider.fetch(ids("prod/db/password"))
        login, get = server.seen
        assert (login.method, login.target, login.body) == ("POST", LOGIN_PATH, API_KEY.encode())
        assert get.auth == bearer(next(iter(server.tokens)))

    def test_one_login_per_token_lifetime(
        self, provider: ConjurProvider, server: FakeConjur, clock: Clock
    ) -> None:
        for _ in range(3):
            provider.fetch(ids("prod/db/password", "prod/db/user"))
        clock.now += 5 * 60
        provider.fetch(ids("prod/db/password"))
        assert len(server.logins) == 1
        clock.now += 61  # 6 of the token's 8 minutes gone: refresh before it ends
        provider.fetch(ids("prod/db/password"))
        assert len(server.logins) == 2
        assert len({s.auth for s in server.seen if s.method == "GET"}) == 2

    def test_concurrent_first_use_logs_in_once(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: provider.fetch(ids("prod/db/user")), range(16)))
        assert len(server.logins) == 1

    def test_rejected_api_key_is_a_connection_error(self, server: FakeConjur) -> None:
        with pytest.raises(SecretConnectionError, match="401") as info:
            make(server, apiKey="wrong-key-123").fetch(ids("prod/db/password"))
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert "wrong-key-123" not in str(info.value) + repr(info.value)
        assert server.gets == []

    def test_token_refused_later_logs_in_again_once(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        provider.fetch(ids("prod/db/user"))
        server.tokens.clear()  # e.g. the server restarted
        assert provider.fetch(ids("prod/db/user")) == {SecretId("prod/db/user"): "app_user"}
        assert len(server.logins) == 2

    def test_api_key_falls_back_to_the_environment(
        self, server: FakeConjur, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CONJUR_AUTHN_API_KEY", API_KEY)
        provider = make(server, apiKey=None)
        assert provider.fetch(ids("prod/db/user")) == {SecretId("prod/db/user"): "app_user"}

    def test_missing_api_key_fails_without_a_request(
        self, server: FakeConjur, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("CONJUR_AUTHN_API_KEY", raising=False)
        with pytest.raises(SecretConnectionError, match="API key"):
            make(server, apiKey=None).fetch(ids("prod/db/user"))
        assert server.seen == []

    def test_check_logs_in_live(self, provider: ConjurProvider, server: FakeConjur) -> None:
        provider.check()
        provider.check()
        assert len(server.logins) == 2


class TestBatch:
    def test_one_request_with_encoded_ids(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/password", "prod/db/user", "team a/api+key"))
        assert server.gets == [
            "/secrets?variable_ids=myorg:variable:prod%2Fdb%2Fpassword,"
            "myorg:variable:prod%2Fdb%2Fuser,myorg:variable:team%20a%2Fapi%2Bkey"
        ]
        assert list(result.values()) == ["pw-5e2a91", "app_user", "key-0b7f33"]

    def test_missing_variable_is_attributed_one_by_one(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/nope", "prod/empty"))
        assert server.gets[1:] == [
            "/secrets/myorg/variable/prod%2Fdb%2Fuser",
            "/secrets/myorg/variable/prod%2Fnope",
            "/secrets/myorg/variable/prod%2Fempty",
        ]
        assert result[SecretId("prod/db/user")] == "app_user"
        for name in ("prod/nope", "prod/empty"):
            error = result[SecretId(name)]
            assert isinstance(error, SecretNotFoundError)
            assert name in error.message

    def test_forbidden_variable_is_its_own_error(self, provider: ConjurProvider) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/admin/root"))
        assert result[SecretId("prod/db/user")] == "app_user"
        error = result[SecretId("prod/admin/root")]
        assert isinstance(error, SecretNotFoundError)
        assert "denied" in error.message
        assert "root-secret" not in repr(error)

    def test_binary_value_is_reported_not_garbled(self, provider: ConjurProvider) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/blob"))
        assert result[SecretId("prod/db/user")] == "app_user"
        assert isinstance(result[SecretId("prod/blob")], SecretNotFoundError)

    def test_long_batches_split_by_url_length(self, provider: ConjurProvider) -> None:
        provider.max_url_length = 200
        many = ids(*(f"apps/service-{i:03d}/token" for i in range(40)))
        batches = provider.plan(many)
        assert len(batches) > 1
        assert [sid for batch in batches for sid in batch] == many
        assert all(len(",".join(provider._query_id(s) for s in b)) < 200 for b in batches)

    def test_id_with_a_comma_is_fetched_alone(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        server.variables["a,b"] = b"comma-value"
        assert provider.plan(ids("prod/db/user", "a,b", "prod/db/password")) == [
            ids("a,b"),
            ids("prod/db/user", "prod/db/password"),
        ]
        assert provider.fetch(ids("a,b")) == {SecretId("a,b"): "comma-value"}
        assert server.gets == ["/secrets/myorg/variable/a%2Cb"]


class TestTransport:
    def test_unreachable_server_is_a_connection_error(self) -> None:
        provider = ConjurProvider(
            "c",
            {
                "url": f"http://127.0.0.1:{closed_port()}",
                "organizationAccountName": ACCOUNT,
                "loginId": LOGIN,
                "apiKey": API_KEY,
            },
        )
        with pytest.raises(SecretConnectionError, match="Cannot reach Conjur"):
            provider.check()

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ({}, True),
            ({"caCert": "/etc/ssl/conjur.pem"}, "/etc/ssl/conjur.pem"),
            ({"verify": False}, False),
        ],
    )
    def test_certificates_verified_by_default(
        self, server: FakeConjur, options: dict[str, Any], expected: object
    ) -> None:
        provider = make(server, **options)
        session = provider._http()
        seen: list[Any] = []
        real = session.request

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs["verify"])
            return real(*args, **kwargs)

        session.request = spy  # type: ignore[method-assign]
        provider.check()
        assert seen == [expected]

    def test_close_then_reuse(self, provider: ConjurProvider, server: FakeConjur) -> None:
        provider.fetch(ids("prod/db/user"))
        provider.close()
        assert provider.fetch(ids("prod/db/user")) == {SecretId("prod/db/user"): "app_user"}
        assert len(server.logins) == 2


class TestThroughTheResolver:
    def test_a_render_costs_one_login_and_one_batch(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        env.install_secret_resolver(Resolver({"cyberark-conjur": provider}))  # type: ignore[attr-defined]
        source = ":".join(
            f"<<cyberark-conjur|ap_sep_v1|{p}>>" for p in ("prod/db/user", "prod/db/password")
        )
        assert env.from_string(source).render() == "app_user:pw-5e2a91"
        assert len(server.logins) == 1
        assert len(server.gets) == 1
        assert server.gets[0].startswith("/secrets?variable_ids=")

    def test_resolve_costs_one_batch(self, provider: ConjurProvider, server: FakeConjur) -> None:
        data = {
            "a": [
                "<<cyberark-conjur|ap_sep_v1|prod/db/user>>",
                "<<cyberark-conjur|ap_sep_v1|team a/api+key>>",
            ]
        }
        assert Resolver({"cyberark-conjur": provider}).resolve(data) == {
            "a": ["app_user", "key-0b7f33"]
        }
        assert len(server.gets) == 1


class TestConjurContract(ProviderContract):
    @pytest.fixture
    def known(self) -> Mapping[str, str]:
        return {
            "prod/db/password": "pw-5e2a91",
            "prod/db/user": "app_user",
            "team a/api+key": "key-0b7f33",
        }

    @pytest.fixture
    def missing(self) -> Sequence[str]:
        return ["prod/nope", "prod/empty"]

    @pytest.fixture
    def invalid(self) -> Sequence[str]:
        return ["", "/prod/db/password", "prod//db"]
