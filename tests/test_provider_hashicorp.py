"""The ``hashicorp`` provider against a real ``bao server -dev`` on 127.0.0.1.

One dev server serves the module. The fixtures set it up with the root token:
KV v2 at ``secret/`` (the dev default), KV v1 at ``kv1/``, KV v2 at the nested
mount ``team/kv/``, AppRoles with narrow policies and a 2-second token TTL, and
a namespace ``team-a`` with its own KV mount and AppRole.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import jinja2
import pytest
import requests
from requests.adapters import HTTPAdapter
from servers import Server, closed_port, start_bao

from jinja_apsecrets.errors import SecretConnectionError, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.providers.base import Locator, SecretId
from jinja_apsecrets.providers.hashicorp import VaultProvider
from jinja_apsecrets.resolver import Resolver
from jinja_apsecrets.testing import ProviderContract

SLACK = "xoxb-slack-0001"
GITHUB = "ghp_github-0002"
DB_PASSWORD = "kv1-db-pass-0003"
APP_POLICY = 'path "secret/data/app/*" { capabilities = ["read"] }'
NS_POLICY = 'path "kv/data/*" { capabilities = ["read"] }'
NO_KV_POLICY = 'path "cubbyhole/*" { capabilities = ["read"] }'
INVALID = [
    "",
    "secret",
    "secret/key",
    "secret//prod/key",
    "/secret/data/prod/key",
    "secret/data/prod/",
    "secret/data/../sys/key",
    "secret/data/prod/key?version=0",
    "secret/data/prod/key?version=abc",
    "secret/data/prod/key?ver=2",
]


# -- server and fixtures --------------------------------------------------------


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_bao(tmp_path_factory.mktemp("bao"))
    yield server
    server.stop()


def approle(client: Any, role: str, policy: str, **settings: Any) -> dict[str, str]:
    """Create AppRole ``role`` with its own policy; its connection options."""
    client.sys.create_or_update_policy(name=role, policy=policy)
    client.auth.approle.create_or_update_approle(role, token_policies=[role], **settings)
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    return {"roleId": role_id, "secretId": secret_id}


@pytest.fixture(scope="module")
def vault(bao: Server) -> dict[str, dict[str, str]]:
    """Mounts, secrets and AppRoles; the AppRoles' connection options by name."""
    root = hvac.Client(url=bao.url, token="root")
    kv2 = root.secrets.kv.v2
    kv2.create_or_update_secret("prod/api-keys", {"slack_token": SLACK, "github_token": GITHUB})
    kv2.create_or_update_secret("app/config", {"token": "app-token-1", "port": 8080})
    for i in range(8):
        kv2.create_or_update_secret(f"app/s{i}", {"value": f"app-value-{i}"})
    kv2.create_or_update_secret("app/versioned", {"value": "first"})
    kv2.create_or_update_secret("app/versioned", {"value": "second"})
    root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(
        "prod/db", {"password": DB_PASSWORD}, mount_point="kv1"
    )
    root.sys.enable_secrets_engine("kv", path="team/kv", options={"version": "2"})
    kv2.create_or_update_secret("svc/cfg", {"token": "nested-token"}, mount_point="team/kv")
    root.sys.enable_auth_method("approle")
    roles = {
        "reader": approle(root, "reader", APP_POLICY),
        "short": approle(root, "short", APP_POLICY, token_ttl="2s", token_max_ttl="1m"),
        "nokv": approle(root, "nokv", NO_KV_POLICY),
    }
    root.sys.create_namespace("team-a")
    ns = hvac.Client(url=bao.url, token="root", namespace="team-a")
    ns.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    ns.secrets.kv.v2.create_or_update_secret("app/cfg", {"key": "team-a-value"}, mount_point="kv")
    ns.sys.enable_auth_method("approle")
    roles["team-a"] = approle(ns, "team-reader", NS_POLICY)
    return roles


@pytest.fixture
def make(bao: Server, vault: dict[str, dict[str, str]]) -> Iterator[Callable[..., VaultProvider]]:
    """``make(role=None, **options)``: a provider on the dev server (root token by default)."""
    made: list[VaultProvider] = []

    def build(role: str | None = None, **options: Any) -> VaultProvider:
        creds = vault[role] if role else {"token": "root"}
        provider = VaultProvider("hashicorp", {"url": bao.url, **creds, **options})
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.close()


class Recorder(HTTPAdapter):
    """A transport that records each request's method, path and namespace."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, str | None]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        path = urlsplit(request.url or "").path
        self.sent.append((request.method or "", path, request.headers.get("X-Vault-Namespace")))
        return super().send(request, *args, **kwargs)

    def paths(self, ending: str = "") -> list[str]:
        return [path for _, path, _ in self.sent if path.endswith(ending)]

    @property
    def logins(self) -> int:
        return len(self.paths("/approle/login"))


def record(provider: VaultProvider) -> Recorder:
    recorder = Recorder()
    provider.client.session.mount("http://", recorder)
    return recorder


def get(provider: VaultProvider, path: str) -> str:
    """One lookup through a fresh resolver (no cache shared between calls)."""
    return Resolver({provider.name: provider}).get(provider.name, path)


def render(provider: VaultProvider, source: str) -> str:
    env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
    env.install_secret_resolver(Resolver({provider.name: provider}))  # type: ignore[attr-defined]
    return env.from_string(source).render()


# -- offline ---------------------------------------------------------------------


class TestPaths:
    provider = VaultProvider("hashicorp", {"url": "http://127.0.0.1:1", "token": "t"})

    def test_kv2_path_splits_secret_and_key(self) -> None:
        locator = self.provider.parse_path("secret/data/prod/api-keys/slack_token")
        assert locator == Locator(SecretId("secret/data/prod/api-keys"), "slack_token")

    def test_version_is_part_of_the_secret_id(self) -> None:
        locator = self.provider.parse_path("secret/data/app/versioned/value?version=1")
        assert locator.secret == SecretId("secret/data/app/versioned", "version=1")
        assert str(locator.secret) == "secret/data/app/versioned?version=1"

    @pytest.mark.parametrize("path", INVALID)
    def test_malformed_paths_fail_offline(self, path: str) -> None:
        with pytest.raises(SecretValidationError) as info:
            self.provider.parse_path(path)
        assert info.value.code == "VALIDATION"


class TestConfig:
    def test_construction_is_offline_and_repr_hides_credentials(self) -> None:
        provider = VaultProvider(
            "v", {"url": "http://127.0.0.1:1", "roleId": "r", "secretId": "s3cr3t-id"}
        )
        assert "s3cr3t-id" not in repr(provider)
        assert provider._client is None

    def test_url_falls_back_to_vault_addr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200/")
        assert VaultProvider("v", {}).url == "http://127.0.0.1:8200"
        monkeypatch.delenv("VAULT_ADDR")
        with pytest.raises(SecretValidationError, match="url: required"):
            VaultProvider("v", {})

    @pytest.mark.parametrize(
        "options",
        [
            {"url": "127.0.0.1:8200"},
            {"url": "http://x", "roleId": "r"},
            {"url": "http://x", "verify": "no"},
        ],
    )
    def test_bad_options_fail_with_validation(self, options: dict[str, Any]) -> None:
        with pytest.raises(SecretValidationError):
            VaultProvider("v", options)


# -- against the server ----------------------------------------------------------


@pytest.mark.server
class TestKv:
    def test_kv2_and_kv1_side_by_side(self, make: Callable[..., VaultProvider]) -> None:
        source = (
            "slack=<<hashicorp|ap_sep_v1|secret/data/prod/api-keys/slack_token>>\n"
            "db=<<hashicorp|ap_sep_v1|kv1/prod/db/password>>"
        )
        assert render(make(), source) == f"slack={SLACK}\ndb={DB_PASSWORD}"

    def test_nested_mount_name(self, make: Callable[..., VaultProvider]) -> None:
        assert get(make(), "team/kv/data/svc/cfg/token") == "nested-token"

    def test_non_string_values_are_json(self, make: Callable[..., VaultProvider]) -> None:
        assert get(make(), "secret/data/app/config/port") == "8080"

    def test_version(self, make: Callable[..., VaultProvider]) -> None:
        provider = make()
        assert get(provider, "secret/data/app/versioned/value") == "second"
        assert get(provider, "secret/data/app/versioned/value?version=1") == "first"
        assert get(provider, "secret/data/app/versioned/value?version=2") == "second"
        with pytest.raises(SecretNotFoundError, match="Version 9 of secret"):
            get(provider, "secret/data/app/versioned/value?version=9")

    def test_version_on_kv1_fails_with_validation(self, make: Callable[..., VaultProvider]) -> None:
        with pytest.raises(SecretValidationError, match="KV version 1"):
            get(make(), "kv1/prod/db/password?version=1")

    def test_kv2_path_without_data_names_the_corrected_path(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        with pytest.raises(SecretValidationError) as info:
            get(make(), "secret/prod/api-keys/slack_token")
        assert "did you mean secret/data/prod/api-keys/slack_token?" in str(info.value)
        assert info.value.code == "VALIDATION"
        assert info.value.path == "secret/prod/api-keys/slack_token"

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("secret/data/prod/nothing/token", "Secret secret/data/prod/nothing not found"),
            ("secret/data/prod/api-keys/nokey", "Secret value for key nokey not found"),
            ("kv1/prod/none/password", "Secret kv1/prod/none not found"),
            ("kv1/data/prod/db/password", "KV version 1: its paths have no data/"),
            ("nomount/prod/key", "no secrets engine is mounted there"),
        ],
    )
    def test_missing(self, make: Callable[..., VaultProvider], path: str, message: str) -> None:
        with pytest.raises(SecretNotFoundError, match=message) as info:
            get(make(), path)
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"

    def test_non_kv_mount_is_refused(self, make: Callable[..., VaultProvider]) -> None:
        with pytest.raises(SecretValidationError, match="cubbyhole secrets engine"):
            get(make(), "cubbyhole/x/key")

    def test_pickles_without_client_or_token(self, make: Callable[..., VaultProvider]) -> None:
        provider = make("reader")
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        token = provider.client.token
        clone = pickle.loads(pickle.dumps(provider))
        assert clone._client is None
        assert clone._token is None
        assert token.encode() not in pickle.dumps(provider)

    def test_mount_is_looked_up_once(self, make: Callable[..., VaultProvider]) -> None:
        provider = make()
        sent = record(provider)
        Resolver({"hashicorp": provider}).get_many(
            [("hashicorp", f"secret/data/app/s{i}/value") for i in range(8)]
        )
        assert len([p for p in sent.paths() if "/sys/internal/ui/mounts/" in p]) == 1


@pytest.mark.server
class TestReads:
    def test_many_keys_of_one_path_cost_one_read(self, make: Callable[..., VaultProvider]) -> None:
        provider = make("reader")
        sent = record(provider)
        keys = ["token", "port"] * 10
        source = " ".join(f"<<hashicorp|ap_sep_v1|secret/data/app/config/{k}>>" for k in keys)
        assert render(provider, source) == " ".join(["app-token-1", "8080"] * 10)
        assert sent.paths("/v1/secret/data/app/config") == ["/v1/secret/data/app/config"]
        assert sent.logins == 1
        assert len(sent.sent) == 3

    def test_concurrent_reads_share_one_login(self, make: Callable[..., VaultProvider]) -> None:
        provider = make("reader")
        sent = record(provider)
        refs = [("hashicorp", f"secret/data/app/s{i}/value") for i in range(8)]
        results = Resolver({"hashicorp": provider}).get_many(refs)
        assert [results[r] for r in refs] == [f"app-value-{i}" for i in range(8)]
        assert sent.logins == 1
        assert len([p for p in sent.paths() if p.startswith("/v1/secret/data/app/s")]) == 8


@pytest.mark.server
class TestAppRole:
    def test_policy_allows_one_path_and_forbids_another(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        provider = make("reader")
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        with pytest.raises(SecretNotFoundError) as info:
            get(provider, "secret/data/prod/api-keys/slack_token")
        assert "Permission denied for path secret/data/prod/api-keys" in str(info.value)
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"

    def test_unknown_mount_without_sys_mounts_is_denied(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        with pytest.raises(SecretNotFoundError, match="Permission denied for path nomount/x"):
            get(make("reader"), "nomount/x/key")

    def test_policy_denial_does_not_log_in_again(self, make: Callable[..., VaultProvider]) -> None:
        provider = make("reader")
        sent = record(provider)
        for _ in range(2):
            with pytest.raises(SecretNotFoundError):
                get(provider, "secret/data/prod/api-keys/slack_token")
        assert sent.logins == 1

    def test_wrong_secret_id(self, make: Callable[..., VaultProvider]) -> None:
        wrong = "00000000-wrong-secret-id"
        with pytest.raises(SecretConnectionError) as info:
            get(make("reader", secretId=wrong), "secret/data/app/config/token")
        assert "No token received" in str(info.value)
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert wrong not in str(info.value) + repr(info.value)

    def test_no_token_at_all(self, bao: Server, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("VAULT_TOKEN", raising=False)
        with pytest.raises(SecretConnectionError, match="No token received"):
            get(VaultProvider("hashicorp", {"url": bao.url}), "secret/data/app/config/token")

    def test_wrong_token_is_a_connection_error(self, bao: Server) -> None:
        provider = VaultProvider("hashicorp", {"url": bao.url, "token": "not-a-real-token"})
        with pytest.raises(SecretConnectionError) as info:
            get(provider, "secret/data/app/config/token")
        assert "not-a-real-token" not in str(info.value) + repr(info.value)

    def test_token_from_vault_token(self, bao: Server, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("VAULT_TOKEN", "root")
        provider = VaultProvider("hashicorp", {"url": bao.url})
        assert get(provider, "secret/data/app/config/token") == "app-token-1"

    def test_renders_across_token_expiry(
        self, make: Callable[..., VaultProvider], bao: Server
    ) -> None:
        provider = make("short")  # token_ttl 2 s
        sent = record(provider)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        wait_until_expired(bao, provider.client.token, within=10.0)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        assert sent.logins == 2

    def test_revoked_token_logs_in_again_once(
        self, make: Callable[..., VaultProvider], bao: Server
    ) -> None:
        provider = make("reader")
        sent = record(provider)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        hvac.Client(url=bao.url, token="root").auth.token.revoke(provider.client.token)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        assert sent.logins == 2

    def test_renews_a_renewable_token_before_it_expires(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        provider = make("short")
        now = [0.0]
        provider.clock = lambda: now[0]
        sent = record(provider)
        get(provider, "secret/data/app/config/token")
        now[0] = 1.5  # of 2 s: past the renewal point, before expiry
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        assert sent.logins == 1
        assert sent.paths("/auth/token/renew-self") == ["/v1/auth/token/renew-self"]


def wait_until_expired(bao: Server, token: str, *, within: float) -> None:
    """Poll the server until it no longer knows ``token``."""
    root = hvac.Client(url=bao.url, token="root")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            root.auth.token.lookup(token)
        except hvac.exceptions.VaultError:
            return
        time.sleep(0.1)
    pytest.fail(f"token did not expire within {within} s")


@pytest.mark.server
class TestNamespace:
    def test_approle_and_mount_inside_a_namespace(self, make: Callable[..., VaultProvider]) -> None:
        provider = make("team-a", namespace="team-a")
        sent = record(provider)
        assert get(provider, "kv/data/app/cfg/key") == "team-a-value"
        assert {ns for _, _, ns in sent.sent} == {"team-a"}

    def test_namespace_approle_cannot_log_in_at_the_root(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        with pytest.raises(SecretConnectionError, match="No token received"):
            get(make("team-a"), "kv/data/app/cfg/key")


@pytest.mark.server
class TestConnection:
    def test_check_passes_with_approle(self, make: Callable[..., VaultProvider]) -> None:
        make("reader").check()

    def test_check_fails_for_wrong_secret_id(self, make: Callable[..., VaultProvider]) -> None:
        with pytest.raises(SecretConnectionError, match="No token received"):
            make("reader", secretId="wrong").check()

    def test_check_fails_when_no_kv_mount_is_readable(
        self, make: Callable[..., VaultProvider]
    ) -> None:
        with pytest.raises(SecretConnectionError, match="no KV secrets engine"):
            make("nokv").check()

    def test_server_not_running_fails_fast(self) -> None:
        provider = VaultProvider(
            "hashicorp", {"url": f"http://127.0.0.1:{closed_port()}", "token": "t"}
        )
        started = time.monotonic()
        with pytest.raises(SecretConnectionError) as info:
            get(provider, "secret/data/app/config/token")
        with pytest.raises(SecretConnectionError, match="Cannot reach Vault"):
            provider.check()
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert time.monotonic() - started < 5


@pytest.mark.server
class TestVaultContract(ProviderContract):
    @pytest.fixture
    def provider(self, make: Callable[..., VaultProvider]) -> VaultProvider:
        return make()

    @pytest.fixture
    def known(self) -> dict[str, str]:
        return {
            "secret/data/prod/api-keys/slack_token": SLACK,
            "secret/data/prod/api-keys/github_token": GITHUB,
            "kv1/prod/db/password": DB_PASSWORD,
        }

    @pytest.fixture
    def missing(self) -> list[str]:
        return ["secret/data/prod/nothing/token", "kv1/prod/db/nokey"]

    @pytest.fixture
    def invalid(self) -> list[str]:
        return INVALID
