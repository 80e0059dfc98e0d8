"""One failure rule for every provider, end to end, through a fault-injecting proxy.

The rule (``jinja_apsecrets.providers.base.Failure``): when the backend could
not answer (refused, reset, timed out, 5xx, throttled after the retries, an
unparseable or truncated answer, rejected credentials) the error is
``SECRET_MANAGER_CONNECTION_FAILED``; when it answered that the secret is
absent, denied, deleted or undecryptable, ``SECRET_MANAGER_GET_SECRET_FAILED``.

Each provider runs against its usual test server with a
:class:`~fault_proxy.FaultProxy` in between, which answers 500, 503, 429, a
truncated body, a non-JSON body or a reset on demand:

* ``aws`` and ``aws-ssm``: a real ``moto_server``;
* ``hashicorp``: a real ``bao server -dev``;
* ``cyberark-conjur``: the local Conjur double of ``test_provider_conjur``
  (no Conjur server can run here);
* ``onepassword``: no proxy can sit in front of the SDK's native core, which
  speaks TLS to 1Password itself. Its faults are injected one level up, in the
  ``UniffiCore`` double of ``test_provider_onepassword``, as the core reports
  them to the SDK: ``RateLimitExceeded`` for 429, a generic core error for a
  5xx or a reset, and a cut-off or non-JSON response for the others (those
  error texts are the double's; the real core's wording is not public).

Faults hit the request that reads the secret (after a first successful read
warmed logins and mount lookups) and, separately, the very first request.
The CLI runs (``render`` exits 3 and writes nothing, whatever ``--on-missing``
says) use ``aws`` and ``hashicorp``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import jinja2
import pytest
from botocore.retries.standard import ExponentialBackoff
from fault_proxy import FAULTS, FaultProxy, Matcher
from servers import Server, start_bao, start_moto
from test_cli import run
from test_provider_aws import admin_session, moto_api
from test_provider_conjur import API_KEY, FakeConjur
from test_provider_onepassword import TOKEN, FakeOnePassword

from jinja_apsecrets import Resolver
from jinja_apsecrets.errors import (
    CONNECTION_FAILED,
    GET_SECRET_FAILED,
    SecretConnectionError,
    SecretNotFoundError,
)
from jinja_apsecrets.providers.aws import AwsProvider
from jinja_apsecrets.providers.aws_ssm import ParameterStoreProvider
from jinja_apsecrets.providers.base import Failure, Provider, failure_for_status
from jinja_apsecrets.providers.conjur import ConjurProvider
from jinja_apsecrets.providers.hashicorp import VaultProvider
from jinja_apsecrets.providers.onepassword import OnePasswordProvider

pytestmark = pytest.mark.server

VALUE = "fault-Secret-7c21"  # the one value every backend holds
AWS_KEYS = {"region": "us-east-1", "accessKeyId": "testing", "secretAccessKey": "testing"}


# -- the rule, at the layer where it is decided ----------------------------------


class TestRule:
    @pytest.mark.parametrize(
        ("status", "failure"),
        [
            (401, Failure.CREDENTIALS),
            (407, Failure.CREDENTIALS),
            (403, Failure.DENIED),
            (404, Failure.ABSENT),
            (410, Failure.DELETED),
            (400, Failure.REJECTED),
            (422, Failure.REJECTED),
            (408, Failure.UNAVAILABLE),
            (429, Failure.UNAVAILABLE),
            (500, Failure.UNAVAILABLE),
            (502, Failure.UNAVAILABLE),
            (503, Failure.UNAVAILABLE),
            (200, Failure.GARBLED),
            (302, Failure.GARBLED),
        ],
    )
    def test_http_status(self, status: int, failure: Failure) -> None:
        assert failure_for_status(status) is failure

    @pytest.mark.parametrize("failure", list(Failure))
    def test_codes(self, failure: Failure) -> None:
        no_answer = {Failure.UNREACHABLE, Failure.UNAVAILABLE, Failure.GARBLED}
        no_answer.add(Failure.CREDENTIALS)
        error = AwsProvider("aws", {}).failure(failure, "m")
        expected = CONNECTION_FAILED if failure in no_answer else GET_SECRET_FAILED
        assert error.code == expected
        assert failure.backend_answered is (failure not in no_answer)
        assert isinstance(error, failure.error_class)
        if isinstance(error, SecretConnectionError):
            assert (error.provider, error.hint) == ("aws", AwsProvider.troubleshooting[0])


# -- backends behind the proxy -------------------------------------------------------


@dataclass
class Backend:
    """One provider behind a proxy: how to build it and what to read."""

    connection: str
    #: What to read: one reference, or two where one would take another
    #: code path (Conjur's single-variable endpoint answers raw bytes, so a
    #: wrong 200 body cannot be told from a value; its batch answers JSON).
    paths: tuple[str, ...]
    make: Callable[[], Provider]
    #: The requests that read the secret (not logins or mount lookups).
    reads: Matcher
    config: Mapping[str, Any]

    @property
    def refs(self) -> list[tuple[str, str]]:
        return [(self.connection, path) for path in self.paths]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore still decides what to retry and how often; only its sleep is zeroed.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    moto_api(server, "reset")
    session = admin_session()
    sm: Any = session.client("secretsmanager", endpoint_url=server.url)
    sm.create_secret(Name="app/db", SecretString=json.dumps({"password": VALUE}))
    ssm: Any = session.client("ssm", endpoint_url=server.url)
    ssm.put_parameter(Name="/app/db/password", Value=VALUE, Type="SecureString")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_bao(tmp_path_factory.mktemp("bao"))
    hvac.Client(url=server.url, token="root").secrets.kv.v2.create_or_update_secret(
        "app/db", {"password": VALUE}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def conjur() -> Iterator[FakeConjur]:
    server = FakeConjur()
    server.variables["app/db/password"] = VALUE.encode()
    server.variables["app/db/user"] = VALUE.encode()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _aws_target(operation: str) -> Matcher:
    def match(method: str, target: str, headers: Mapping[str, str]) -> bool:
        return any(
            v.endswith("." + operation) for k, v in headers.items() if k.lower() == "x-amz-target"
        )

    return match


def backend(name: str, upstream: str, proxy: FaultProxy) -> Backend:
    if name == "aws":
        config = {"provider": "aws", "endpointUrl": proxy.url, **AWS_KEYS}
        return Backend(
            "aws",
            ("app/db:password",),
            lambda: AwsProvider("aws", {k: v for k, v in config.items() if k != "provider"}),
            _aws_target("GetSecretValue"),
            config,
        )
    if name == "aws-ssm":
        config = {"provider": "aws-ssm", "endpointUrl": proxy.url, **AWS_KEYS}
        return Backend(
            "aws-ssm",
            ("/app/db/password",),
            lambda: ParameterStoreProvider(
                "aws-ssm", {k: v for k, v in config.items() if k != "provider"}
            ),
            _aws_target("GetParameters"),
            config,
        )
    if name == "hashicorp":
        config = {"provider": "hashicorp", "url": proxy.url, "token": "root"}
        return Backend(
            "hashicorp",
            ("secret/data/app/db/password",),
            lambda: VaultProvider("hashicorp", {"url": proxy.url, "token": "root"}),
            lambda method, target, headers: target.startswith("/v1/secret/data/"),
            config,
        )
    if name == "cyberark-conjur":
        options = {
            "url": proxy.url,
            "organizationAccountName": "myorg",
            "loginId": "host/app/web-01",
            "apiKey": API_KEY,
        }
        return Backend(
            "cyberark-conjur",
            ("app/db/password", "app/db/user"),
            lambda: ConjurProvider("cyberark-conjur", options),
            lambda method, target, headers: target.startswith("/secrets"),
            {"provider": "cyberark-conjur", **options},
        )
    raise AssertionError(name)


PROXIED = ("aws", "aws-ssm", "hashicorp", "cyberark-conjur")


@pytest.fixture(params=PROXIED)
def behind(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, FaultProxy]]:
    name = request.param
    if name.startswith("aws"):
        upstream = request.getfixturevalue("moto").url
    elif name == "hashicorp":
        upstream = request.getfixturevalue("bao").url
    else:
        upstream = request.getfixturevalue("conjur").url
    proxy = FaultProxy(upstream).start()
    yield backend(name, upstream, proxy), proxy
    proxy.stop()


def assert_connection_failed(error: object, proxy: FaultProxy, fault: str) -> None:
    assert isinstance(error, SecretConnectionError), error
    assert error.code == CONNECTION_FAILED
    shown = str(error) + repr(error) + json.dumps(error.to_dict()) + str(error.hint)
    assert VALUE not in shown
    assert fault in proxy.broken, "the fault was never met"


class TestThroughTheProxy:
    @pytest.mark.parametrize("fault", FAULTS)
    def test_fault_on_the_read(self, behind: tuple[Backend, FaultProxy], fault: str) -> None:
        target, proxy = behind
        refs = target.refs
        resolver = Resolver({target.connection: target.make()}, ttl=0)
        try:
            assert set(resolver.get_many(refs).values()) == {VALUE}  # logins, lookups warm
            with proxy.armed(fault, target.reads):
                errors = list(resolver.get_many(refs).values())
            for error in errors:
                assert_connection_failed(error, proxy, fault)
            assert set(resolver.get_many(refs).values()) == {VALUE}  # and it recovers
        finally:
            resolver.close()

    @pytest.mark.parametrize("fault", FAULTS)
    def test_fault_on_the_first_request(
        self, behind: tuple[Backend, FaultProxy], fault: str
    ) -> None:
        target, proxy = behind
        resolver = Resolver({target.connection: target.make()})
        try:
            with proxy.armed(fault):
                for error in resolver.get_many(target.refs).values():
                    assert_connection_failed(error, proxy, fault)
                with pytest.raises(SecretConnectionError):
                    resolver.check(target.connection)
        finally:
            resolver.close()

    def test_on_missing_never_hides_a_connection_failure(
        self, behind: tuple[Backend, FaultProxy]
    ) -> None:
        target, proxy = behind
        resolver = Resolver({target.connection: target.make()}, on_missing="undefined")
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        template = env.from_string(f"pw=<<{target.connection}|ap_sep_v1|{target.paths[0]}>>")
        try:
            with proxy.armed("503"), pytest.raises(SecretConnectionError):
                template.render()
        finally:
            resolver.close()

    def test_stale_if_error_serves_the_last_value(self, behind: tuple[Backend, FaultProxy]) -> None:
        target, proxy = behind
        now = [0.0]
        resolver = Resolver(
            {target.connection: target.make()},
            ttl=10,
            stale_if_error=60,
            timer=lambda: now[0],
        )
        try:
            assert set(resolver.get_many(target.refs).values()) == {VALUE}
            now[0] = 30.0  # expired, within the stale window
            with proxy.armed("503", target.reads):
                assert set(resolver.get_many(target.refs).values()) == {VALUE}
            assert "503" in proxy.broken
        finally:
            resolver.close()


class TestBackendAnswers:
    """The other side of the rule: an answer about the secret stays GET_SECRET_FAILED."""

    def test_absent_secret(self, behind: tuple[Backend, FaultProxy]) -> None:
        target, _ = behind
        missing = target.paths[0].replace("db", "nope", 1)
        resolver = Resolver({target.connection: target.make()})
        try:
            error = resolver.get_many([(target.connection, missing)])[(target.connection, missing)]
            assert isinstance(error, SecretNotFoundError)
            assert error.code == GET_SECRET_FAILED
        finally:
            resolver.close()


# -- 1Password: faults from its core's double ------------------------------------


class FaultyCore(FakeOnePassword):
    """The 1Password core double, failing SecretsResolveAll as the core reports
    each fault to the SDK (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.vaults = {"Production": {"Database": {"password": VALUE}}}
        self.fault: str | None = None
        self.broken: list[str] = []

    async def invoke(self, invocation: str) -> str:
        call = json.loads(invocation)["invocation"]
        fault = self.fault
        if fault is None or call["parameters"]["name"] != "SecretsResolveAll":
            return await super().invoke(invocation)
        self.broken.append(fault)
        if fault == "429":
            raise self.error("RateLimitExceeded", "rate limit exceeded")
        if fault in ("500", "503"):
            raise self.error("Other", f"http error: status code {fault}")
        if fault == "reset":
            raise self.error("Other", "error sending request: connection reset by peer")
        answer = await super().invoke(invocation)
        return answer[: len(answer) // 2] if fault == "truncated" else "<html>not json"


class TestOnePassword:
    @pytest.fixture
    def core(self, monkeypatch: pytest.MonkeyPatch) -> FaultyCore:
        import onepassword.core

        double = FaultyCore()

        def use_double(core: Any) -> None:
            core.core = double

        monkeypatch.setattr(onepassword.core.UniffiCore, "__init__", use_double)
        return double

    @pytest.mark.parametrize("fault", FAULTS)
    def test_fault(self, core: FaultyCore, fault: str) -> None:
        # No retry to wait for: 1Password's rate limits are hourly, and a core
        # failure is reported at once.
        provider = OnePasswordProvider("onepassword", {"serviceAccountToken": TOKEN})
        resolver = Resolver({"onepassword": provider}, ttl=0)
        ref = ("onepassword", "op://Production/Database/password")
        try:
            assert resolver.get(*ref) == VALUE
            core.fault = fault
            error = resolver.get_many([ref])[ref]
            assert isinstance(error, SecretConnectionError), error
            assert VALUE not in str(error) + repr(error)
            assert fault in core.broken
            core.fault = None
            assert resolver.get(*ref) == VALUE
        finally:
            resolver.close()


# -- the CLI: exit 3, nothing written, whatever --on-missing says --------------------


@pytest.mark.parametrize("name", ["aws", "hashicorp"])
@pytest.mark.parametrize(
    ("fault", "on_missing"),
    [
        ("503", "undefined"),
        ("503", "keep"),
        ("503", "error"),
        ("429", "undefined"),
        ("truncated", "keep"),
        ("reset", "undefined"),
    ],
)
def test_cli_render_exits_3_and_writes_nothing(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    fault: str,
    on_missing: str,
) -> None:
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    upstream = request.getfixturevalue("moto" if name == "aws" else "bao").url
    with FaultProxy(upstream).running() as proxy:
        target = backend(name, upstream, proxy)
        config = {"connections": {name: dict(target.config)}}
        (tmp_path / "apsecrets.yaml").write_text(json.dumps(config))
        (tmp_path / "app.conf.j2").write_text(f"password=<<{name}|ap_sep_v1|{target.paths[0]}>>\n")
        with proxy.armed(fault):
            code, out, err = run(
                "render", "app.conf.j2", "-o", "app.conf", "--on-missing", on_missing, cwd=tmp_path
            )
    assert code == 3, err
    assert CONNECTION_FAILED in err
    assert not (tmp_path / "app.conf").exists()
    assert VALUE not in out + err


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("500", "could not answer (InternalServiceError 500) after 3 attempts"),
        ("503", "could not answer (ServiceUnavailable 503) after 3 attempts"),
        ("429", "throttled the requests (ThrottlingException 429) after 3 attempts"),
        ("truncated", "bytes it announced (cut off)"),
        ("garbled", "answered with something other than JSON"),
        ("reset", "Cannot reach AWS Secrets Manager"),
    ],
)
def test_aws_says_what_happened(moto: Server, fault: str, says: str) -> None:
    with FaultProxy(moto.url).running() as proxy, proxy.armed(fault):
        target = backend("aws", moto.url, proxy)
        resolver = Resolver({"aws": target.make()})
        error = resolver.get_many(target.refs)[target.refs[0]]
        resolver.close()
    assert isinstance(error, SecretConnectionError)
    assert says in error.message
