"""The ``aws`` provider against a real ``moto_server`` on 127.0.0.1.

One server serves most tests and is reset before each. Tests of IAM (the
spec's policy, wrong credentials) get a server of their own with moto's IAM
checks switched on, which cannot be switched off again.
"""

from __future__ import annotations

import json
import logging
import pickle
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import jinja2
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.retries.standard import ExponentialBackoff
from servers import Server, closed_port, start_moto

from jinja_apsecrets.errors import SecretConnectionError, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.providers._aws_common import classify
from jinja_apsecrets.providers.aws import AwsProvider
from jinja_apsecrets.providers.base import Failure, Locator, SecretId
from jinja_apsecrets.resolver import Resolver
from jinja_apsecrets.testing import ProviderContract

pytestmark = pytest.mark.server

REGION = "us-east-1"
SPEC_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:ListSecrets"],
            "Resource": "*",
        }
    ],
}


def moto_api(server: Server, action: str, body: bytes = b"") -> None:
    # text/plain keeps the body out of form parsing, where moto would not see it.
    request = urllib.request.Request(
        f"{server.url}/moto-api/{action}", data=body, headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def admin_client(server: Server) -> Any:
    return admin_session().client("secretsmanager", endpoint_url=server.url)


def admin_session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def make(url: str, **options: Any) -> AwsProvider:
    keys = {"accessKeyId": "testing", "secretAccessKey": "testing"}
    return AwsProvider("aws", {"region": REGION, "endpointUrl": url, **keys, **options})


def count_calls(provider: AwsProvider) -> Counter[str]:
    """Secrets Manager operations the provider sends, by name (retries not counted)."""
    calls: Counter[str] = Counter()
    provider.client.meta.events.register(
        "before-call.secretsmanager", lambda model, **_: calls.update([model.name])
    )
    return calls


def render(resolver: Resolver, source: str) -> str:
    env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    return env.from_string(source).render()


@pytest.fixture
def sm(moto: Server) -> Any:
    """An admin boto3 client on a freshly reset server."""
    moto_api(moto, "reset")
    return admin_client(moto)


@pytest.fixture
def provider(moto: Server, sm: Any) -> Iterator[AwsProvider]:
    aws = make(moto.url)
    yield aws
    aws.close()


@pytest.fixture
def calls(provider: AwsProvider) -> Counter[str]:
    return count_calls(provider)


@pytest.fixture
def resolver(provider: AwsProvider) -> Resolver:
    return Resolver({"aws": provider})


def put(sm: Any, name: str, value: object) -> Any:
    """Create secret ``name``: JSON text for objects, else the string or bytes as given."""
    if isinstance(value, bytes):
        return sm.create_secret(Name=name, SecretBinary=value)
    text = value if isinstance(value, str) else json.dumps(value)
    return sm.create_secret(Name=name, SecretString=text)


class TestPaths:
    aws = AwsProvider("aws", {})

    @pytest.mark.parametrize(
        ("path", "locator"),
        [
            ("prod/api-keys:slack_token", Locator(SecretId("prod/api-keys"), "slack_token")),
            ("db:a:b", Locator(SecretId("db"), "a:b")),
            ("a+b=c.d@e_f-g:k", Locator(SecretId("a+b=c.d@e_f-g"), "k")),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf:password",
                Locator(
                    SecretId("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"),
                    "password",
                ),
            ),
            (
                "prod/db:password?versionStage=AWSPREVIOUS",
                Locator(SecretId("prod/db", "versionStage=AWSPREVIOUS"), "password"),
            ),
            ("prod/db:pw?versionId=v-1", Locator(SecretId("prod/db", "versionId=v-1"), "pw")),
            ("prod/db:what?", Locator(SecretId("prod/db"), "what?")),
        ],
    )
    def test_parses(self, path: str, locator: Locator) -> None:
        assert self.aws.parse_path(path) == locator

    @pytest.mark.parametrize(
        "path",
        [
            "prod/api-keys",
            "prod/api-keys:",
            ":slack_token",
            "prod/db?versionStage=AWSPREVIOUS",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf:",
        ],
    )
    def test_no_key_is_the_specs_validation_error(self, path: str) -> None:
        with pytest.raises(SecretValidationError) as info:
            self.aws.parse_path(path)
        assert info.value.message == "Wrong key format. Should be secretName:secretJsonKey"
        assert info.value.to_dict()["request"] == {"path": path}

    @pytest.mark.parametrize(
        "path", ["prod db:key", "prod/db!:key", "arn:aws:s3:::bucket:key", "arn:aws:x"]
    )
    def test_bad_names_fail_offline(self, path: str) -> None:
        with pytest.raises(SecretValidationError):
            self.aws.parse_path(path)

    def test_plan_batches_twenty_unversioned_ids_then_versioned_alone(self) -> None:
        ids = [SecretId(f"s{i}") for i in range(45)] + [SecretId("v", "versionStage=X")] * 2
        assert [len(batch) for batch in self.aws.plan(ids)] == [20, 20, 5, 1, 1]

    def test_plan_without_batch_get_is_one_id_per_batch(self) -> None:
        aws = AwsProvider("aws", {"batchGet": False})
        assert aws.plan([SecretId("a"), SecretId("b")]) == [[SecretId("a")], [SecretId("b")]]


class TestOptions:
    @pytest.mark.parametrize(
        "options",
        [
            {"accessKeyId": "AKIA"},
            {"secretAccessKey": "s3cr3t"},
            {"sessionToken": "tok"},
            {"profile": "dev", "accessKeyId": "AKIA", "secretAccessKey": "s3cr3t"},
            {"endpointUrl": "127.0.0.1:4566"},
            {"connectTimeout": 0},
            {"maxAttempts": 0},
            {"bucket": "x"},
        ],
    )
    def test_bad_options_fail_offline(self, options: dict[str, Any]) -> None:
        with pytest.raises(SecretValidationError):
            AwsProvider("aws", options)

    def test_construction_is_offline_and_credentials_stay_out_of_repr(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        aws = make(url, accessKeyId="AKIAEXAMPLE", secretAccessKey="wJalrXUtnFEMI")
        assert aws.parse_path("a:b") == Locator(SecretId("a"), "b")
        assert "wJalrXUtnFEMI" not in repr(aws) + repr(Resolver({"aws": aws}))

    def test_client_is_created_once_across_threads(self, moto: Server) -> None:
        aws = make(moto.url)
        with ThreadPoolExecutor(8) as pool:
            clients = list(pool.map(lambda _: aws.client, range(32)))
        assert len({id(c) for c in clients}) == 1

    def test_check_is_one_list_secrets_call(
        self, provider: AwsProvider, calls: Counter[str]
    ) -> None:
        provider.check()
        assert calls == {"ListSecrets": 1}

    def test_pickle_leaves_the_client_out(self, provider: AwsProvider, sm: Any) -> None:
        put(sm, "p", {"k": "value-1"})
        assert Resolver({"aws": provider}).get("aws", "p:k") == "value-1"
        clone = pickle.loads(pickle.dumps(provider))
        assert Resolver({"aws": clone}).get("aws", "p:k") == "value-1"


class TestValues:
    def test_json_keys_as_text(self, resolver: Resolver, sm: Any) -> None:
        doc = {"s": "xoxb-1", "n": 5432, "f": 1.5, "b": True, "z": None, "o": {"a": [1, "é"]}}
        put(sm, "prod/api-keys", doc)
        got = {k: resolver.get("aws", f"prod/api-keys:{k}") for k in doc}
        assert got == {
            "s": "xoxb-1",
            "n": "5432",
            "f": "1.5",
            "b": "true",
            "z": "null",
            "o": '{"a":[1,"é"]}',
        }

    def test_arn_references(self, resolver: Resolver, sm: Any, calls: Counter[str]) -> None:
        arn = put(sm, "prod/db", {"password": "pw-arn"})["ARN"]
        put(sm, "prod/other", {"k": "other"})
        assert resolver.get("aws", f"{arn}:password") == "pw-arn"
        batch = Resolver({"aws": resolver.connections["aws"]})
        results = batch.get_many([("aws", f"{arn}:password"), ("aws", "prod/other:k")])
        assert list(results.values()) == ["pw-arn", "other"]
        assert calls == {"GetSecretValue": 1, "BatchGetSecretValue": 1}

    def test_version_stages_and_ids(self, resolver: Resolver, sm: Any) -> None:
        first = put(sm, "rotating", {"pw": "old-pw"})["VersionId"]
        sm.put_secret_value(SecretId="rotating", SecretString=json.dumps({"pw": "new-pw"}))
        assert resolver.get("aws", "rotating:pw") == "new-pw"
        assert resolver.get("aws", "rotating:pw?versionStage=AWSCURRENT") == "new-pw"
        assert resolver.get("aws", "rotating:pw?versionStage=AWSPREVIOUS") == "old-pw"
        assert resolver.get("aws", f"rotating:pw?versionId={first}") == "old-pw"

    def test_unknown_version_stage(self, resolver: Resolver, sm: Any) -> None:
        put(sm, "rotating", {"pw": "old-pw"})
        with pytest.raises(SecretNotFoundError):
            resolver.get("aws", "rotating:pw?versionStage=NOPE")


class TestBatching:
    def test_45_secrets_cost_three_batch_calls(
        self, resolver: Resolver, sm: Any, calls: Counter[str]
    ) -> None:
        for i in range(45):
            put(sm, f"app/s{i:02d}", {"value": f"v-{i:02d}"})
        source = "\n".join(f"<<aws|ap_sep_v1|app/s{i:02d}:value>>" for i in range(45))
        assert render(resolver, source) == "\n".join(f"v-{i:02d}" for i in range(45))
        assert calls == {"BatchGetSecretValue": 3}

    def test_ten_keys_of_one_secret_cost_one_call(
        self, resolver: Resolver, sm: Any, calls: Counter[str]
    ) -> None:
        put(sm, "app/config", {f"k{i}": f"value-{i}" for i in range(10)})
        source = " ".join(f"<<aws|ap_sep_v1|app/config:k{i}>>" for i in range(10))
        assert render(resolver, source) == " ".join(f"value-{i}" for i in range(10))
        assert calls == {"GetSecretValue": 1}


BAD_SECRETS: dict[str, tuple[object, str]] = {
    # name: (stored value, what the message must say)
    "bad/binary": (b'{"token": "bin-value-1"}', "is binary"),
    "bad/text": ("plain-text-value-1", "is not a JSON object"),
    "bad/array": ('["array-value-1"]', "is not a JSON object"),
}


class TestErrors:
    @pytest.fixture
    def stored(self, sm: Any) -> list[str]:
        put(sm, "good", {"token": "good-value-1"})
        put(sm, "gone", {"token": "deleted-value-1"})
        sm.delete_secret(SecretId="gone")
        for name, (value, _) in BAD_SECRETS.items():
            put(sm, name, value)
        return ["good-value-1", "deleted-value-1", "bin-value-1", "plain-text-value-1"]

    CASES = [
        ("good:nope", "Secret value for key nope not found"),
        ("missing:token", "Secret missing not found"),
        ("gone:token", "Secret gone is marked for deletion"),
        *((f"{name}:token", says) for name, (_, says) in BAD_SECRETS.items()),
    ]

    @pytest.mark.parametrize(("path", "says"), CASES)
    def test_single_read(self, resolver: Resolver, stored: list[str], path: str, says: str) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("aws", path)
        self.assert_safe(info.value, path, says, stored)

    @pytest.mark.parametrize(("path", "says"), CASES)
    def test_per_item_errors_of_a_batch(
        self, resolver: Resolver, stored: list[str], calls: Counter[str], path: str, says: str
    ) -> None:
        refs = [("aws", path), ("aws", "good:token"), ("aws", "missing2:token")]
        results = resolver.get_many(refs)
        assert results[("aws", "good:token")] == "good-value-1"
        error = results[("aws", path)]
        assert isinstance(error, SecretNotFoundError)
        self.assert_safe(error, path, says, stored)
        assert calls["BatchGetSecretValue"] == 1

    @staticmethod
    def assert_safe(error: SecretNotFoundError, path: str, says: str, values: list[str]) -> None:
        assert says in error.message
        assert error.code == "SECRET_MANAGER_GET_SECRET_FAILED"
        assert (error.provider, error.path) == ("aws", path)
        shown = str(error) + repr(error) + json.dumps(error.to_dict())
        assert not [v for v in values if v in shown]


@pytest.fixture(scope="class")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server with IAM checks on, user ``app`` holding the spec's policy, and
    secrets ``iam/s0`` .. ``iam/s5``. Yields the server and app's keys."""
    server = start_moto(tmp_path_factory.mktemp("moto-iam") / "moto.log")
    try:
        iam = admin_session().client("iam", endpoint_url=server.url)
        sm = admin_client(server)
        iam.create_user(UserName="app")
        iam.put_user_policy(
            UserName="app", PolicyName="spec", PolicyDocument=json.dumps(SPEC_POLICY)
        )
        key = iam.create_access_key(UserName="app")["AccessKey"]
        for i in range(6):
            put(sm, f"iam/s{i}", {"v": f"iam-value-{i}"})
        moto_api(server, "reset-auth", b"0")  # every later request is authorized
        yield server, {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}
    finally:
        server.stop()


class TestSpecIamPolicy:
    """The spec's policy grants GetSecretValue and ListSecrets, not BatchGetSecretValue."""

    def test_batch_denied_falls_back_and_remembers(
        self, iam_moto: tuple[Server, dict[str, str]]
    ) -> None:
        server, keys = iam_moto
        aws = make(server.url, **keys)
        calls = count_calls(aws)
        resolver = Resolver({"aws": aws})
        first = resolver.get_many([("aws", f"iam/s{i}:v") for i in range(3)])
        assert list(first.values()) == [f"iam-value-{i}" for i in range(3)]
        assert calls == {"BatchGetSecretValue": 1, "GetSecretValue": 3}
        second = resolver.get_many([("aws", f"iam/s{i}:v") for i in range(3, 6)])
        assert list(second.values()) == [f"iam-value-{i}" for i in range(3, 6)]
        assert calls == {"BatchGetSecretValue": 1, "GetSecretValue": 6}

    def test_check_passes(self, iam_moto: tuple[Server, dict[str, str]]) -> None:
        server, keys = iam_moto
        make(server.url, **keys).check()

    @pytest.mark.parametrize(
        "keys",
        [
            {"accessKeyId": "AKIANOSUCHKEY0000000", "secretAccessKey": "wrong"},
            None,  # app's key id with a wrong secret key
        ],
    )
    def test_wrong_credentials(
        self, iam_moto: tuple[Server, dict[str, str]], keys: dict[str, str] | None
    ) -> None:
        server, app = iam_moto
        aws = make(server.url, **(keys or {**app, "secretAccessKey": "wrong"}))
        with pytest.raises(SecretConnectionError) as info:
            aws.check()
        assert info.value.hint == "Verify IAM credentials are correct"
        with pytest.raises(SecretConnectionError):
            Resolver({"aws": aws}).get("aws", "iam/s0:v")


class Throttle:
    """A ``before-send`` handler answering the first ``times`` sends with
    ThrottlingException, as AWS does over its rate limit."""

    def __init__(self, times: int) -> None:
        self.times, self.sends = times, 0

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        self.sends += 1
        if self.sends > self.times:
            return None
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        raw = SimpleNamespace(stream=lambda **_: iter([body]))
        return AWSResponse(request.url, 400, HTTPHeaders(), raw)


class TestThrottling:
    @pytest.fixture(autouse=True)
    def no_backoff(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Retry decisions stay botocore's; only its backoff delay is zeroed.
        monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)

    @pytest.mark.parametrize(("times", "sends"), [(1, 2), (5, 2)])
    def test_retried_and_bounded(self, moto: Server, sm: Any, times: int, sends: int) -> None:
        put(sm, "busy", {"k": "busy-value-1"})
        aws, throttle = make(moto.url, maxAttempts=2), Throttle(times)
        aws.client.meta.events.register("before-send.secretsmanager", throttle)
        results = Resolver({"aws": aws}).get_many([("aws", "busy:k")])
        assert throttle.sends == sends
        if times < sends:
            assert results[("aws", "busy:k")] == "busy-value-1"
        else:
            # Still throttled after botocore's retries: AWS could not answer.
            error = results[("aws", "busy:k")]
            assert isinstance(error, SecretConnectionError)
            assert error.code == "SECRET_MANAGER_CONNECTION_FAILED"
            assert error.message == (
                "AWS Secrets Manager throttled the requests (ThrottlingException 400) "
                "after 2 attempts"
            )


class TestConnectionFailures:
    def test_wrong_credentials_against_a_closed_port(self) -> None:
        aws = make(f"http://127.0.0.1:{closed_port()}", accessKeyId="AKIAX", secretAccessKey="no")
        with pytest.raises(SecretConnectionError) as info:
            aws.check()
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert "Check network connectivity" in (info.value.hint or "")
        with pytest.raises(SecretConnectionError):
            Resolver({"aws": aws}).get("aws", "prod/db:password")

    def test_no_region(self, moto: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        aws = AwsProvider(
            "aws", {"endpointUrl": moto.url, "accessKeyId": "a", "secretAccessKey": "b"}
        )
        with pytest.raises(SecretConnectionError) as info:
            aws.check()
        assert info.value.hint == "Ensure region is correct"

    def test_unknown_profile(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        with pytest.raises(SecretConnectionError, match="profile 'nope' not found"):
            AwsProvider("aws", {"profile": "nope", "region": REGION}).check()


class TestBotocoreLogging:
    """botocore logs response bodies at DEBUG (boto3 issue 2292)."""

    def test_plain_botocore_would_leak(
        self, moto: Server, sm: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        put(sm, "logged", {"token": "leaky-value-1"})
        with caplog.at_level(logging.DEBUG):
            admin_client(moto).get_secret_value(SecretId="logged")
        assert "leaky-value-1" in caplog.text

    @pytest.mark.parametrize("batch", [True, False])
    def test_fetches_are_redacted(
        self, provider: AwsProvider, sm: Any, caplog: pytest.LogCaptureFixture, batch: bool
    ) -> None:
        for i in range(3):
            put(sm, f"logged{i}", {"token": f"leaky-value-{i}"})
        aws = provider if batch else make(provider.options["endpointUrl"], batchGet=False)
        with caplog.at_level(logging.DEBUG):
            results = Resolver({"aws": aws}).get_many(
                [("aws", f"logged{i}:token") for i in range(3)]
            )
        assert sorted(map(str, results.values())) == [f"leaky-value-{i}" for i in range(3)]
        assert "leaky-value" not in caplog.text
        assert any(r.name.startswith("botocore") for r in caplog.records)

    def test_other_botocore_use_is_untouched(
        self, provider: AwsProvider, moto: Server, sm: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        put(sm, "logged", {"token": "own-value-1"})
        assert Resolver({"aws": provider}).get("aws", "logged:token") == "own-value-1"
        with caplog.at_level(logging.DEBUG):
            admin_client(moto).get_secret_value(SecretId="logged")
        assert "own-value-1" in caplog.text


class TestAwsContract(ProviderContract):
    @pytest.fixture
    def known(self, sm: Any) -> Mapping[str, str]:
        put(sm, "contract/db", {"user": "admin-user", "password": "db-password-1"})
        put(sm, "contract/api", {"token": "api-token-1"})
        return {
            "contract/db:user": "admin-user",
            "contract/db:password": "db-password-1",
            "contract/api:token": "api-token-1",
        }

    @pytest.fixture
    def missing(self, sm: Any) -> list[str]:
        return ["contract/none:token", "contract/db2:password"]

    @pytest.fixture
    def invalid(self) -> list[str]:
        return ["contract/db", "contract/db:", ":password", "bad name:key"]


def aws_answer(request: AWSPreparedRequest, status: int, body: Mapping[str, Any]) -> AWSResponse:
    """An AWS JSON-protocol response, for ``before-send`` doubles."""
    data = json.dumps(body).encode()
    raw = SimpleNamespace(stream=lambda **_: iter([data]))
    return AWSResponse(request.url, status, HTTPHeaders(), raw)


class TestFailureRule:
    """AWS's errors under the one rule of providers.base (see also test_failures)."""

    @pytest.mark.parametrize(
        ("code", "status", "failure"),
        [
            ("ResourceNotFoundException", 400, Failure.ABSENT),
            ("AccessDeniedException", 400, Failure.DENIED),
            ("DecryptionFailure", 400, Failure.UNDECRYPTABLE),
            ("InvalidRequestException", 400, Failure.REJECTED),
            ("ValidationException", 400, Failure.REJECTED),
            ("UnrecognizedClientException", 400, Failure.CREDENTIALS),
            ("InvalidSignatureException", 400, Failure.CREDENTIALS),
            ("ExpiredTokenException", 400, Failure.CREDENTIALS),
            ("ThrottlingException", 400, Failure.UNAVAILABLE),
            ("TooManyRequestsException", 429, Failure.UNAVAILABLE),
            ("InternalServiceError", 500, Failure.UNAVAILABLE),
            ("ServiceUnavailable", 503, Failure.UNAVAILABLE),
            ("SomethingNew", 502, Failure.UNAVAILABLE),
            ("503", 503, Failure.UNAVAILABLE),  # a body botocore could not read
            ("403", 403, Failure.DENIED),
        ],
    )
    def test_classify(self, code: str, status: int, failure: Failure) -> None:
        assert classify(code, status) is failure

    def test_deleted_is_told_by_the_message(self) -> None:
        message = (
            "You can't perform this operation on the secret because it was marked for deletion."
        )
        assert classify("InvalidRequestException", 400, message) is Failure.DELETED

    def test_kms_denial_says_kms_decrypt(self, provider: AwsProvider, sm: Any) -> None:
        """AWS answers GetSecretValue with AccessDeniedException "Access to KMS is
        not allowed" when the caller may not decrypt (a double: moto has no KMS checks)."""
        put(sm, "locked", {"k": "locked-value-1"})

        def denied(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
            body = {"__type": "AccessDeniedException", "Message": "Access to KMS is not allowed"}
            return aws_answer(request, 400, body)

        provider.client.meta.events.register("before-send.secretsmanager", denied)
        with pytest.raises(SecretNotFoundError) as info:
            Resolver({"aws": provider}).get("aws", "locked:k")
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"
        assert info.value.message == (
            "Access denied to the KMS key of secret locked: the IAM policy must grant "
            "kms:Decrypt on the key that encrypts it"
        )

    def test_batch_error_named_by_arn_maps_back(
        self, provider: AwsProvider, sm: Any, calls: Counter[str]
    ) -> None:
        """A BatchGetSecretValue ``Errors`` entry may name by ARN a secret asked
        for by name (a double of that answer; moto echoes the id sent)."""
        good = put(sm, "app/good", {"k": "good-value-1"})
        arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:app/locked-Ab12Cd"

        def answer(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
            entry = {
                "ARN": good["ARN"],
                "Name": "app/good",
                "SecretString": '{"k": "good-value-1"}',
            }
            error = {
                "SecretId": arn,
                "ErrorCode": "DecryptionFailure",
                "Message": "Secrets Manager can't decrypt the protected secret text",
            }
            return aws_answer(request, 200, {"SecretValues": [entry], "Errors": [error]})

        provider.client.meta.events.register("before-send.secretsmanager", answer)
        got = Resolver({"aws": provider}).get_many([("aws", "app/good:k"), ("aws", "app/locked:k")])
        assert got[("aws", "app/good:k")] == "good-value-1"
        error = got[("aws", "app/locked:k")]
        assert isinstance(error, SecretNotFoundError)
        assert (
            error.message
            == "Secret app/locked cannot be decrypted with its KMS key (DecryptionFailure)"
        )
        assert calls == {"BatchGetSecretValue": 1}

    def test_not_found_names_region_then_account(self, provider: AwsProvider, sm: Any) -> None:
        resolver = Resolver({"aws": provider})
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("aws", "nowhere:k")
        assert info.value.message == f"Secret nowhere not found in region {REGION}"
        put(sm, "somewhere", {"k": "somewhere-value-1"})
        assert (
            resolver.get("aws", "somewhere:k") == "somewhere-value-1"
        )  # its ARN names the account
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("aws", "nowhere2:k")
        assert (
            info.value.message
            == f"Secret nowhere2 not found in region {REGION} (account 123456789012)"
        )

    @pytest.mark.parametrize(
        ("status", "code"), [(500, "InternalServiceError"), (503, "ServiceUnavailable")]
    )
    def test_5xx_after_retries_is_a_connection_failure(
        self, moto: Server, sm: Any, status: int, code: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
        sends = []

        def failing(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
            sends.append(1)
            return aws_answer(request, status, {"__type": code, "message": "try later"})

        aws = make(moto.url, maxAttempts=3)
        aws.client.meta.events.register("before-send.secretsmanager", failing)
        with pytest.raises(SecretConnectionError) as info:
            Resolver({"aws": aws}).get("aws", "any:k")
        assert len(sends) == 3  # botocore retried first
        assert (
            info.value.message
            == f"AWS Secrets Manager could not answer ({code} {status}) after 3 attempts"
        )

    def test_batch_refused_as_a_whole_reads_each_alone(
        self, provider: AwsProvider, sm: Any, calls: Counter[str]
    ) -> None:
        """A batch answered with one error for the whole list (a double; the
        single reads go to moto) costs the batch once, not the connection."""
        put(sm, "w/a", {"k": "wa-value-1"})
        put(sm, "w/b", {"k": "wb-value-1"})
        refused: list[int] = []

        def refuse_batch(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
            if request.headers.get("X-Amz-Target") != b"secretsmanager.BatchGetSecretValue":
                return None
            refused.append(1)
            body = {"__type": "ValidationException", "message": "bad request"}
            return aws_answer(request, 400, body)

        provider.client.meta.events.register("before-send.secretsmanager", refuse_batch)
        got = Resolver({"aws": provider}).get_many([("aws", "w/a:k"), ("aws", "w/b:k")])
        assert list(got.values()) == ["wa-value-1", "wb-value-1"]
        assert calls == {"BatchGetSecretValue": 1, "GetSecretValue": 2}
        assert refused == [1]
        assert provider.plan([SecretId("w/a"), SecretId("w/b")]) == [
            [SecretId("w/a"), SecretId("w/b")]
        ]
