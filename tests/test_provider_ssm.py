"""The ``aws-ssm`` provider (Parameter Store) against a real ``moto_server`` on 127.0.0.1.

One server serves the module and is reset before each test. Where moto cannot
act as AWS does (a KMS key the caller may not use), a ``before-send`` handler
answers with the body AWS documents for it; those tests say so.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from servers import Server
from test_cli import run
from test_provider_aws import admin_session, moto_api

from jinja_apsecrets import Resolver
from jinja_apsecrets.errors import SecretConnectionError, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.providers import get_provider_class
from jinja_apsecrets.providers.aws_ssm import ParameterStoreProvider
from jinja_apsecrets.providers.base import Locator, SecretId
from jinja_apsecrets.testing import ProviderContract

pytestmark = pytest.mark.server

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def ssm(moto: Server) -> Any:
    """An admin boto3 SSM client on a freshly reset server."""
    moto_api(moto, "reset")
    return admin_session().client("ssm", endpoint_url=moto.url)


def make(url: str, **options: Any) -> ParameterStoreProvider:
    keys = {"accessKeyId": "testing", "secretAccessKey": "testing"}
    return ParameterStoreProvider(
        "aws-ssm", {"region": REGION, "endpointUrl": url, **keys, **options}
    )


@pytest.fixture
def provider(moto: Server, ssm: Any) -> Iterator[ParameterStoreProvider]:
    p = make(moto.url)
    yield p
    p.close()


@pytest.fixture
def calls(provider: ParameterStoreProvider) -> Counter[str]:
    """SSM operations the provider sends, by name (retries not counted)."""
    seen: Counter[str] = Counter()
    provider.client.meta.events.register(
        "before-call.ssm", lambda model, **_: seen.update([model.name])
    )
    return seen


@pytest.fixture
def resolver(provider: ParameterStoreProvider) -> Iterator[Resolver]:
    r = Resolver({"aws-ssm": provider})
    yield r
    r.close()


def put(ssm: Any, name: str, value: str, kind: str = "String", **extra: Any) -> int:
    return int(
        ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True, **extra)["Version"]
    )


class TestPaths:
    ssm = ParameterStoreProvider("aws-ssm", {})

    @pytest.mark.parametrize(
        ("path", "locator"),
        [
            ("/prod/db/password", Locator(SecretId("/prod/db/password"))),
            ("db_password", Locator(SecretId("db_password"))),
            ("a.b-c_d", Locator(SecretId("a.b-c_d"))),
            ("/prod/db/config:port", Locator(SecretId("/prod/db/config"), "port")),
            ("/prod/db:a:b", Locator(SecretId("/prod/db"), "a:b")),
            ("/p?version=3", Locator(SecretId("/p", "version=3"))),
            ("/p:k?label=previous", Locator(SecretId("/p", "label=previous"), "k")),
            ("/" + "/".join(["l"] * 15), Locator(SecretId("/" + "/".join(["l"] * 15)))),
            ("/" + "x" * 2047, Locator(SecretId("/" + "x" * 2047))),
            (
                "/aws/service/global-infrastructure/version",
                Locator(SecretId("/aws/service/global-infrastructure/version")),
            ),
        ],
    )
    def test_parses(self, path: str, locator: Locator) -> None:
        assert self.ssm.parse_path(path) == locator

    @pytest.mark.parametrize(
        ("path", "says"),
        [
            ("", "empty"),
            (":key", "empty"),
            ("/p:", "Empty JSON key"),
            ("prod/db", "must start with /"),
            ("/prod//db", "empty level"),
            ("/prod/db/", "empty level"),
            ("/prod db", "only letters"),
            ("/prod/db!", "only letters"),
            ("/" + "/".join(["l"] * 16), "16 levels; at most 15"),
            ("/" + "x" * 2048, "longer than 2048"),
            ("/p?version=0", "Wrong version"),
            ("/p?version=x", "Wrong version"),
            ("/p?label=", "Wrong label"),
            ("/p?label=1st", "Wrong label"),
            ("/p?stage=x", "Wrong selector"),
        ],
    )
    def test_bad_paths_fail_offline(self, path: str, says: str) -> None:
        with pytest.raises(SecretValidationError) as info:
            self.ssm.parse_path(path)
        assert says in info.value.message
        assert info.value.to_dict()["request"] == {"path": path}

    def test_plan_dedups_ten_a_call_and_one_name_per_call(self) -> None:
        ids = [SecretId(f"/p/{i}") for i in range(25)] * 2
        assert [len(b) for b in self.ssm.plan(ids)] == [10, 10, 5]
        versions = [SecretId("/a"), SecretId("/a", "version=1"), SecretId("/b")]
        assert self.ssm.plan(versions) == [[SecretId("/a"), SecretId("/b")], [versions[1]]]

    def test_same_fields_as_aws(self) -> None:
        aws = get_provider_class("aws")
        assert set(ParameterStoreProvider.fields) == set(aws.fields) - {"batchGet"}
        with pytest.raises(SecretValidationError, match="given together"):
            ParameterStoreProvider("aws-ssm", {"accessKeyId": "AKIA"})


class TestValues:
    def test_types(self, resolver: Resolver, ssm: Any) -> None:
        put(ssm, "/app/name", "my-app")
        put(ssm, "/app/hosts", "a.example,b.example", "StringList")
        put(ssm, "/app/db/password", "pw-SecureString-1", "SecureString")
        put(ssm, "plain_name", "no-slash")
        got = resolver.get_many(
            [
                ("aws-ssm", "/app/name"),
                ("aws-ssm", "/app/hosts"),
                ("aws-ssm", "/app/db/password"),
                ("aws-ssm", "plain_name"),
            ]
        )
        assert list(got.values()) == [
            "my-app",
            "a.example,b.example",
            "pw-SecureString-1",
            "no-slash",
        ]

    def test_json_keys_and_the_raw_text(self, resolver: Resolver, ssm: Any) -> None:
        text = '{"user": "app", "port": 5432,  "tls": {"on": true}}'
        put(ssm, "/app/db/config", text, "SecureString")
        assert resolver.get("aws-ssm", "/app/db/config:user") == "app"
        assert resolver.get("aws-ssm", "/app/db/config:port") == "5432"
        assert resolver.get("aws-ssm", "/app/db/config:tls") == '{"on":true}'
        assert resolver.get("aws-ssm", "/app/db/config") == text  # printed as stored
        with pytest.raises(SecretNotFoundError, match="Secret value for key nope not found"):
            resolver.get("aws-ssm", "/app/db/config:nope")

    def test_key_of_a_value_that_is_no_json_object(self, resolver: Resolver, ssm: Any) -> None:
        put(ssm, "/app/text", "not-json-value-1")
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("aws-ssm", "/app/text:k")
        assert "is not a JSON object" in info.value.message
        assert "not-json-value-1" not in str(info.value)

    def test_versions_and_labels(self, resolver: Resolver, ssm: Any, calls: Counter[str]) -> None:
        put(ssm, "/app/pw", "first-pw")
        second = put(ssm, "/app/pw", "second-pw")
        put(ssm, "/app/pw", "third-pw")
        ssm.label_parameter_version(Name="/app/pw", ParameterVersion=second, Labels=["previous"])
        refs = [
            ("aws-ssm", "/app/pw"),
            ("aws-ssm", "/app/pw?version=1"),
            ("aws-ssm", "/app/pw?label=previous"),
        ]
        assert list(resolver.get_many(refs).values()) == ["third-pw", "first-pw", "second-pw"]
        assert calls == {"GetParameters": 3}  # one name per call
        with pytest.raises(SecretNotFoundError, match="Version 9 of parameter /app/pw not found"):
            resolver.get("aws-ssm", "/app/pw?version=9")
        with pytest.raises(SecretNotFoundError, match="Label nope of parameter /app/pw not found"):
            resolver.get("aws-ssm", "/app/pw?label=nope")


class TestBatching:
    def test_25_names_cost_3_calls(self, resolver: Resolver, ssm: Any, calls: Counter[str]) -> None:
        for i in range(25):
            put(ssm, f"/app/p{i:02d}", f"v-{i:02d}")
        refs = [("aws-ssm", f"/app/p{i:02d}") for i in range(25)]
        got = resolver.get_many(refs + refs[:5])
        assert [got[r] for r in refs] == [f"v-{i:02d}" for i in range(25)]
        assert calls == {"GetParameters": 3}

    def test_invalid_parameters_fail_only_themselves(
        self, resolver: Resolver, ssm: Any, calls: Counter[str]
    ) -> None:
        put(ssm, "/app/here", "here-value-1", "SecureString")
        put(ssm, "/app/other", "other-value-1")
        refs = [("aws-ssm", "/app/here"), ("aws-ssm", "/app/gone"), ("aws-ssm", "/app/other")]
        got = resolver.get_many(refs)
        assert got[refs[0]] == "here-value-1"
        assert got[refs[2]] == "other-value-1"
        error = got[refs[1]]
        assert isinstance(error, SecretNotFoundError)
        assert error.code == "SECRET_MANAGER_GET_SECRET_FAILED"
        assert (
            error.message == f"Parameter /app/gone not found in region {REGION} (account {ACCOUNT})"
        )
        assert (error.provider, error.path) == ("aws-ssm", "/app/gone")
        assert calls == {"GetParameters": 1}

    def test_missing_alone_names_the_region(self, resolver: Resolver) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            resolver.get("aws-ssm", "/app/none")
        # No ARN seen yet on this connection: the account is not known.
        assert info.value.message == f"Parameter /app/none not found in region {REGION}"


def kms_denied(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
    """AWS's answer when a SecureString's KMS key may not be used by the caller
    (a double: moto does not check KMS permissions)."""
    if b"/app/locked" not in (request.body or b""):
        return None
    body = json.dumps(
        {
            "__type": "AccessDeniedException",
            "message": "User: arn:aws:iam::123456789012:user/app is not authorized to perform: "
            "kms:Decrypt on resource: arn:aws:kms:us-east-1:123456789012:key/1234",
        }
    ).encode()
    raw = SimpleNamespace(stream=lambda **_: iter([body]))
    return AWSResponse(request.url, 400, HTTPHeaders(), raw)


class TestErrors:
    def test_kms_denial_names_kms_decrypt_and_spares_the_others(
        self, provider: ParameterStoreProvider, resolver: Resolver, ssm: Any, calls: Counter[str]
    ) -> None:
        put(ssm, "/app/open", "open-value-1", "SecureString")
        put(ssm, "/app/locked", "locked-value-1", "SecureString")
        provider.client.meta.events.register("before-send.ssm", kms_denied)
        got = resolver.get_many([("aws-ssm", "/app/open"), ("aws-ssm", "/app/locked")])
        assert got[("aws-ssm", "/app/open")] == "open-value-1"
        error = got[("aws-ssm", "/app/locked")]
        assert isinstance(error, SecretNotFoundError)
        assert "kms:Decrypt" in error.message
        assert "/app/locked" in error.message
        assert calls == {"GetParameters": 3}  # the batch, then each name alone

    def test_check_is_one_describe_parameters_call(
        self, provider: ParameterStoreProvider, calls: Counter[str]
    ) -> None:
        provider.check()
        assert calls == {"DescribeParameters": 1}

    def test_check_of_a_closed_port_is_a_connection_failure(self) -> None:
        from servers import closed_port

        p = make(f"http://127.0.0.1:{closed_port()}", maxAttempts=1)
        with pytest.raises(SecretConnectionError) as info:
            p.check()
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"

    def test_botocore_debug_logs_are_redacted(
        self, resolver: Resolver, ssm: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        put(ssm, "/app/logged", "leaky-ssm-value-1", "SecureString")
        with caplog.at_level(logging.DEBUG):
            assert resolver.get("aws-ssm", "/app/logged") == "leaky-ssm-value-1"
        assert any(r.name.startswith("botocore") for r in caplog.records)
        assert "leaky-ssm-value-1" not in caplog.text

    def test_pickle_leaves_the_client_out(self, provider: ParameterStoreProvider, ssm: Any) -> None:
        put(ssm, "/app/p", "pickled-1")
        assert Resolver({"aws-ssm": provider}).get("aws-ssm", "/app/p") == "pickled-1"
        clone = pickle.loads(pickle.dumps(provider))
        assert clone._client is None
        assert Resolver({"aws-ssm": clone}).get("aws-ssm", "/app/p") == "pickled-1"


class TestFromConfigAndLint:
    def test_config_and_refs_lint(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
        (tmp_path / "apsecrets.yaml").write_text(
            "connections:\n  params: {provider: aws-ssm, region: eu-west-1}\n"
        )
        (tmp_path / "ok.conf.j2").write_text("pw=<<params|ap_sep_v1|/prod/db/password>>\n")
        (tmp_path / "bad.conf.j2").write_text("pw=<<params|ap_sep_v1|prod//db>>\n")
        code, out, err = run("refs", "ok.conf.j2", "-c", "apsecrets.yaml", cwd=tmp_path)
        assert code == 0, out + err
        code, out, err = run("refs", "bad.conf.j2", "-c", "apsecrets.yaml", cwd=tmp_path)
        assert code == 1
        assert "must start with /" in out + err


def test_offline_validation_imports_no_aws_sdk(tmp_path: Path) -> None:
    """Paths are validated, and ``refs`` lints, as if boto3 were not installed."""
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  aws: {provider: aws}\n  ssm: {provider: aws-ssm}\n"
    )
    (tmp_path / "t.j2").write_text("<<aws|ap_sep_v1|prod/db:pw>> <<ssm|ap_sep_v1|/prod/db/pw>>\n")
    code = textwrap.dedent(
        """
        import sys

        class NoAwsSdk:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("boto3", "botocore"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoAwsSdk())
        from jinja_apsecrets.providers import get_provider_class
        get_provider_class("aws")("aws", {}).parse_path("prod/db:password")
        get_provider_class("aws-ssm")("ssm", {}).parse_path("/prod/db/password")
        from jinja_apsecrets.cli import main
        try:
            main(["refs", "t.j2", "-c", "apsecrets.yaml"])
        except SystemExit as exc:
            print("exit", exc.code)
        print(sorted(m for m in sys.modules if m.partition(".")[0] in ("boto3", "botocore")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip().splitlines()[-2:] == ["exit 0", "[]"], out.stdout + out.stderr


class TestSsmContract(ProviderContract):
    @pytest.fixture
    def known(self, ssm: Any) -> Mapping[str, str]:
        put(ssm, "/contract/db/user", "admin-user")
        put(ssm, "/contract/db/password", "db-password-1", "SecureString")
        put(ssm, "/contract/api", '{"token": "api-token-1"}', "SecureString")
        return {
            "/contract/db/user": "admin-user",
            "/contract/db/password": "db-password-1",
            "/contract/api:token": "api-token-1",
        }

    @pytest.fixture
    def missing(self, ssm: Any) -> list[str]:
        return ["/contract/none", "/contract/db/nope"]

    @pytest.fixture
    def invalid(self) -> list[str]:
        return ["contract/db", "/contract//db", "/contract db", "/x?version=0"]


def test_the_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "aws-ssm"
    out = tmp_path / "app.conf"
    done = subprocess.run(
        [sys.executable, str(example / "render.py"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "password = second-password\n" in text
    assert "previous_password = first-password\n" in text
    assert "port = 5432\n" in text
    assert "hosts = c1.internal,c2.internal\n" in text
    assert "AWS calls for the render: GetParameters x2" in done.stderr
