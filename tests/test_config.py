"""Configuration: YAML, interpolation, validation messages, encrypted values."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from jinja_apsecrets import Resolver, SecretValidationError
from jinja_apsecrets.config import interpolate, load_config
from jinja_apsecrets.crypto import encrypt_value, generate_key, load_key


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "apsecrets.yaml"
    path.write_text(text)
    return path


class TestLoad:
    def test_spec_defaults(self) -> None:
        config = load_config({})
        assert (config.ttl, config.connection_ttl) == (300.0, 30.0)

    def test_yaml_file_with_relative_secrets_file(self, tmp_path: Path) -> None:
        (tmp_path / "secrets.yaml").write_text("app: {db_password: hunter22}\n")
        path = write(
            tmp_path,
            "cache: {ttl: 60}\nconnections:\n  local: {provider: file, path: secrets.yaml}\n",
        )
        resolver = Resolver.from_config(path)
        assert resolver.ttl == 60
        assert resolver.get("local", "app:db_password") == "hunter22"

    def test_connection_named_after_provider(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APS_T", "v")
        assert Resolver.from_config({"connections": {"env": None}}).get("env", "APS_T") == "v"

    def test_reload_applies_changes(self, tmp_path: Path) -> None:
        (tmp_path / "a.yaml").write_text("s: {k: one}\n")
        (tmp_path / "b.yaml").write_text("s: {k: two}\n")
        path = write(tmp_path, "connections:\n  local: {provider: file, path: a.yaml}\n")
        resolver = Resolver.from_config(path)
        assert resolver.get("local", "s:k") == "one"
        write(tmp_path, "connections:\n  local: {provider: file, path: b.yaml}\n")
        resolver.reload()
        assert resolver.get("local", "s:k") == "two"

    def test_reload_keeps_unchanged_connections_and_drops_the_rest(self, tmp_path: Path) -> None:
        for name in ("a", "b", "c"):
            (tmp_path / f"{name}.yaml").write_text(f"s: {{k: {name}}}\n")
        path = write(
            tmp_path,
            "connections:\n  keep: {provider: file, path: a.yaml}\n"
            "  change: {provider: file, path: a.yaml}\n  gone: {provider: file, path: a.yaml}\n",
        )
        resolver = Resolver.from_config(path)
        kept = resolver.connections["keep"]
        write(
            tmp_path,
            "connections:\n  keep: {provider: file, path: a.yaml}\n"
            "  change: {provider: file, path: b.yaml}\n",
        )
        resolver.reload()
        assert resolver.connections["keep"] is kept
        assert set(resolver.connections) == {"keep", "change"}
        assert resolver.get("change", "s:k") == "b"

    def test_kwargs_win_over_the_file_on_reload(self, tmp_path: Path) -> None:
        path = write(tmp_path, "cache: {ttl: 60}\nconnections: {env: null}\n")
        resolver = Resolver.from_config(path, ttl=5)
        write(tmp_path, "cache: {ttl: 90}\nconnections: {env: null}\n")
        resolver.reload()
        assert resolver.ttl == 5

    def test_a_resolver_without_connections_pickles(self) -> None:
        clone = pickle.loads(pickle.dumps(Resolver()))
        assert dict(clone.connections) == {}


class TestInterpolation:
    def test_design_example_with_bare_placeholders(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrEXAMPLE")
        path = write(
            tmp_path,
            "cache: {ttl: 300, connection_ttl: 30}\n"
            "connections:\n"
            "  aws: {provider: aws, region: us-east-1, accessKeyId: ${AWS_ACCESS_KEY_ID},"
            " secretAccessKey: ${AWS_SECRET_ACCESS_KEY}, sessionToken: ${AWS_SESSION_TOKEN:-}}\n"
            "  local: {provider: file, path: secrets.yaml}\n",
        )
        config = load_config(path)
        assert config.connections["aws"].options["accessKeyId"] == "AKIAEXAMPLE"
        assert config.connections["aws"].options["secretAccessKey"] == "wJalrEXAMPLE"
        assert config.connections["aws"].options["sessionToken"] is None

    def test_forms(self) -> None:
        env = {"A": "1"}
        assert interpolate("${A}-${B:-dflt}-$${A}", "f", env) == "1-dflt-${A}"

    def test_missing_variable_names_field(self, tmp_path: Path) -> None:
        path = write(
            tmp_path, "connections:\n  aws:\n    provider: aws\n    accessKeyId: ${APS_NOT_SET_X}\n"
        )
        with pytest.raises(SecretValidationError) as info:
            load_config(path)
        assert str(path) in info.value.message
        assert "connections.aws.accessKeyId" in info.value.message
        assert "APS_NOT_SET_X" in info.value.message


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "connections:\n  x: {provider: nosuch}\n",
                "known providers: aws, aws-ssm, cyberark-conjur, env, file",
            ),
            ("connections:\n  mystery: {}\n", "add provider: one of"),
            (
                "connections:\n  local: {provider: file}\n",
                "connections.local.path: required field is missing",
            ),
            (
                "connections:\n  local: {provider: file, path: 3}\n",
                "connections.local.path: expected a string, got int",
            ),
            ("connections:\n  env: {prefx: A}\n", "unknown field(s) prefx"),
            ("cache: {ttl: soon}\n", "cache.ttl: expected a number of seconds"),
            ("policy: {allow: aws}\n", "policy.allow: expected a list"),
            ("colour: blue\n", "colour: unknown field"),
            ("connections: [1]\n", "connections: expected a mapping"),
            ("connections:\n  'bad name': {provider: env}\n", "Invalid connection name"),
            ("a: [\n", "line"),
        ],
    )
    def test_messages_name_file_and_field(self, tmp_path: Path, text: str, expected: str) -> None:
        path = write(tmp_path, text)
        with pytest.raises(SecretValidationError) as info:
            load_config(path)
        assert info.value.code == "VALIDATION"
        assert str(path) in info.value.message
        assert expected in info.value.message

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(SecretValidationError, match="config file not found"):
            load_config(tmp_path / "nope.yaml")


class TestEncrypted:
    def test_round_trip(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        key = generate_key()
        monkeypatch.setenv("APSECRETS_MASTER_KEY", key)
        token = encrypt_value("PREFIX_", load_key())
        assert token.startswith("enc:v1:")
        path = write(tmp_path, f"connections:\n  env: {{prefix: '{token}'}}\n")
        assert load_config(path).connections["env"].options["prefix"] == "PREFIX_"

    def test_wrong_key_names_field(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APSECRETS_MASTER_KEY", generate_key())
        token = encrypt_value("x", load_key())
        monkeypatch.setenv("APSECRETS_MASTER_KEY", generate_key())
        path = write(tmp_path, f"connections:\n  env: {{prefix: '{token}'}}\n")
        with pytest.raises(
            SecretValidationError, match=r"connections\.env\.prefix: cannot decrypt"
        ):
            load_config(path)
