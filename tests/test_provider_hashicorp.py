"""The ``hashicorp`` provider against a real ``bao server -dev`` on 127.0.0.1.

One dev server serves the module. The fixtures set it up with the root token:
KV v2 at ``secret/`` (the dev default), KV v1 at ``kv1/``, KV v2 at the nested
mount ``team/kv/``, AppRoles with narrow policies and a 2-second token TTL, and
a namespace ``team-a`` with its own KV mount and AppRole.
"""

from __future__ import annotations

import pickle
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import jinja2
import pytest
import requests
from gateway import FlakyGateway, Step, flaky_gateway
from requests.adapters import HTTPAdapter
from servers import Server, closed_port, start_bao_agent

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
#: Lets a token find mounts by listing them (the agent test reads a nested mount).
MOUNTS_POLICY = (
    '\npath "team/kv/data/*" { capabilities = ["read"] }'
    '\npath "sys/mounts" { capabilities = ["read"] }'
)
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
        provider.retry_backoff = 0  # retries (see TestTransientFailures) never wait
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
        self.tokens: list[str | None] = []  # the X-Vault-Token each request sent

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        path = urlsplit(request.url or "").path
        self.sent.append((request.method or "", path, request.headers.get("X-Vault-Namespace")))
        self.tokens.append(request.headers.get("X-Vault-Token"))
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

    def test_configured_mounts_skip_the_lookup(self, make: Callable[..., VaultProvider]) -> None:
        provider = make(mounts={"secret": 2, "kv1": 1})
        sent = record(provider)
        assert get(provider, "secret/data/prod/api-keys/slack_token") == SLACK
        assert get(provider, "kv1/prod/db/password") == DB_PASSWORD
        assert sent.paths() == ["/v1/secret/data/prod/api-keys", "/v1/kv1/prod/db"]

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
        provider.retry_backoff = 0  # refused connections are retried; without waiting here
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


# -- offline KV versions (issue 15, item 6) -------------------------------------


class TestOfflineKvVersion:
    """``kvVersion`` and ``mounts`` make offline checks exact; without them the
    provider says what it cannot know. No server: these run offline."""

    URL = "http://127.0.0.1:1"

    def test_kv_version_2_rejects_a_path_without_data(self) -> None:
        provider = VaultProvider("hashicorp", {"url": self.URL, "token": "t", "kvVersion": 2})
        with pytest.raises(SecretValidationError) as info:
            provider.parse_path("secret/prod/app/jwt_secret")
        assert "did you mean secret/data/prod/app/jwt_secret?" in info.value.message
        assert provider.parse_path("secret/data/prod/app/jwt_secret").key == "jwt_secret"
        assert provider.offline_warnings("secret/data/prod/app/jwt_secret") == []

    def test_mounts_win_over_the_first_segment(self) -> None:
        provider = VaultProvider(
            "hashicorp",
            {"url": self.URL, "token": "t", "mounts": {"team/kv": 2, "/legacy/": 1}},
        )
        with pytest.raises(SecretValidationError, match=r"did you mean team/kv/data/svc/token\?"):
            provider.parse_path("team/kv/svc/token")
        with pytest.raises(SecretValidationError, match="legacy/ is KV version 1"):
            provider.parse_path("legacy/app/key?version=2")
        provider.parse_path("legacy/data/key")  # a folder named data on KV v1
        assert provider.offline_warnings("team/kv/data/svc/token") == []

    def test_raw_settings_work_without_construction(self) -> None:
        # What an offline linter does when the url comes from ${VAULT_ADDR}:
        # an instance holding the defaults and the literal settings, unvalidated.
        bare = VaultProvider.__new__(VaultProvider)
        bare.name = "v"
        bare.options = {k: f.default for k, f in VaultProvider.fields.items()}
        bare.options["mounts"] = {"secret": 2}
        with pytest.raises(SecretValidationError, match=r"did you mean secret/data/a/b\?"):
            bare.parse_path("secret/a/b")
        bare.parse_path("secretx/a/b")  # not under secret/
        assert bare.offline_warnings("secret/data/a/b") == []

    def test_without_settings_the_version_is_a_warning(self) -> None:
        provider = VaultProvider("vault-a", {"url": self.URL, "token": "t"})
        provider.parse_path("secret/prod/app/jwt_secret")  # may be KV v1: not an error
        (warning,) = provider.offline_warnings("secret/prod/app/jwt_secret")
        assert warning.startswith("KV version unknown offline")
        assert "vault-a" in warning
        with pytest.raises(SecretValidationError):
            provider.offline_warnings("secret")  # invalid paths still fail

    @pytest.mark.parametrize(
        "options",
        [{"kvVersion": 3}, {"mounts": {"secret": 3}}, {"mounts": {"": 2}}, {"mounts": ["x"]}],
    )
    def test_bad_settings(self, options: dict[str, Any]) -> None:
        with pytest.raises(SecretValidationError):
            VaultProvider("v", {"url": self.URL, **options})

    def test_validation_imports_no_sdk(self) -> None:
        code = (
            "import sys\n"
            "from jinja_apsecrets.providers.hashicorp import VaultProvider\n"
            "p = VaultProvider('v', {'url': 'http://127.0.0.1:1', 'kvVersion': 2})\n"
            "p.parse_path('secret/data/app/key'); p.offline_warnings('secret/data/app/key')\n"
            "print(','.join(m for m in ('hvac', 'requests', 'urllib3') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ""

    def test_missing_hvac_is_a_validation_error_with_the_install_command(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "hvac", None)  # as if hvac were not installed
        monkeypatch.setitem(sys.modules, "hvac.exceptions", None)
        provider = VaultProvider("v", {"url": self.URL, "token": "t"})
        with pytest.raises(
            SecretValidationError, match=r"pip install 'jinja-apsecrets\[hashicorp\]'"
        ):
            provider.fetch([SecretId("secret/data/app")])


# -- hints fit the auth method (issue 15, item 10) -------------------------------


class TestHints:
    @pytest.mark.parametrize(
        ("options", "word", "absent"),
        [
            ({"token": "t"}, "token", "AppRole"),
            ({"roleId": "r", "secretId": "s"}, "AppRole", "VAULT_TOKEN"),
            ({"agent": True}, "agent", "AppRole"),
        ],
    )
    def test_troubleshooting_names_the_auth_method(
        self, options: dict[str, Any], word: str, absent: str
    ) -> None:
        provider = VaultProvider("v", {"url": "http://127.0.0.1:1", **options})
        hints = " ".join(provider.troubleshooting)
        assert word in hints
        assert absent not in hints

    @pytest.mark.server
    def test_a_rejected_token_hints_at_tokens(self, bao: Server) -> None:
        provider = VaultProvider("hashicorp", {"url": bao.url, "token": "not-a-real-token"})
        with pytest.raises(SecretConnectionError) as info:
            get(provider, "secret/data/app/config/token")
        assert "token" in (info.value.hint or "")
        assert "AppRole" not in (info.value.hint or "")


# -- deleted and destroyed versions ------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle(bao: Server, vault: dict[str, dict[str, str]]) -> str:
    """A KV v2 secret with 3 versions: 3 deleted, 2 destroyed, 1 live."""
    kv2 = hvac.Client(url=bao.url, token="root").secrets.kv.v2
    for n in (1, 2, 3):
        kv2.create_or_update_secret("app/lifecycle", {"value": f"v{n}"})
    kv2.delete_latest_version_of_secret("app/lifecycle")  # version 3
    kv2.destroy_secret_versions("app/lifecycle", versions=[2])
    return "secret/data/app/lifecycle/value"


@pytest.mark.server
class TestDeletedVersions:
    """KV v2 answers 404 with the version's metadata (deletion_time, destroyed)."""

    def test_deleted_latest_version_says_so(
        self, make: Callable[..., VaultProvider], lifecycle: str
    ) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            get(make(), lifecycle)
        assert re.search(r"version 3 was deleted at 20\d\d-", info.value.message)
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"

    def test_deleted_version_by_number(
        self, make: Callable[..., VaultProvider], lifecycle: str
    ) -> None:
        with pytest.raises(SecretNotFoundError, match="version 3 was deleted at"):
            get(make(), lifecycle + "?version=3")

    def test_destroyed_version(self, make: Callable[..., VaultProvider], lifecycle: str) -> None:
        with pytest.raises(SecretNotFoundError, match="version 2 was destroyed"):
            get(make(), lifecycle + "?version=2")
        assert get(make(), lifecycle + "?version=1") == "v1"


# -- single-use AppRole secret ids ----------------------------------------------------


@pytest.mark.server
class TestSingleUseSecretId:
    def test_the_second_login_fails(self, make: Callable[..., VaultProvider], bao: Server) -> None:
        root = hvac.Client(url=bao.url, token="root")
        creds = approle(root, "once", APP_POLICY, secret_id_num_uses=1)
        first = make(**creds)
        assert get(first, "secret/data/app/config/token") == "app-token-1"
        with pytest.raises(SecretConnectionError, match="secret_id_num_uses") as info:
            get(make(**creds), "secret/data/app/config/token")
        assert creds["secretId"] not in str(info.value)


# -- transient failures -----------------------------------------------------------------


@pytest.mark.server
class TestTransientFailures:
    """A flaky gateway (tests/gateway.py) in front of the real server."""

    @pytest.fixture
    def gateway(self, bao: Server, vault: dict[str, dict[str, str]]) -> Iterator[FlakyGateway]:
        with flaky_gateway(bao.url) as gw:
            yield gw

    def reads(self, gateway: FlakyGateway) -> list[str]:
        return [p for _, p in gateway.seen if p.startswith("/v1/secret/data/")]

    @pytest.mark.parametrize("plan", [[503, 502], ["reset"], [504, "reset"]])
    def test_retried_until_the_server_answers(
        self, make: Callable[..., VaultProvider], gateway: FlakyGateway, plan: list[Step]
    ) -> None:
        provider = make(url=gateway.url, mounts={"secret": 2})  # no mount lookup: reads only
        gateway.plan = list(plan)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        assert len(self.reads(gateway)) == len(plan) + 1

    def test_gives_up_after_the_retries_as_a_connection_failure(
        self, make: Callable[..., VaultProvider], gateway: FlakyGateway
    ) -> None:
        provider = make(url=gateway.url, mounts={"secret": 2}, retries=2)
        gateway.plan = [503, 503, 503, 503]
        with pytest.raises(SecretConnectionError, match="unavailable") as info:
            get(provider, "secret/data/app/config/token")
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert len(self.reads(gateway)) == 3

    def test_retries_zero_sends_once(
        self, make: Callable[..., VaultProvider], gateway: FlakyGateway
    ) -> None:
        provider = make(url=gateway.url, mounts={"secret": 2}, retries=0)
        gateway.plan = [502]
        with pytest.raises(SecretConnectionError):
            get(provider, "secret/data/app/config/token")
        assert len(self.reads(gateway)) == 1

    def test_a_server_error_is_a_connection_failure_not_a_missing_secret(
        self, make: Callable[..., VaultProvider], gateway: FlakyGateway
    ) -> None:
        provider = make(url=gateway.url, mounts={"secret": 2})
        gateway.plan = [500]  # not a "try again" answer: not retried
        with pytest.raises(SecretConnectionError) as info:
            get(provider, "secret/data/app/config/token")
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert len(self.reads(gateway)) == 1

    def test_an_approle_login_is_not_resent_after_a_gateway_error(
        self, make: Callable[..., VaultProvider], gateway: FlakyGateway
    ) -> None:
        # The login may have reached the server and spent a use of the secret id.
        provider = make("reader", url=gateway.url, mounts={"secret": 2})
        gateway.plan = [503]
        with pytest.raises(SecretConnectionError):
            get(provider, "secret/data/app/config/token")
        assert [m for m, _ in gateway.seen] == ["POST"]


class TestBackoff:
    def test_full_jitter_doubles_and_is_capped(self) -> None:
        from urllib3.exceptions import ConnectTimeoutError

        from jinja_apsecrets.providers import _http

        policy = _http.retry_policy(6, backoff=0.5)
        ceilings = []
        for _ in range(6):
            policy = policy.increment(method="GET", url="/", error=ConnectTimeoutError())
            policy.rng = random.Random(7)
            ceilings.append(policy.get_backoff_time())
        expected_ceilings = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
        waits = [random.Random(7).uniform(0.0, c) for c in expected_ceilings]
        assert ceilings == pytest.approx(waits)


# -- Vault Agent / OpenBao Agent ----------------------------------------------------------


@pytest.fixture(scope="module")
def agent(
    bao: Server, vault: dict[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A ``bao agent`` whose auto-auth token may read ``secret/data/app/*`` only."""
    root = hvac.Client(url=bao.url, token="root")
    root.sys.create_or_update_policy(name="agent-reader", policy=APP_POLICY + MOUNTS_POLICY)
    token = root.auth.token.create(policies=["agent-reader"], ttl="1h")["auth"]["client_token"]
    server = start_bao_agent(tmp_path_factory.mktemp("agent"), bao.url, token)
    yield server
    server.stop()


@pytest.mark.server
class TestAgent:
    def test_reads_through_the_agent_send_no_token(
        self, agent: Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("VAULT_TOKEN", "root")  # must not be sent either
        provider = VaultProvider("hashicorp", {"url": agent.url, "agent": True})
        sent = record(provider)
        assert get(provider, "secret/data/app/config/token") == "app-token-1"
        assert get(provider, "team/kv/data/svc/cfg/token") == "nested-token"  # mount detection
        assert sent.tokens
        assert set(sent.tokens) == {None}
        assert any("/sys/internal/ui/mounts/" in p for p in sent.paths())
        provider.close()

    def test_the_agents_token_policy_applies(self, agent: Server) -> None:
        provider = VaultProvider("hashicorp", {"url": agent.url, "agent": True})
        with pytest.raises(SecretNotFoundError, match="Permission denied") as info:
            get(provider, "secret/data/prod/api-keys/slack_token")
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"
        provider.check()
        provider.close()

    def test_kv_reads_are_forwarded_not_cached_by_the_agent(
        self, agent: Server, bao: Server
    ) -> None:
        # What the README says of `cache {}`: it keeps tokens and leased
        # secrets; a KV read has no lease, so a new version shows at once.
        kv2 = hvac.Client(url=bao.url, token="root").secrets.kv.v2
        kv2.create_or_update_secret("app/rotating", {"value": "before"})
        provider = VaultProvider("hashicorp", {"url": agent.url, "agent": True})
        assert get(provider, "secret/data/app/rotating/value") == "before"
        kv2.create_or_update_secret("app/rotating", {"value": "after"})
        assert get(provider, "secret/data/app/rotating/value") == "after"
        provider.close()

    def test_agent_excludes_credentials(self) -> None:
        for creds in ({"token": "t"}, {"roleId": "r", "secretId": "s"}):
            with pytest.raises(SecretValidationError, match="agent is true"):
                VaultProvider("v", {"url": "http://127.0.0.1:1", "agent": True, **creds})
