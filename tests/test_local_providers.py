"""The local providers (env, file) pass the shared contract, plus their own rules."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from jinja_apsecrets import Resolver, SecretConnectionError, SecretNotFoundError
from jinja_apsecrets.providers.local import EnvProvider, FileProvider
from jinja_apsecrets.testing import ProviderContract


class TestEnvContract(ProviderContract):
    @pytest.fixture
    def provider(self, monkeypatch: pytest.MonkeyPatch) -> EnvProvider:
        monkeypatch.setenv("APS_DB_PASSWORD", "env-Secret-1")
        monkeypatch.setenv("APS_JSON", json.dumps({"user": "admin", "port": 5432}))
        return EnvProvider("env")

    @pytest.fixture
    def known(self) -> Mapping[str, str]:
        return {
            "APS_DB_PASSWORD": "env-Secret-1",
            "APS_JSON:user": "admin",
            "APS_JSON:port": "5432",
        }

    @pytest.fixture
    def missing(self) -> Sequence[str]:
        return ["APS_NOT_SET_ANYWHERE", "APS_JSON:nokey"]

    @pytest.fixture
    def invalid(self) -> Sequence[str]:
        return ["", "1ABC", "A-B", "A:"]


class TestEnv:
    def test_prefix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APP_TOKEN", "t")
        assert Resolver({"env": EnvProvider("env", {"prefix": "APP_"})}).get("env", "TOKEN") == "t"


class TestFileContract(ProviderContract):
    @pytest.fixture
    def provider(self, tmp_path: Path) -> FileProvider:
        path = tmp_path / "secrets.yaml"
        path.write_text("app:\n  db_password: file-Secret-1\n  port: 5432\nsingle: file-Secret-2\n")
        return FileProvider("local", {"path": str(path)})

    @pytest.fixture
    def known(self) -> Mapping[str, str]:
        return {"app:db_password": "file-Secret-1", "app:port": "5432", "single": "file-Secret-2"}

    @pytest.fixture
    def missing(self) -> Sequence[str]:
        return ["nope:x", "app:nokey"]

    @pytest.fixture
    def invalid(self) -> Sequence[str]:
        return ["", ":x", "app:"]


class TestFile:
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        path = tmp_path / "secrets.json"
        path.write_text(json.dumps({"app": {"k": "one"}}))
        return path

    def test_reread_when_the_file_changes(self, path: Path) -> None:
        resolver = Resolver({"local": FileProvider("local", {"path": str(path)})})
        assert resolver.get("local", "app:k") == "one"
        path.write_text(json.dumps({"app": {"k": "two!"}}))
        os.utime(path, ns=(1, 1))
        assert resolver.get("local", "app:k") == "two!"

    def test_missing_file_is_a_connection_error(self, tmp_path: Path) -> None:
        resolver = Resolver({"local": FileProvider("local", {"path": str(tmp_path / "nope.yaml")})})
        with pytest.raises(SecretConnectionError, match="Cannot read secrets file"):
            resolver.get("local", "a:b")
        with pytest.raises(SecretConnectionError):
            resolver.check("local")

    def test_parse_error_shows_no_content(self, tmp_path: Path) -> None:
        path = tmp_path / "s.yaml"
        path.write_text("app:\n  k: file-Secret-9\n  - broken\n")
        resolver = Resolver({"local": FileProvider("local", {"path": str(path)})})
        with pytest.raises(SecretConnectionError) as info:
            resolver.get("local", "app:k")
        assert "file-Secret-9" not in str(info.value)
        assert "line" in info.value.message

    def test_missing_secret(self, path: Path) -> None:
        resolver = Resolver({"local": FileProvider("local", {"path": str(path)})})
        with pytest.raises(SecretNotFoundError, match="Secret value for key zz not found"):
            resolver.get("local", "app:zz")


def test_yaml_dates_and_other_values_print_as_text(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("app:\n  born: 2024-01-01\n  list: [1, 2024-01-02]\nday: 2024-01-03\n")
    resolver = Resolver({"local": FileProvider("local", {"path": str(path)})})
    assert resolver.get("local", "app:born") == "2024-01-01"
    assert resolver.get("local", "app:list") == '[1,"2024-01-02"]'
    assert resolver.get("local", "day") == "2024-01-03"
