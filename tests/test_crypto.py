"""Encrypted config values bound to their field (issue 10 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import run

from jinja_apsecrets import Resolver, SecretValidationError
from jinja_apsecrets.config import load_config
from jinja_apsecrets.crypto import decrypt_value, encrypt_value, generate_key, load_key

FIELD = "connections.e.prefix"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    text = generate_key()
    monkeypatch.setenv("APSECRETS_MASTER_KEY", text)
    return load_key({"APSECRETS_MASTER_KEY": text})


class TestFormat:
    def test_v2_is_bound_to_its_field(self, key: bytes) -> None:
        sealed = encrypt_value("APP_", key, field=FIELD)
        assert sealed.startswith("enc:v2:")
        assert decrypt_value(sealed, key=key, field=FIELD) == "APP_"
        with pytest.raises(SecretValidationError, match="another field") as info:
            decrypt_value(sealed, key=key, field="connections.other.prefix", where="f")
        assert "APP_" not in str(info.value)

    def test_v1_is_still_read(self, key: bytes) -> None:
        sealed = encrypt_value("APP_", key)
        assert sealed.startswith("enc:v1:")
        assert decrypt_value(sealed, key=key, field="anything") == "APP_"

    def test_decrypted_value_must_be_utf8(self, key: bytes) -> None:
        import base64
        import os

        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        blob = nonce + AESGCM(key).encrypt(nonce, b"\xff\xfe", FIELD.encode())
        sealed = "enc:v2:" + base64.urlsafe_b64encode(blob).decode().rstrip("=")
        with pytest.raises(SecretValidationError, match="not UTF-8"):
            decrypt_value(sealed, key=key, field=FIELD, where="x")


class TestConfig:
    def test_value_decrypts_in_its_field(self, key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APP_TOKEN", "t")
        sealed = encrypt_value("APP_", key, field=FIELD)
        resolver = Resolver.from_config(
            {"connections": {"e": {"provider": "env", "prefix": sealed}}}
        )
        assert resolver.get("e", "TOKEN") == "t"

    def test_value_moved_to_another_field_or_connection_fails(self, key: bytes) -> None:
        token = "tok-9Qz7Wv4Lm2"
        sealed = encrypt_value(token, key, field="connections.aws.secretAccessKey")
        for config in (
            {"aws": {"region": sealed}},
            {"aws": {"endpointUrl": sealed}},
            {"other": {"provider": "aws", "accessKeyId": "a", "secretAccessKey": sealed}},
        ):
            with pytest.raises(SecretValidationError, match="cannot decrypt") as info:
                load_config({"connections": config})
            assert "9qz7" not in str(info.value).lower()


class TestCommand:
    def test_encrypt_with_field(self, key: bytes) -> None:
        code, out, err = run("encrypt", "--field", FIELD, input="APP_\n")
        assert code == 0
        assert out.startswith("enc:v2:")
        assert decrypt_value(out.strip(), key=key, field=FIELD) == "APP_"
        assert "warning" not in err

    def test_encrypt_without_field_warns(self, key: bytes) -> None:
        code, out, err = run("encrypt", input="APP_\n")
        assert code == 0
        assert out.startswith("enc:v1:")
        assert "--field" in err

    def test_bad_field(self, key: bytes) -> None:
        code, _, err = run("encrypt", "--field", "prefix", input="APP_\n")
        assert code == 2
        assert "connections.NAME.FIELD" in err

    def test_render_with_a_moved_value_exits_2_without_it(self, key: bytes, tmp_path: Path) -> None:
        sealed = encrypt_value("tok-9Qz7Wv4Lm2", key, field="connections.e.prefix")
        (tmp_path / "apsecrets.yaml").write_text(
            f"connections:\n  f: {{provider: env, prefix: '{sealed}'}}\n"
        )
        (tmp_path / "t.j2").write_text("x\n")
        code, _, err = run("render", "t.j2", cwd=tmp_path, env={"APSECRETS_CONFIG": None})
        assert code == 2
        assert "connections.f.prefix" in err
        assert "9qz7" not in err.lower()
