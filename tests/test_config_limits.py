"""Bad config and vars input (issue 10 item 6): each a VALIDATION error naming
file and field, exit 2, fast; and values from ``${...}`` or ``enc:`` never echoed
(item 4)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_cli import EXE, run

from jinja_apsecrets import Resolver, SecretValidationError
from jinja_apsecrets.config import load_config, safe_load, safe_load_all

BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

#: The bomb inside a connection's settings: expanded before the unknown field
#: would be rejected, in the old loader.
CONFIG_BOMB = "connections:\n  local:\n    provider: file\n    path: s.yaml\n    x:\n" + "".join(
    f"      {line}\n" for line in BOMB.splitlines()
)


def write(tmp_path: Path, text: str | bytes, name: str = "apsecrets.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


class TestAliases:
    def test_bomb_is_rejected(self) -> None:
        with pytest.raises(Exception, match="too many aliases"):
            safe_load(BOMB)

    def test_recursive_alias_is_rejected(self) -> None:
        with pytest.raises(Exception, match="recursive alias"):
            safe_load("a: &a [1, *a]\n")

    def test_every_document_of_a_stream_is_checked(self) -> None:
        assert safe_load_all("a: 1\n---\nb: &x [1]\nc: *x\n") == [{"a": 1}, {"b": [1], "c": [1]}]
        with pytest.raises(Exception, match="too many aliases"):
            safe_load_all("a: 1\n---\n" + BOMB)

    def test_reasonable_aliases_are_fine(self) -> None:
        text = "base: &base {ttl: 5, region: x}\none: *base\ntwo: {<<: *base, ttl: 6}\n"
        assert safe_load(text)["two"] == {"ttl": 6, "region": "x"}

    @pytest.mark.parametrize("text", [BOMB, CONFIG_BOMB])
    def test_config_bomb_is_a_validation_error_naming_the_file(
        self, tmp_path: Path, text: str
    ) -> None:
        path = write(tmp_path, text)
        with pytest.raises(SecretValidationError, match=r"apsecrets\.yaml: too many aliases"):
            load_config(path)

    def test_cli_config_and_vars_bombs_fail_fast_as_processes(self, tmp_path: Path) -> None:
        (tmp_path / "t.j2").write_text("{{ a }}\n")
        (tmp_path / "ok.yaml").write_text("connections:\n  env: {}\n")
        write(tmp_path, BOMB, "bomb.yaml")
        cases = [
            ["render", "t.j2", "-c", "bomb.yaml"],
            ["render", "t.j2", "-c", "ok.yaml", "--vars", "bomb.yaml"],
            ["refs", "t.j2", "-c", "bomb.yaml"],
            ["resolve", "-f", "bomb.yaml", "-c", "ok.yaml"],
        ]
        for args in cases:
            # A generous bound: the old loader runs for minutes here.
            done = subprocess.run(
                [str(EXE), *args],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2, (args, done.stderr)
            assert "bomb.yaml" in done.stderr
            assert "Traceback" not in done.stderr


class TestEncoding:
    def test_config_not_utf8(self, tmp_path: Path) -> None:
        path = write(tmp_path, b"connections:\n  env: {prefix: \xff\xfe}\n")
        with pytest.raises(SecretValidationError, match=r"apsecrets\.yaml: line 2: .*not UTF-8"):
            load_config(path)

    def test_cli_exit_2_without_traceback(self, tmp_path: Path) -> None:
        write(tmp_path, b"connections:\n  env: {prefix: \xff}\n")
        (tmp_path / "t.j2").write_text("x\n")
        code, _, err = run("render", "t.j2", cwd=tmp_path, env={"APSECRETS_CONFIG": None})
        assert code == 2
        assert "not UTF-8" in err


class TestNumbers:
    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ("cache: {ttl: .nan}", "cache.ttl"),
            ("cache: {ttl: .inf}", "cache.ttl"),
            ("cache: {ttl: -1}", "cache.ttl"),
            ("cache: {connection_ttl: .inf}", "cache.connection_ttl"),
            ("connections: {env: {ttl: .nan}}", "connections.env.ttl"),
            (
                "connections: {h: {provider: hashicorp, url: 'http://x', timeout: -5}}",
                "connections.h.timeout",
            ),
            (
                "connections: {h: {provider: hashicorp, url: 'http://x', timeout: 0}}",
                "connections.h.timeout",
            ),
            (
                "connections: {h: {provider: hashicorp, url: 'http://x', timeout: .inf}}",
                "connections.h.timeout",
            ),
        ],
    )
    def test_rejected_naming_file_and_field(
        self, tmp_path: Path, settings: str, field: str
    ) -> None:
        path = write(tmp_path, settings + "\n")
        with pytest.raises(SecretValidationError) as info:
            load_config(path)
        assert info.value.message.startswith(f"{path}: {field}")

    def test_cli_exit_2(self, tmp_path: Path) -> None:
        write(tmp_path, "cache: {ttl: .nan}\n")
        (tmp_path / "t.j2").write_text("x\n")
        code, _, err = run("render", "t.j2", cwd=tmp_path, env={"APSECRETS_CONFIG": None})
        assert code == 2
        assert "cache.ttl" in err

    def test_zero_ttl_still_means_no_cache(self) -> None:
        assert load_config({"cache": {"ttl": 0}}).ttl == 0


class TestOrder:
    def test_unknown_field_is_reported_before_expansion(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("APS_UNSET_VAR", raising=False)
        config = {"connections": {"env": {"prefx": "${APS_UNSET_VAR}"}}}
        with pytest.raises(SecretValidationError, match=r"unknown field\(s\) prefx"):
            load_config(config)


class TestProvenance:
    """Issue 10 item 4: values from ``${...}`` and ``enc:`` are never echoed."""

    TOKEN = "tok-9Qz7Wv4Lm2"

    def _assert_hidden(self, text: str) -> None:
        low = text.lower()
        for i in range(len(self.TOKEN) - 3):
            assert self.TOKEN.lower()[i : i + 4] not in low

    def test_environment_value_in_a_field_that_echoes(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APS_TOKEN", self.TOKEN)
        for field in ("endpointUrl", "region"):
            config = {"connections": {"a": {"provider": "aws", field: "${APS_TOKEN}"}}}
            with pytest.raises(SecretValidationError) as info:
                load_config(config)
            assert field in info.value.message
            self._assert_hidden(str(info.value))

    def test_decrypted_value_in_a_field_that_echoes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from jinja_apsecrets.crypto import encrypt_value, generate_key, load_key

        key_text = generate_key()
        monkeypatch.setenv("APSECRETS_MASTER_KEY", key_text)
        # An unbound (v1) value moved into a field that echoes what it holds.
        moved = encrypt_value(self.TOKEN, load_key({"APSECRETS_MASTER_KEY": key_text}))
        config = {"connections": {"a": {"provider": "aws", "endpointUrl": moved}}}
        with pytest.raises(SecretValidationError) as info:
            load_config(config)
        assert "endpointUrl" in info.value.message
        self._assert_hidden(str(info.value))

    def test_master_key_is_never_expanded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("APSECRETS_MASTER_KEY", "k" * 43)
        for text in ("${APSECRETS_MASTER_KEY}", "x-${APSECRETS_MASTER_KEY:-d}"):
            config = {"connections": {"env": {"prefix": text}}}
            with pytest.raises(SecretValidationError) as info:
                load_config(config)
            assert "APSECRETS_MASTER_KEY" in info.value.message
            assert "kkkk" not in str(info.value)
        # The same key under another name.
        monkeypatch.setenv("APS_COPY", "k" * 43)
        with pytest.raises(SecretValidationError, match="holds the value of APSECRETS_MASTER_KEY"):
            load_config({"connections": {"env": {"prefix": "${APS_COPY}"}}})

    def test_region_must_be_a_region_name_before_any_request(self) -> None:
        for bad in ("evil.example.com/x", "us-east-1.attacker", "US-EAST-1", "x"):
            with pytest.raises(SecretValidationError, match="region"):
                Resolver.from_config({"connections": {"aws": {"region": bad}}})
        for good in ("us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4"):
            load_config({"connections": {"aws": {"region": good}}})
