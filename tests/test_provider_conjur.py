"""Tests of the ``cyberark-conjur`` provider, against a local double of Conjur's REST API.

No Conjur server can run here (it needs PostgreSQL and a Rails appliance).
:class:`FakeConjur` is a small ``http.server`` on 127.0.0.1 and a free port, a
*test double*: it implements the endpoints the provider uses, following
Conjur's own source (cyberark/conjur at 8031a2a, Nov 2025) and its OpenAPI
spec (cyberark/conjur-openapi-spec, ``spec/secrets.yml``):

* ``POST /authn/{account}/{login}/authenticate``: the API key as the body;
  200 with a JSON token, or 401.
* ``GET /secrets?variable_ids=...``, ``SecretsController#batch``
  (app/controllers/secrets_controller.rb), in its order of checks:
  an empty list or an empty id is ``ArgumentError`` -> 422
  (``ApplicationController#argument_error``); ``Resource.where`` finds
  variables whatever the login may see, and ``authorize_many`` answers 403
  with no body (``head :forbidden``) for any it may not execute, invisible
  ones included; more than ``dynamic_secrets_per_request_max`` (10) dynamic
  variables (ids under ``data/dynamic/``) is 422; a missing variable is 404
  naming the *first* one
  (``Errors::Conjur::MissingSecretValue``, CONJ00076E), and so is a variable
  without a value; a value with a byte >= 0x80 cannot be rendered as JSON
  (the value is a binary Ruby string: ``Encoding::UndefinedConversionError``)
  -> 406 CONJ00074E (``bad_secret_encoding``), unless ``Accept-Encoding`` is
  ``base64`` (``casecmp?``: the whole header, any case), which answers
  ``Content-Encoding: base64`` and ``Base64.encode64`` values (a newline every
  60 characters). ``legacy=True`` plays servers from before that error and
  before base64: the header is ignored and such a value is a 500.
  Duplicate ids: ``Resource.where`` returns each variable once, the count
  check fails, ``find`` names nothing, and ``RecordNotFound.new(nil)`` fails
  in its own ``nil.split``; the NoMethodError handler
  (``validation_failed``) then fails on ``e.errors``: a 500. The double
  answers 500 and records the duplicate in ``protocol_errors``. (The brief
  for this work said 400; the source gives no path to a 400.)
* ``GET /secrets/{account}/variable/{id}``, ``SecretsController#show``:
  ``FindResource`` answers 404 (MissingSecretValue) for an invisible or
  missing variable or one without a value, 403 (no body) for a visible one
  the login may not execute; otherwise the raw bytes.
* ``Authorization: Token token="<base64 token>"``: 401 when unknown.

``fail_next`` queues gateway failures (502/503/504, or ``"reset"``: the
connection is closed before any answer) for the retry tests. Tests assert the
exact requests the provider makes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
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
    accept_encoding: str | None = None


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
            "prod/admin/root": b"root-secret",  # visible, but the login may not execute it
            "ops/hidden": b"hidden-secret",  # exists, but the login cannot even see it
            "prod/unicode": "pässwörd-ü".encode(),  # valid UTF-8, bytes >= 0x80
            "prod/long": ("ä" * 50).encode(),  # base64 longer than one encode64 line
        }
        self.forbidden = {"prod/admin/root"}
        self.invisible = {"ops/hidden"}
        self.legacy = False  # a server from before CONJ00074E and Accept-Encoding: base64
        self.dynamic_max = 10  # conjur_config.dynamic_secrets_per_request_max
        self.fail_next: list[int | str] = []
        self.protocol_errors: list[str] = []
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
        encoding = self.headers.get("Accept-Encoding")
        self.server.seen.append(Seen(self.command, self.path, auth, body, encoding))

    def _gateway_failure(self) -> bool:
        """Answer the next queued failure instead of Conjur, if any."""
        with self.server._lock:
            step = self.server.fail_next.pop(0) if self.server.fail_next else None
        if step is None:
            return False
        if step == "reset":
            self.close_connection = True
            self.connection.close()
        else:
            assert isinstance(step, int)
            self._reply(step, b"<html>gateway</html>", "text/html")
        return True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._record(body)
        if self._gateway_failure():
            return
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
        if self._gateway_failure():
            return
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
        srv = self.server
        if not full_ids or "" in full_ids:
            self._error(422, "argument_error", "variable_ids")
            return
        prefix = f"{ACCOUNT}:variable:"
        found = [f for f in dict.fromkeys(full_ids) if f.removeprefix(prefix) in srv.variables]
        found = [f for f in found if f.startswith(prefix)]
        # authorize_many: every variable found, visible or not, needs execute.
        if any(f.removeprefix(prefix) in srv.forbidden | srv.invisible for f in found):
            self._reply(403)
            return
        dynamic = [f for f in found if f.removeprefix(prefix).startswith("data/dynamic/")]
        if len(dynamic) > srv.dynamic_max:
            message = (
                "Number of dynamic secrets requested exceeds the maximum allowed in a "
                f"single request ({srv.dynamic_max})"
            )
            self._error(422, "unprocessable_entity", message)
            return
        if len(found) != len(full_ids):
            missing = [f for f in full_ids if f not in found]
            if not missing:  # duplicates: RecordNotFound.new(nil) fails, see the docstring
                srv.protocol_errors.append(f"duplicate variable ids: {full_ids}")
                self._reply(500)
                return
            self._error(
                404, "not_found", f"CONJ00076E Variable {missing[0]} is empty or not found."
            )
            return
        values: dict[str, bytes] = {}
        for f in found:
            value = srv.variables[f.removeprefix(prefix)]
            if value is None:
                self._error(404, "not_found", f"CONJ00076E Variable {f} is empty or not found.")
                return
            values[f] = value
        wants_base64 = self.headers.get("Accept-Encoding", "").lower() == "base64"
        if wants_base64 and not srv.legacy:
            encoded = {f: base64.encodebytes(v).decode() for f, v in values.items()}
            body = json.dumps(encoded).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "base64")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if any(not v.isascii() for v in values.values()):
            if srv.legacy:
                self._reply(500)
            else:
                self._error(
                    406,
                    "not_acceptable",
                    "CONJ00074E Issue encoding secret into JSON format, try including "
                    "'Accept-Encoding: base64' header in request.",
                )
            return
        self._reply(200, json.dumps({f: v.decode() for f, v in values.items()}).encode())

    def _one(self, ident: str) -> None:
        value = self.server.variables.get(ident)
        if value is None or ident in self.server.invisible:
            self._error(
                404,
                "not_found",
                f"CONJ00076E Variable {ACCOUNT}:variable:{ident} is empty or not found.",
            )
        elif ident in self.server.forbidden:
            self._reply(403)
        else:
            self._reply(200, value, "application/octet-stream")


def http_get(url: str, headers: Mapping[str, str]) -> tuple[int, str]:
    """A raw GET, to look at what the double answers."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


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
    provider = ConjurProvider("cyberark-conjur", config, clock=clock or Clock())
    provider.retry_backoff = 0  # retries never wait in tests
    return provider


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

    def test_missing_variables_are_named_one_404_at_a_time(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/nope", "prod/empty"))
        assert server.gets[1:] == [  # the 404 named prod/nope, then prod/empty
            "/secrets?variable_ids=myorg:variable:prod%2Fdb%2Fuser,myorg:variable:prod%2Fempty",
            "/secrets/myorg/variable/prod%2Fdb%2Fuser",
        ]
        assert result[SecretId("prod/db/user")] == "app_user"
        for name in ("prod/nope", "prod/empty"):
            error = result[SecretId(name)]
            assert isinstance(error, SecretNotFoundError)
            assert name in error.message

    def test_a_failing_batch_costs_extra_requests_once(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        for i in range(10):
            server.variables[f"apps/s{i}"] = f"value-{i}".encode()
        wanted = ids(*(f"apps/s{i}" for i in range(10)), "prod/admin/root")
        first = provider.fetch(wanted)
        assert 2 < len(server.gets) <= 2 * 4 + 1  # halving: about 2*log2(11) requests
        server.seen.clear()
        second = provider.fetch(wanted)
        assert {k: repr(v) for k, v in second.items()} == {k: repr(v) for k, v in first.items()}
        assert isinstance(second[SecretId("prod/admin/root")], SecretNotFoundError)
        assert sorted(server.gets) == [  # one batch for the ten, the culprit alone
            "/secrets/myorg/variable/prod%2Fadmin%2Froot",
            "/secrets?variable_ids=" + ",".join(f"myorg:variable:apps%2Fs{i}" for i in range(10)),
        ]

    def test_a_culprit_that_recovers_rejoins_the_batch(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        provider.fetch(ids("prod/db/user", "prod/admin/root"))
        server.forbidden.clear()  # execute granted meanwhile
        provider.fetch(ids("prod/db/user", "prod/admin/root"))  # alone once more: it works
        server.seen.clear()
        result = provider.fetch(ids("prod/db/user", "prod/admin/root"))
        assert result == {
            SecretId("prod/db/user"): "app_user",
            SecretId("prod/admin/root"): "root-secret",
        }
        assert len(server.gets) == 1

    def test_too_many_dynamic_secrets_split_the_batch(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        names = [f"data/dynamic/aws-{i:02d}" for i in range(12)]
        for name in names:
            server.variables[name] = f"cred-{name[-2:]}".encode()
        result = provider.fetch(ids(*names))
        assert [result[SecretId(n)] for n in names] == [f"cred-{i:02d}" for i in range(12)]
        assert len(server.gets) == 3  # 12 refused (422), then 6 and 6

    def test_invisible_variable_fails_the_batch_with_403_and_alone_with_404(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/user", "ops/hidden"))
        assert result[SecretId("prod/db/user")] == "app_user"
        error = result[SecretId("ops/hidden")]
        assert isinstance(error, SecretNotFoundError)
        assert "not visible" in error.message
        assert "hidden-secret" not in repr(error)

    def test_forbidden_variable_is_its_own_error(self, provider: ConjurProvider) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/admin/root"))
        assert result[SecretId("prod/db/user")] == "app_user"
        error = result[SecretId("prod/admin/root")]
        assert isinstance(error, SecretNotFoundError)
        assert "denied" in error.message
        assert "root-secret" not in repr(error)

    def test_binary_value_is_reported_not_garbled(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/blob"))
        assert result[SecretId("prod/db/user")] == "app_user"
        assert isinstance(result[SecretId("prod/blob")], SecretNotFoundError)
        assert len(server.gets) == 1  # base64 carried it in the batch

    def test_non_ascii_values_come_base64_encoded_in_one_batch(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/unicode", "prod/long", "prod/db/user"))
        assert result == {
            SecretId("prod/unicode"): "pässwörd-ü",
            SecretId("prod/long"): "ä" * 50,  # encode64 broke its base64 over lines
            SecretId("prod/db/user"): "app_user",
        }
        (batch,) = [s for s in server.seen if s.method == "GET"]
        assert batch.accept_encoding == "base64"

    def test_without_base64_the_double_refuses_like_conjur(self, server: FakeConjur) -> None:
        token = base64.b64encode(server.issue()).decode()
        target = "/secrets?variable_ids=myorg:variable:prod%2Funicode"
        headers = {"Authorization": f'Token token="{token}"', "Accept-Encoding": "identity"}
        status, body = http_get(server.url + target, headers)
        assert status == 406
        assert "CONJ00074E" in body
        server.legacy = True
        assert http_get(server.url + target, headers)[0] == 500
        dup = (
            "/secrets?variable_ids=myorg:variable:prod%2Fdb%2Fuser,myorg:variable:prod%2Fdb%2Fuser"
        )
        assert http_get(server.url + dup, headers)[0] == 500
        server.protocol_errors.clear()

    def test_legacy_server_500_falls_back_and_remembers_the_culprit(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        server.legacy = True
        wanted = ids("prod/db/user", "prod/db/password", "prod/unicode")
        expected = {
            SecretId("prod/db/user"): "app_user",
            SecretId("prod/db/password"): "pw-5e2a91",
            SecretId("prod/unicode"): "pässwörd-ü",
        }
        assert provider.fetch(wanted) == expected
        server.seen.clear()
        assert provider.fetch(wanted) == expected
        assert sorted(server.gets) == [
            "/secrets/myorg/variable/prod%2Funicode",
            "/secrets?variable_ids=myorg:variable:prod%2Fdb%2Fuser,myorg:variable:prod%2Fdb%2Fpassword",
        ]

    def test_duplicate_ids_are_never_sent(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        result = provider.fetch(ids("prod/db/user", "prod/db/user", "prod/db/password"))
        assert result == {
            SecretId("prod/db/user"): "app_user",
            SecretId("prod/db/password"): "pw-5e2a91",
        }
        assert server.protocol_errors == []

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


class TestTransientFailures:
    """Gateway failures in front of Conjur: retried, then CONNECTION_FAILED."""

    @pytest.mark.parametrize("plan", [[503, 502], ["reset"], [504, "reset"]])
    def test_batch_is_retried(
        self, provider: ConjurProvider, server: FakeConjur, plan: list[int | str]
    ) -> None:
        provider.check()  # log in first: only the batch meets the failures
        server.seen.clear()
        server.fail_next = list(plan)
        result = provider.fetch(ids("prod/db/user", "prod/db/password"))
        assert list(result.values()) == ["app_user", "pw-5e2a91"]
        assert len(server.gets) == len(plan) + 1

    def test_login_is_retried(self, provider: ConjurProvider, server: FakeConjur) -> None:
        server.fail_next = [503]
        provider.check()
        assert len(server.logins) == 2

    def test_gives_up_after_the_retries(self, server: FakeConjur) -> None:
        provider = make(server, retries=2)
        provider.check()
        server.fail_next = [503, 503, 503, 503]
        with pytest.raises(SecretConnectionError, match="503") as info:
            provider.fetch(ids("prod/db/user", "prod/db/password"))
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert len(server.gets) == 3

    def test_a_server_error_on_a_variable_is_a_connection_failure(
        self, provider: ConjurProvider, server: FakeConjur
    ) -> None:
        provider.check()
        server.fail_next = [500]  # not retried: the server answered, and failed
        with pytest.raises(SecretConnectionError) as info:
            provider.fetch(ids("prod/db/user"))
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert len(server.gets) == 1

    def test_negative_retries_is_a_config_error(self, server: FakeConjur) -> None:
        with pytest.raises(SecretValidationError, match="retries"):
            make(server, retries=-1)


class TestOffline:
    def test_validation_imports_no_http_library(self) -> None:
        code = (
            "import sys\n"
            "from jinja_apsecrets.providers.conjur import ConjurProvider\n"
            "p = ConjurProvider('c', {'url': 'https://conjur', 'organizationAccountName': 'a',"
            " 'loginId': 'host/x'})\n"
            "p.parse_path('prod/db/password')\n"
            "print(','.join(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ""

    def test_missing_requests_is_a_validation_error_with_the_install_command(
        self, server: FakeConjur, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "requests", None)  # as if not installed
        with pytest.raises(SecretValidationError) as info:
            make(server).check()
        assert info.value.hint == "pip install 'jinja-apsecrets[conjur]'"
        assert server.seen == []


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
