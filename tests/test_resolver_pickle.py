"""A pickled resolver carries no credential, and still works where it is unpickled.

Credentials are the provider fields declared ``Field(secret=True)``. A
connection built from a configuration pickles without them; the unpickled
resolver reads its configuration source again (a file is re-read; a mapping
travels with its plain-text credentials left out, its ``${VAR}`` and ``enc:``
values kept) and takes them from there. A connection that cannot get them back
fails with CONNECTION_FAILED when it is used, and only then.

``Keyed`` below is a test double (a provider with one credential, ``token``,
that serves its values only to the right token); ``file`` is the real local
provider.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from jinja_apsecrets import Resolver, SecretConnectionError
from jinja_apsecrets.crypto import KEY_ENV, encrypt_value, generate_key, load_key
from jinja_apsecrets.providers import register_provider
from jinja_apsecrets.providers.base import Document, FetchResult, Field, Locator, Provider, SecretId

TOKEN = "tok-Credential-7f3a"
OTHER = "tok-Credential-other"


class Keyed(Provider):
    """Test double: ``name:key`` paths; answers only the token ``TOKEN``."""

    id = "keyed"
    fields = {
        "token": Field(str, secret=True, doc="the credential"),
        "region": Field(str, default="here"),
    }

    def parse_path(self, path: str) -> Locator:
        name, _, key = path.partition(":")
        return Locator(SecretId(name), key or None)

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        if self.options["token"] != TOKEN:
            raise SecretConnectionError("token rejected", provider=self.name)
        out: dict[SecretId, Document] = {sid: {"k": f"value-of-{sid.name}"} for sid in ids}
        return out

    def check(self) -> None:
        if self.options["token"] != TOKEN:
            raise SecretConnectionError("token rejected", provider=self.name)


register_provider("keyed", Keyed, clobber=True)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("app: {db_password: local-Value-1}\n")
    return secrets


def config(local: Path, token: str) -> dict[str, Any]:
    return {
        "connections": {
            "keyed": {"token": token, "region": "eu"},
            "local": {"provider": "file", "path": str(local)},
        }
    }


def roundtrip(resolver: Resolver, *absent: str) -> Resolver:
    blob = pickle.dumps(resolver)
    for text in absent:
        assert text.encode() not in blob
    clone = pickle.loads(blob)
    assert isinstance(clone, Resolver)
    return clone


class TestMappingConfig:
    def test_plain_text_credentials_are_not_pickled(self, local: Path) -> None:
        source: Mapping[str, Any] = config(local, TOKEN)
        resolver = Resolver.from_config(source)
        assert resolver.get("keyed", "s:k") == "value-of-s"
        clone = roundtrip(resolver, TOKEN)
        assert resolver.source is source  # this process keeps what it was given
        assert clone.get("local", "app:db_password") == "local-Value-1"

    def test_a_connection_missing_its_credential_fails_when_used(self, local: Path) -> None:
        clone = roundtrip(Resolver.from_config(config(local, TOKEN)), TOKEN)
        with pytest.raises(SecretConnectionError, match="token") as info:
            clone.get("keyed", "s:k")
        assert info.value.code == "SECRET_MANAGER_CONNECTION_FAILED"
        assert info.value.provider == "keyed"
        assert "plain text" in info.value.message
        with pytest.raises(SecretConnectionError):
            clone.check("keyed")
        assert TOKEN not in repr(clone.connections) + repr(clone)

    def test_compiles_but_fails_at_render(self, local: Path) -> None:
        import jinja2

        clone = roundtrip(Resolver.from_config(config(local, TOKEN)), TOKEN)
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        env.install_secret_resolver(clone)  # type: ignore[attr-defined]
        template = env.from_string("<<local|ap_sep_v1|app:db_password>> <<keyed|ap_sep_v1|s:k>>")
        with pytest.raises(SecretConnectionError):
            template.render()

    def test_env_credentials_are_read_again(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APS_PICKLE_TOKEN", TOKEN)
        resolver = Resolver.from_config(config(local, "${APS_PICKLE_TOKEN}"))
        clone = roundtrip(resolver, TOKEN)
        assert clone.get("keyed", "s:k") == "value-of-s"

    def test_env_credential_unset_where_unpickled(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APS_PICKLE_TOKEN", TOKEN)
        blob = pickle.dumps(Resolver.from_config(config(local, "${APS_PICKLE_TOKEN}")))
        monkeypatch.delenv("APS_PICKLE_TOKEN")
        clone = pickle.loads(blob)
        assert clone.get("local", "app:db_password") == "local-Value-1"
        with pytest.raises(SecretConnectionError, match="APS_PICKLE_TOKEN"):
            clone.get("keyed", "s:k")

    def test_an_env_default_is_plain_text(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("APS_PICKLE_TOKEN", raising=False)
        resolver = Resolver.from_config(config(local, "${APS_PICKLE_TOKEN:-" + TOKEN + "}"))
        assert resolver.get("keyed", "s:k") == "value-of-s"
        clone = roundtrip(resolver, TOKEN)
        with pytest.raises(SecretConnectionError):
            clone.get("keyed", "s:k")

    def test_encrypted_credentials_are_decrypted_again(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(KEY_ENV, generate_key())
        sealed = encrypt_value(TOKEN, load_key(), field="connections.keyed.token")
        clone = roundtrip(Resolver.from_config(config(local, sealed)), TOKEN)
        assert clone.get("keyed", "s:k") == "value-of-s"

    def test_one_plain_text_credential_fails_its_own_connection_only(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # AWS takes its two keys together: leaving out the plain one alone
        # would make the whole mapping invalid where it is unpickled.
        monkeypatch.setenv("APS_PICKLE_TOKEN", TOKEN)
        monkeypatch.setenv("APS_PICKLE_KEY_ID", "AKIAPICKLETEST")
        source = config(local, "${APS_PICKLE_TOKEN}")
        source["connections"]["aws"] = {
            "region": "us-east-1",
            "accessKeyId": "${APS_PICKLE_KEY_ID}",
            "secretAccessKey": OTHER,
        }
        clone = roundtrip(Resolver.from_config(source), TOKEN, OTHER, "AKIAPICKLETEST")
        assert clone.get("keyed", "s:k") == "value-of-s"
        with pytest.raises(SecretConnectionError, match="secretAccessKey"):
            clone.get("aws", "prod/db:password")

    def test_reload_does_not_replace_a_missing_credential_with_none(self, local: Path) -> None:
        clone = roundtrip(Resolver.from_config(config(local, TOKEN)), TOKEN)
        clone.reload()
        with pytest.raises(SecretConnectionError, match="plain text"):
            clone.get("keyed", "s:k")
        assert clone.get("local", "app:db_password") == "local-Value-1"

    def test_pickles_again_without_credentials(
        self, local: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APS_PICKLE_TOKEN", TOKEN)
        resolver = Resolver.from_config(config(local, "${APS_PICKLE_TOKEN}"))
        twice = roundtrip(roundtrip(resolver, TOKEN), TOKEN)
        assert twice.get("keyed", "s:k") == "value-of-s"
        missing = roundtrip(roundtrip(Resolver.from_config(config(local, OTHER)), OTHER), OTHER)
        with pytest.raises(SecretConnectionError, match="plain text"):
            missing.get("keyed", "s:k")


class TestFileConfig:
    def test_the_file_is_read_again(self, tmp_path: Path, local: Path) -> None:
        path = tmp_path / "apsecrets.yaml"
        path.write_text(
            f"connections:\n  keyed: {{token: {TOKEN}}}\n"
            f"  local: {{provider: file, path: {local}}}\n"
        )
        resolver = Resolver.from_config(path, ttl=7)
        clone = roundtrip(resolver, TOKEN)
        assert clone.get("keyed", "s:k") == "value-of-s"
        assert clone.ttl == 7

    def test_a_relative_path_is_read_again_from_another_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "apsecrets.yaml").write_text(f"connections:\n  keyed: {{token: {TOKEN}}}\n")
        monkeypatch.chdir(tmp_path)
        blob = pickle.dumps(Resolver.from_config("apsecrets.yaml"))
        monkeypatch.chdir(tmp_path.parent)
        assert pickle.loads(blob).get("keyed", "s:k") == "value-of-s"

    def test_a_changed_file_is_not_applied_by_unpickling(self, tmp_path: Path) -> None:
        path = tmp_path / "apsecrets.yaml"
        path.write_text(f"connections:\n  keyed: {{token: {TOKEN}, region: eu}}\n")
        blob = pickle.dumps(Resolver.from_config(path))
        path.write_text(f"connections:\n  keyed: {{token: {TOKEN}, region: us}}\n")
        clone = pickle.loads(blob)
        with pytest.raises(SecretConnectionError, match="reload"):
            clone.get("keyed", "s:k")
        clone.reload()
        assert clone.get("keyed", "s:k") == "value-of-s"

    def test_a_missing_file_fails_only_the_connections_that_need_it(
        self, tmp_path: Path, local: Path
    ) -> None:
        path = tmp_path / "apsecrets.yaml"
        path.write_text(
            f"connections:\n  keyed: {{token: {TOKEN}}}\n"
            f"  local: {{provider: file, path: {local}}}\n"
        )
        blob = pickle.dumps(Resolver.from_config(path))
        path.unlink()
        clone = pickle.loads(blob)
        assert clone.get("local", "app:db_password") == "local-Value-1"
        with pytest.raises(SecretConnectionError, match="not found"):
            clone.get("keyed", "s:k")


class TestConfiguredByHand:
    def test_configure_without_a_source(self, local: Path) -> None:
        from jinja_apsecrets.config import load_config

        resolver = Resolver()
        resolver.configure(load_config(config(local, TOKEN)))
        clone = roundtrip(resolver, TOKEN)
        assert clone.get("local", "app:db_password") == "local-Value-1"
        with pytest.raises(SecretConnectionError, match="no configuration source"):
            clone.get("keyed", "s:k")

    def test_a_provider_built_in_code_pickles_as_it_pickles_itself(self) -> None:
        # The provider's own __getstate__ decides (the built-ins keep their
        # options): the caller built that object, the resolver has no source.
        resolver = Resolver({"keyed": Keyed("keyed", {"token": TOKEN})})
        assert pickle.loads(pickle.dumps(resolver)).get("keyed", "s:k") == "value-of-s"
