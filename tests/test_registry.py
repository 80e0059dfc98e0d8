"""The provider registry: names, entry points, lazy imports, install hints."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jinja_apsecrets import Resolver, SecretValidationError
from jinja_apsecrets.providers import available_providers, get_provider_class, register_provider
from jinja_apsecrets.providers.local import EnvProvider

BUILTINS = ["aws", "cyberark-conjur", "env", "file", "hashicorp", "onepassword"]


class TestRegistry:
    def test_builtins_are_registered(self) -> None:
        assert set(BUILTINS) <= set(available_providers())
        assert get_provider_class("env") is EnvProvider

    def test_builtins_are_declared_as_entry_points(self) -> None:
        from importlib.metadata import entry_points

        names = {ep.name for ep in entry_points(group="jinja_apsecrets.providers")}
        assert set(BUILTINS) <= names

    def test_unknown_provider_lists_known_ones(self) -> None:
        with pytest.raises(
            SecretValidationError, match="known providers: aws, aws-ssm, cyberark-conjur"
        ):
            get_provider_class("nosuch")

    def test_register_refuses_to_clobber(self) -> None:
        with pytest.raises(ValueError, match="already registered"):
            register_provider("env", EnvProvider)
        register_provider("env", EnvProvider, clobber=True)

    def test_missing_sdk_gives_install_hint(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "needs_sdk.py").write_text("import not_a_real_sdk_xyz\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        register_provider("needs-sdk", "needs_sdk:Provider", clobber=True)
        with pytest.raises(
            SecretValidationError, match="needs not_a_real_sdk_xyz, which is not installed"
        ):
            Resolver.from_config({"connections": {"x": {"provider": "needs-sdk"}}})

    def test_sdk_hint_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
        monkeypatch.delitem(sys.modules, "jinja_apsecrets.providers.aws", raising=False)
        import jinja_apsecrets.providers as registry

        monkeypatch.setitem(registry._registry, "aws", "jinja_apsecrets.providers.aws:AwsProvider")
        # The aws module validates paths without boto3; the SDK is needed, and
        # its absence reported, when a client is made.
        aws = get_provider_class("aws")("aws", {"region": "us-east-1"})
        with pytest.raises(SecretValidationError) as info:
            aws.check()
        assert "pip install 'jinja-apsecrets[aws]'" in info.value.message


def test_sdks_are_imported_only_when_used() -> None:
    code = textwrap.dedent(
        """
        import sys, jinja2, jinja_apsecrets
        r = jinja_apsecrets.Resolver.from_config({"connections": {"env": {}}})
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])
        env.install_secret_resolver(r)
        env.from_string("<<env|ap_sep_v1|HOME>>").render()
        heavy = [m for m in ("boto3", "botocore", "hvac", "onepassword", "requests") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
