# apsecrets.core: what the plugins share (MIT licence).
"""Glue between Ansible's plugin conventions and jinja_apsecrets.

Config discovery, the resolver of the right file (from the registry), errors
that name code and reference (never a value), the ``on_missing`` policy of
the lookup and the filter, and values marked unsafe for Ansible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleError

from ansible_collections.apsecrets.core.plugins.plugin_utils import registry
from jinja_apsecrets import Reference, Resolver, SecretNotFoundError, SecretsError, SecretText
from jinja_apsecrets.integrations.ansible.config import CONFIG_VARIABLE, find_config
from jinja_apsecrets.redaction import Redactor
from jinja_apsecrets.reference import SEPARATOR, parse_bare

try:  # ansible-core < 2.23: the documented way to mark values unsafe
    from ansible.utils.unsafe_proxy import wrap_var as _wrap_var
except ImportError:  # later: values from plugins are never trusted as templates
    _wrap_var = None

ON_MISSING = ("error", "undefined", "keep")


def unsafe(value: Any) -> Any:
    """``value`` (nested) marked unsafe: Ansible never templates it again.

    Resolved values come as :class:`~jinja_apsecrets.SecretText`; Ansible's
    variable storage knows only exact types (it warns, "Type 'SecretText' is
    unsupported", on every task that stores one), so they become plain
    ``str`` first. Hiding values is ``no_log``'s job in Ansible."""
    value = _plain(value)
    return value if _wrap_var is None else _wrap_var(value)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretText):
        return str.__str__(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if type(value) in (list, tuple) else value
    return value


def canonical(connection: str, path: str) -> str:
    return f"<<{connection}|{SEPARATOR}|{path}>>"


def describe(error: SecretsError) -> str:
    """``CODE: <<conn|ap_sep_v1|path>>: message (in template:line)``; never a value."""
    parts = [error.code]
    if error.provider is not None and error.path is not None:
        parts.append(canonical(error.provider, error.path))
    parts.append(error.message + (f" (in {error.location})" if error.location else ""))
    return ": ".join(parts)


def error_text(prefix: str, errors: Iterable[SecretsError]) -> str:
    """One message naming each failed reference with its code; no value.

    A path is written by the playbook and may be computed from a value handed
    out before (``'local|ap_sep_v1|app:' ~ lookup(...)``): the values this
    process handed to Ansible are taken out of it whole."""
    text = f"{prefix}: " + "; ".join(describe(e) for e in errors)
    redactor = Redactor()
    redactor.update(registry.known_values())
    return redactor.redact_values(text)


def resolver_for(
    prefix: str, option: Any, variables: Mapping[str, Any] | None, variable: Any = None
) -> Resolver:
    """The resolver of the config file found in the documented order.

    ``variable`` is the ``apsecrets_config`` value if the caller already has
    it (templated), else it is read from ``variables``.
    """
    variables = variables or {}
    if variable is None:
        variable = variables.get(CONFIG_VARIABLE)
    playbook_dir = variables.get("playbook_dir")
    try:
        path = find_config(option, variable, playbook_dir=playbook_dir)
        return registry.resolver_for(path)
    except SecretsError as err:
        raise AnsibleError(error_text(prefix, [err])) from None


def check_on_missing(prefix: str, on_missing: Any) -> str:
    if on_missing not in ON_MISSING:
        raise AnsibleError(
            f"{prefix}: VALIDATION: on_missing must be one of {', '.join(ON_MISSING)}"
        )
    return str(on_missing)


def parse_terms(prefix: str, terms: Sequence[Any]) -> list[Reference]:
    """Each term as a reference, in any form; a term that is not one is named by
    its position only (it might be a value passed by mistake)."""
    refs = []
    for i, term in enumerate(terms, 1):
        ref = parse_bare(str(term)) if isinstance(term, str) else None
        if ref is None:
            raise AnsibleError(
                f"{prefix}: VALIDATION: term #{i} is not a secret reference; expected "
                f"CONNECTION|{SEPARATOR}|PATH, <<CONNECTION|{SEPARATOR}|PATH>> or "
                f"{{{{CONNECTION|{SEPARATOR}|PATH}}}}"
            )
        refs.append(ref)
    return refs


def settle(
    prefix: str,
    found: Mapping[tuple[str, str], str | SecretsError],
    on_missing: str,
    default: Any,
) -> dict[tuple[str, str], Any]:
    """Apply ``on_missing`` to the errors of one round.

    Only a missing secret (``SECRET_MANAGER_GET_SECRET_FAILED``) is ever
    softened; connection and validation failures always fail. Under
    ``undefined``, a missing value becomes ``default`` (None if not given);
    under ``keep``, the value is left out (the caller keeps the reference).
    Every hard failure of the round is reported at once.
    """
    hard = [
        e
        for e in found.values()
        if isinstance(e, SecretsError)
        and (on_missing == "error" or not isinstance(e, SecretNotFoundError))
    ]
    if hard:
        raise AnsibleError(error_text(prefix, hard))
    out: dict[tuple[str, str], Any] = {}
    for key, value in found.items():
        if isinstance(value, SecretsError):
            if on_missing == "undefined":
                out[key] = default
        else:
            out[key] = value
    registry.remember(
        (value, canonical(*key)) for key, value in found.items() if isinstance(value, str)
    )
    return out
