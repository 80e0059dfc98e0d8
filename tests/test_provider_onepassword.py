"""Tests of the ``onepassword`` provider, against a test double of the SDK's native core.

No 1Password server can run here. The SDK reaches 1Password only through its
native core, so the double sits at ``onepassword.core.UniffiCore``: the
``fake`` fixture points every ``UniffiCore`` at :class:`FakeOnePassword`,
which stands in for the native module (``init_client``, ``invoke``,
``release_client``), answers the JSON the core answers and raises the core's
own error type. Everything above it is the real SDK: ``Client.authenticate``,
the request ``Secrets.resolve_all`` builds, the pydantic parsing of its
response and ``raise_typed_exception``'s error types.

The double's ``resolve_all`` answer is built with the SDK's own types
(``onepassword.types.ResolveAllResponse``: ``individualResponses``, a JSON
object keyed by each secret reference exactly as sent, each a ``Response``
with ``content`` (``secret``, ``itemId``, ``vaultId``) or ``error`` (a
``ResolveReferenceError``, tagged by ``type``)) and dumped by their aliases,
so a field the SDK renames breaks the double, not just the provider.

The provider's offline reference validation is its own (no SDK); a parity
test holds it to the real native core's ``ValidateSecretReference``
(``invoke_sync``, offline).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
import onepassword.core
import onepassword.secrets
import onepassword.types
import pytest

from jinja_apsecrets import Resolver
from jinja_apsecrets.errors import SecretConnectionError, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.providers.base import Locator, SecretId
from jinja_apsecrets.providers.onepassword import (
    OnePasswordProvider,
    _library_version,
    reference_error,
)
from jinja_apsecrets.testing import ProviderContract

TOKEN = "ops_test-token-3b8e1f"
NATIVE = onepassword.core.UniffiCore().core  # the real native module, for invoke_sync
VAULTS: dict[str, dict[str, dict[str, str]]] = {
    "Production": {
        "API Keys": {"token": "tok-4f9a2c", "Admin/password": "pw-77c1e0"},
        "Database": {"password": "db-90a1b2"},
    },
}


class FakeOnePassword:
    """The native core's side of the SDK, serving :data:`VAULTS` for :data:`TOKEN`."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.vaults = VAULTS
        self.inits: list[dict[str, Any]] = []
        self.invocations: list[dict[str, Any]] = []
        self.threads: list[int] = []
        self.released: list[int] = []
        self.rate_limited = 0  # how many next calls fail with RateLimitExceeded
        self.fail_next: str | None = None  # message of a generic error for the next call

    @staticmethod
    def error(name: str, message: str) -> Exception:
        return NATIVE.Error.Error(json.dumps({"name": name, "message": message}))  # type: ignore[no-any-return]

    async def init_client(self, config: str) -> str:
        self.inits.append(json.loads(config))
        if self.inits[-1].get("serviceAccountToken") != self.token:
            raise self.error("Unauthorized", "invalid service account token")
        return str(len(self.inits))

    async def invoke(self, invocation: str) -> str:
        call = json.loads(invocation)["invocation"]
        self.invocations.append(call)
        self.threads.append(threading.get_ident())
        if self.rate_limited:
            self.rate_limited -= 1
            raise self.error("RateLimitExceeded", "rate limit exceeded")
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise self.error("Other", message)
        name, params = call["parameters"]["name"], call["parameters"]["parameters"]
        if name == "SecretsResolveAll":
            refs = params["secret_references"]
            # Through the SDK's own model, dumped by alias: the shape the core answers.
            answer = onepassword.types.ResolveAllResponse.model_validate(
                {"individualResponses": {r: self.lookup(r) for r in refs}}
            )
            assert list(answer.individual_responses) == list(dict.fromkeys(refs))
            return answer.model_dump_json(by_alias=True, exclude_none=True)
        if name == "VaultsList":
            return json.dumps([self.overview(title) for title in self.vaults])
        raise self.error("Other", f"unexpected invocation {name}")

    def invoke_sync(self, invocation: str) -> str:
        return NATIVE.invoke_sync(invocation)  # type: ignore[no-any-return]

    def release_client(self, client_id: str) -> None:
        self.released.append(json.loads(client_id))

    def lookup(self, reference: str) -> dict[str, Any]:
        kinds = onepassword.types.ResolveReferenceErrorTypes
        vault, item, *rest = reference.removeprefix("op://").partition("?")[0].split("/")
        if item == "Twin":
            return self.failure(kinds.TOO_MANY_ITEMS)
        if vault not in self.vaults:
            return self.failure(kinds.VAULT_NOT_FOUND)
        fields = self.vaults[vault].get(item)
        if fields is None:
            return self.failure(kinds.ITEM_NOT_FOUND)
        key = "/".join(rest)
        if len(rest) == 2 and not any(k.startswith(rest[0] + "/") for k in fields):
            return self.failure(kinds.NO_MATCHING_SECTIONS)
        if key not in fields:
            return self.failure(kinds.FIELD_NOT_FOUND)
        return {"content": {"secret": fields[key], "itemId": f"i-{item}", "vaultId": f"v-{vault}"}}

    @staticmethod
    def overview(title: str) -> dict[str, Any]:
        stamp = "2024-01-01T00:00:00Z"
        return {
            **{"id": f"v-{title}", "title": title, "description": "", "vaultType": "userCreated"},
            **{"activeItemCount": 1, "contentVersion": 1, "attributeVersion": 1},
            **{"createdAt": stamp, "updatedAt": stamp},
        }

    @staticmethod
    def failure(kind: onepassword.types.ResolveReferenceErrorTypes) -> dict[str, Any]:
        return {"error": {"type": kind.value}}

    @property
    def resolve_calls(self) -> list[list[str]]:
        return [
            c["parameters"]["parameters"]["secret_references"]
            for c in self.invocations
            if c["parameters"]["name"] == "SecretsResolveAll"
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeOnePassword:
    double = FakeOnePassword()

    def use_double(core: Any) -> None:
        core.core = double

    monkeypatch.setattr(onepassword.core.UniffiCore, "__init__", use_double)
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN", raising=False)
    return double


def make(fake: FakeOnePassword, **options: Any) -> OnePasswordProvider:
    return OnePasswordProvider("onepassword", options)


@pytest.fixture
def provider(fake: FakeOnePassword) -> Iterator[OnePasswordProvider]:
    p = make(fake, serviceAccountToken=TOKEN)
    yield p
    p.close()


def ids(*refs: str) -> list[SecretId]:
    return [SecretId(r) for r in refs]


TOKEN_REF = "op://Production/API Keys/token"
ADMIN_REF = "op://Production/API Keys/Admin/password"
DB_REF = "op://Production/Database/password"


class TestPaths:
    def test_sections_and_query_attributes_parse(self, provider: OnePasswordProvider) -> None:
        for ref in (ADMIN_REF, "op://Production/Login/one-time password?attribute=otp"):
            assert provider.parse_path(ref) == Locator(SecretId(ref))

    def test_malformed_reference_gives_the_sdks_message(
        self, provider: OnePasswordProvider
    ) -> None:
        with pytest.raises(SecretValidationError) as info:
            provider.parse_path("Production/API Keys/token")
        assert 'not prefixed with "op://"' in info.value.message
        assert info.value.path == "Production/API Keys/token"

    @pytest.mark.parametrize(
        ("ref", "empty"),
        [
            ("op://v//f", "item"),
            ("op://v/i/f/", "field"),
            ("op:///i/f", "vault"),
            ("op://v/i//f", "section"),
            ("op://v/ /f", "item"),
        ],
    )
    def test_empty_segments_are_rejected(
        self, provider: OnePasswordProvider, ref: str, empty: str
    ) -> None:
        with pytest.raises(SecretValidationError, match=f"empty {empty} name"):
            provider.parse_path(ref)

    def test_non_ascii_names_must_be_ids(self, provider: OnePasswordProvider) -> None:
        with pytest.raises(SecretValidationError, match="by its id"):
            provider.parse_path("op://Produktion/Schlüssel/token")
        provider.parse_path("op://Produktion/2fwfzpvjvaey2lwph5jupovjaq/token")

    def test_validation_needs_no_sdk(self) -> None:
        code = (
            "import sys\n"
            "from jinja_apsecrets.providers.onepassword import OnePasswordProvider\n"
            "OnePasswordProvider('o', {}).parse_path('op://V/I/f?attribute=otp')\n"
            "print(','.join(m for m in ('onepassword', 'pydantic') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ""

    def test_missing_sdk_is_a_validation_error_with_the_install_command(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "onepassword.client", None)  # as if not installed
        provider = OnePasswordProvider("o", {"serviceAccountToken": TOKEN})
        with pytest.raises(SecretValidationError) as info:
            provider.fetch(ids(TOKEN_REF))
        assert info.value.hint == "pip install 'jinja-apsecrets[onepassword]'"
        provider.close()


# References the SDK's validator is asked about, for parity (see below).
PARITY = [
    *("op://v/i/f", "op://v/i/s/f", "op://v/i", "op://v/i/s/f/x", "op://a/b/c/d/e"),
    *("Production/API Keys/token", "OP://v/i/f", "op://", "op:///", "op://v?x/i/f"),
    *("op://v/i/f?attribute=otp", "op://v/i/f?attribute=totp", "op://v/i/s/f?attribute=otp"),
    *("op://v/i/f?attribute=OTP", "op://v/i/f?attribute=type", "op://v/i/f?attribute="),
    *("op://v/i/f?ssh-format=openssh", "op://v/i/f?ssh-format=pkcs8", "op://v/i/f?foo=bar"),
    *("op://v/i/f?", "op://v/i/f?=otp", "op://v/i/f?attribute", "op://v/i/f?attribute=otp=1"),
    *("op://v/i/f?attribute=otp&ssh-format=openssh", "op://v/i/f?attribute=otp?x"),
    *("op://Prod Vault/API Keys/api_key.v2", "op://v/i/f=x", 'op://v/i"/f', "op://v/i/f\n"),
    *("op://Pröd/ítem/f", "op://v/i\u00a0x/f", "op://v/i@x/f", "op://v/i:x/f", "op://v/i+x/f"),
]
#: Where this library is stricter than the SDK on purpose.
EMPTY_SEGMENTS = ["op://v//f", "op://v/i/f/", "op:///i/f", "op:// /i/f"]


class TestValidatorParity:
    """The offline validator against the SDK's native one (which runs offline)."""

    @staticmethod
    def sdk_accepts(reference: str) -> bool:
        try:
            onepassword.secrets.Secrets.validate_secret_reference(reference)
        except Exception:
            return False
        return True

    @pytest.mark.parametrize("reference", PARITY)
    def test_same_verdict_as_the_sdk(self, reference: str) -> None:
        assert (reference_error(reference) is None) == self.sdk_accepts(reference)

    @pytest.mark.parametrize("reference", EMPTY_SEGMENTS)
    def test_stricter_on_empty_segments(self, reference: str) -> None:
        assert self.sdk_accepts(reference)
        assert reference_error(reference) is not None

    def test_parsing_is_offline(self, provider: OnePasswordProvider, fake: FakeOnePassword) -> None:
        provider.parse_path(TOKEN_REF)
        with pytest.raises(SecretValidationError):
            provider.parse_path("op://Production/API Keys")
        assert fake.inits == []
        assert fake.invocations == []


class TestResolveAll:
    def test_one_call_for_every_reference(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        result = provider.fetch(ids(TOKEN_REF, ADMIN_REF, DB_REF))
        assert fake.resolve_calls == [[TOKEN_REF, ADMIN_REF, DB_REF]]
        assert list(result.values()) == ["tok-4f9a2c", "pw-77c1e0", "db-90a1b2"]

    def test_plan_is_a_single_batch(self, provider: OnePasswordProvider) -> None:
        many = ids(*(f"op://V/item{i}/f" for i in range(250)))
        assert provider.plan(many) == [many]

    @pytest.mark.parametrize(
        ("ref", "reason"),
        [
            ("op://Staging/API Keys/token", "vault not found"),
            ("op://Production/Nope/token", "item not found"),
            ("op://Production/API Keys/nope", "field not found"),
            ("op://Production/API Keys/Ops/password", "section not found"),
            ("op://Production/Twin/token", "more than one item matches"),
        ],
    )
    def test_per_reference_errors_name_the_reference(
        self, provider: OnePasswordProvider, ref: str, reason: str
    ) -> None:
        result = provider.fetch(ids(TOKEN_REF, ref))
        error = result[SecretId(ref)]
        assert isinstance(error, SecretNotFoundError)
        assert reason in error.message
        assert ref in error.message
        assert result[SecretId(TOKEN_REF)] == "tok-4f9a2c"

    def test_one_login_reused_by_sync_and_async(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        provider.fetch(ids(TOKEN_REF))
        asyncio.run(provider.fetch_async(ids(DB_REF)))
        provider.fetch(ids(ADMIN_REF))
        assert len(fake.inits) == 1
        assert len(fake.resolve_calls) == 3

    def test_integration_names_this_library(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        provider.fetch(ids(TOKEN_REF))
        assert fake.inits[0]["integrationName"] == "jinja_apsecrets"
        assert fake.inits[0]["integrationVersion"] == _library_version()


class TestAuthentication:
    def test_rejected_token_is_a_connection_error(self, fake: FakeOnePassword) -> None:
        fake.token = "ops_another"
        with pytest.raises(SecretConnectionError) as info:
            make(fake, serviceAccountToken=TOKEN).fetch(ids(TOKEN_REF))
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert "invalid service account token" in info.value.message
        assert TOKEN not in str(info.value) + repr(info.value)

    def test_missing_token_fails_without_calling_1password(self, fake: FakeOnePassword) -> None:
        with pytest.raises(SecretConnectionError, match="OP_SERVICE_ACCOUNT_TOKEN"):
            make(fake).fetch(ids(TOKEN_REF))
        assert fake.inits == []

    def test_token_falls_back_to_the_environment(
        self, fake: FakeOnePassword, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", TOKEN)
        assert make(fake).fetch(ids(TOKEN_REF)) == {SecretId(TOKEN_REF): "tok-4f9a2c"}
        assert fake.inits[0]["serviceAccountToken"] == TOKEN

    def test_failed_login_is_not_cached(self, fake: FakeOnePassword) -> None:
        provider = make(fake, serviceAccountToken=TOKEN)
        fake.token = "ops_rotating"
        with pytest.raises(SecretConnectionError):
            provider.fetch(ids(TOKEN_REF))
        fake.token = TOKEN
        assert provider.fetch(ids(TOKEN_REF)) == {SecretId(TOKEN_REF): "tok-4f9a2c"}
        provider.close()

    def test_failed_call_logs_in_again_next_time(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        fake.fail_next = "session expired"
        with pytest.raises(SecretConnectionError, match="session expired"):
            provider.fetch(ids(TOKEN_REF))
        provider.fetch(ids(TOKEN_REF))
        assert len(fake.inits) == 2


class TestRateLimit:
    """Service account limits are hourly (per token) and daily (per account)."""

    def test_fails_at_once_naming_the_limits(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        provider.check()  # logged in: the next call is the one limited
        fake.rate_limited = 1
        with pytest.raises(SecretConnectionError) as info:
            provider.fetch(ids(TOKEN_REF))
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert "hourly limit per token" in info.value.message
        assert "daily limit per account" in info.value.message
        assert "ratelimit" in (info.value.hint or "")
        assert fake.resolve_calls == [[TOKEN_REF]]  # the limited call, and no retry

    def test_a_limited_login_fails_at_once(self, fake: FakeOnePassword) -> None:
        fake.rate_limited = 1
        provider = make(fake, serviceAccountToken=TOKEN)
        fake_init = fake.init_client

        async def limited(config: str) -> str:
            if fake.rate_limited:
                fake.rate_limited -= 1
                fake.inits.append(json.loads(config))
                raise fake.error("RateLimitExceeded", "rate limit exceeded")
            return await fake_init(config)

        fake.init_client = limited  # type: ignore[method-assign]
        with pytest.raises(SecretConnectionError, match="rate limit"):
            provider.fetch(ids(TOKEN_REF))
        assert len(fake.inits) == 1
        provider.close()


class TestEventLoops:
    def test_sync_fetch_inside_a_running_loop(self, provider: OnePasswordProvider) -> None:
        async def handler() -> Mapping[SecretId, Any]:
            return provider.fetch(ids(TOKEN_REF))  # a synchronous render in an async view

        assert asyncio.run(handler()) == {SecretId(TOKEN_REF): "tok-4f9a2c"}

    def test_resolver_get_inside_a_running_loop(self, provider: OnePasswordProvider) -> None:
        resolver = Resolver({"onepassword": provider})

        async def handler() -> str:
            return resolver.get("onepassword", TOKEN_REF)

        assert asyncio.run(handler()) == "tok-4f9a2c"

    def test_async_awaits_the_sdk_on_the_callers_loop(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        asyncio.run(provider.fetch_async(ids(TOKEN_REF)))
        provider.fetch(ids(TOKEN_REF))
        assert fake.threads[0] == threading.get_ident() != fake.threads[1]

    def test_concurrent_first_use_logs_in_once(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: provider.fetch(ids(TOKEN_REF)), range(16)))
        assert len(fake.inits) == 1
        assert len(results) == 16


class TestLifecycle:
    def test_construction_is_offline(self, fake: FakeOnePassword) -> None:
        before = threading.active_count()
        provider = make(fake, serviceAccountToken=TOKEN)
        assert fake.inits == []
        assert threading.active_count() == before
        assert TOKEN not in repr(provider)

    def test_close_releases_the_client_and_its_thread(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        before = set(threading.enumerate())
        provider.fetch(ids(TOKEN_REF))
        (helper,) = set(threading.enumerate()) - before
        provider.close()
        assert fake.released == [1]
        assert not helper.is_alive()
        provider.fetch(ids(TOKEN_REF))  # usable again: logs in anew
        assert len(fake.inits) == 2

    def test_check_lists_vaults(self, provider: OnePasswordProvider, fake: FakeOnePassword) -> None:
        provider.check()
        assert fake.invocations[-1]["parameters"]["name"] == "VaultsList"
        fake.vaults = {}
        with pytest.raises(SecretConnectionError, match="no vault"):
            provider.check()


class TestThroughTheResolver:
    def test_a_render_costs_one_resolve_all(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        env.install_secret_resolver(Resolver({"onepassword": provider}))  # type: ignore[attr-defined]
        source = " ".join(f"<<onepassword|ap_sep_v1|{r}>>" for r in (TOKEN_REF, ADMIN_REF, DB_REF))
        assert env.from_string(source).render() == "tok-4f9a2c pw-77c1e0 db-90a1b2"
        assert [sorted(c) for c in fake.resolve_calls] == [sorted([TOKEN_REF, ADMIN_REF, DB_REF])]

    def test_resolve_async_costs_one_resolve_all(
        self, provider: OnePasswordProvider, fake: FakeOnePassword
    ) -> None:
        data = {
            "api": f"<<onepassword|ap_sep_v1|{TOKEN_REF}>>",
            "db": [f"<<onepassword|ap_sep_v1|{DB_REF}>>"],
        }
        resolved = asyncio.run(Resolver({"onepassword": provider}).resolve_async(data))
        assert resolved == {"api": "tok-4f9a2c", "db": ["db-90a1b2"]}
        assert len(fake.resolve_calls) == 1


class TestOnePasswordContract(ProviderContract):
    @pytest.fixture
    def known(self) -> Mapping[str, str]:
        return {TOKEN_REF: "tok-4f9a2c", ADMIN_REF: "pw-77c1e0", DB_REF: "db-90a1b2"}

    @pytest.fixture
    def missing(self) -> Sequence[str]:
        return ["op://Production/API Keys/nope", "op://Production/Nope/token"]

    @pytest.fixture
    def invalid(self) -> Sequence[str]:
        return ["Production/API Keys/token", "op://Production/API Keys", "op://a/b/c?x=1", ""]
