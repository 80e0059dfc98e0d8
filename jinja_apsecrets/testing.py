"""The provider contract suite, shared by every provider's tests.

Subclass :class:`ProviderContract` in a test module and define four pytest
fixtures (plain functions or methods):

``provider``
    a :class:`~jinja_apsecrets.providers.Provider` connected to a backend that
    holds the known secrets;
``known``
    ``{path: expected_value}`` for at least two paths, two of them keys of one
    secret when the provider has keys;
``missing``
    valid paths that name nothing in the backend;
``invalid``
    malformed paths that must fail offline with ``VALIDATION``.

Third-party providers can reuse it the same way (``pip install
'jinja-apsecrets[test]'``).
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Mapping, Sequence

import jinja2
import pytest

from .errors import SecretNotFoundError, SecretsError, SecretValidationError
from .providers.base import Provider
from .resolver import Resolver

__all__ = ["ProviderContract"]


def _values_absent(blob: str, values: Sequence[str]) -> None:
    for value in values:
        if len(value) >= 4:
            assert value not in blob, "a secret value leaked"


class ProviderContract:
    """Behaviour every provider must show. See the module docstring."""

    def test_known_paths_parse_offline(self, provider: Provider, known: Mapping[str, str]) -> None:
        for path in known:
            locator = provider.parse_path(path)
            assert locator.secret.name

    def test_invalid_paths_fail_with_validation(
        self, provider: Provider, invalid: Sequence[str]
    ) -> None:
        for path in invalid:
            with pytest.raises(SecretValidationError) as info:
                provider.parse_path(path)
            assert info.value.code == "VALIDATION"
            assert info.value.message

    def test_resolves_known_values(self, provider: Provider, known: Mapping[str, str]) -> None:
        resolver = Resolver({provider.name: provider})
        for path, expected in known.items():
            assert resolver.get(provider.name, path) == expected

    def test_batch_mixes_values_and_per_item_errors(
        self, provider: Provider, known: Mapping[str, str], missing: Sequence[str]
    ) -> None:
        resolver = Resolver({provider.name: provider})
        refs = [(provider.name, p) for p in [*known, *missing]]
        results = resolver.get_many(refs)
        for path, expected in known.items():
            assert results[(provider.name, path)] == expected
        for path in missing:
            err = results[(provider.name, path)]
            assert isinstance(err, SecretNotFoundError), err
            assert err.code == "SECRET_MANAGER_GET_SECRET_FAILED"
            assert err.provider == provider.name
            assert err.path == path
            _values_absent(str(err) + repr(err), list(known.values()))

    def test_missing_raises_get_secret_failed(
        self, provider: Provider, missing: Sequence[str]
    ) -> None:
        resolver = Resolver({provider.name: provider})
        for path in missing:
            with pytest.raises(SecretNotFoundError):
                resolver.get(provider.name, path)

    def test_async_matches_sync(self, provider: Provider, known: Mapping[str, str]) -> None:
        resolver = Resolver({provider.name: provider})
        refs = [(provider.name, p) for p in known]
        results = asyncio.run(resolver.get_many_async(refs))
        assert {path: results[(provider.name, path)] for path in known} == dict(known)

    def test_check_passes(self, provider: Provider) -> None:
        provider.check()
        asyncio.run(provider.check_async())

    def test_renders_in_a_template(self, provider: Provider, known: Mapping[str, str]) -> None:
        resolver = Resolver({provider.name: provider})
        env = jinja2.Environment(extensions=["jinja_apsecrets.SecretsExtension"])  # noqa: S701
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        paths = list(known)
        source = "\n".join(f"{i}=<<{provider.name}|ap_sep_v1|{p}>>" for i, p in enumerate(paths))
        expected = "\n".join(f"{i}={known[p]}" for i, p in enumerate(paths))
        assert env.from_string(source).render() == expected

    def test_no_value_in_repr_or_pickle(self, provider: Provider, known: Mapping[str, str]) -> None:
        resolver = Resolver({provider.name: provider})
        for path in known:
            resolver.get(provider.name, path)
        values = list(known.values())
        _values_absent(repr(provider) + repr(resolver), values)
        blob = pickle.dumps(resolver)
        for value in values:
            if len(value) >= 4:
                assert value.encode() not in blob
        clone = pickle.loads(blob)  # noqa: S301 - our own bytes
        first = next(iter(known))
        assert clone.get(provider.name, first) == known[first]

    def test_errors_carry_code_and_shape(self, provider: Provider, missing: Sequence[str]) -> None:
        resolver = Resolver({provider.name: provider})
        path = missing[0]
        with pytest.raises(SecretsError) as info:
            resolver.get(provider.name, path)
        shape = info.value.to_dict()
        assert shape["code"] == "SECRET_MANAGER_GET_SECRET_FAILED"
        assert shape["provider"] == provider.name
        assert shape["request"] == {"path": path}
