"""References in environment-style values (``run``'s environment, dotenv files).

A value of an environment variable or a dotenv line holds references as a
template line does (``<<conn|ap_sep_v1|path>>`` or ``{{conn|ap_sep_v1|path}}``,
anywhere in it), and may also be one bare reference, ``conn|ap_sep_v1|path``,
as ``op run`` takes a whole ``op://`` value. Every reference of every value is
looked up in one round (one :meth:`~jinja_apsecrets.resolver.Resolver.lookup`),
so a command starts with all its secrets or not at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import SecretNotFoundError, SecretsError
from ..reference import Reference, find_references, parse_bare
from ..resolver import OnMissing, Resolver
from ..walk import substitute

__all__ = ["Resolved", "Source", "references", "resolve_values"]

K = TypeVar("K", bound=Hashable)


def _bare(value: str) -> Reference | None:
    """``value`` as one bare reference (``conn|ap_sep_v1|path``, nothing around it)."""
    if find_references(value):
        return None
    ref = parse_bare(value)
    # parse_bare strips blanks; a bare reference must be the whole value.
    return ref if ref is not None and ref.text == value else None


def references(value: str) -> list[Reference]:
    """The references in ``value``: delimited ones anywhere, or the whole
    value as one bare reference."""
    bare = _bare(value)
    return [bare] if bare is not None else find_references(value)


@dataclass(frozen=True)
class Source:
    """Where a value comes from, for errors: a file and line, or a variable."""

    name: str
    lineno: int | None = None


@dataclass
class Resolved(Generic[K]):
    """Values with their references replaced, and the secret values used
    (for masking; never to be printed)."""

    values: dict[K, str] = field(repr=False)
    secrets: list[str] = field(repr=False)


def resolve_values(
    resolver: Resolver,
    values: Mapping[K, str],
    sources: Mapping[K, Source],
    *,
    audit_name: str,
    on_missing: OnMissing | None,
) -> Resolved[K]:
    """Resolve the references of ``values`` in one round.

    Only values holding a reference are in the result's ``values``. A missing
    secret under ``on_missing`` "keep" leaves its reference as written, under
    "undefined" an empty string. An error is raised with the value's
    :class:`Source` as its template and line.
    """
    found = {key: references(text) for key, text in values.items()}
    found = {key: refs for key, refs in found.items() if refs}
    if not found:
        return Resolved({}, [])
    keys = {ref.key for refs in found.values() for ref in refs}
    looked_up = resolver.lookup(keys, template=audit_name)
    table = {ref: value for ref, (value, _) in looked_up.items()}
    policy = on_missing or resolver.on_missing
    out: dict[K, str] = {}
    for key in found:
        text = values[key]
        try:
            bare = _bare(text)
            new = substitute(text, table, policy) if bare is None else _one(bare, table, policy)
        except SecretsError as exc:
            where = sources[key]
            raise exc.copy(template=where.name, lineno=where.lineno) from None
        out[key] = "" if new is None else str(new)
    secrets = [v for v in table.values() if isinstance(v, str)]
    return Resolved(out, secrets)


def _one(ref: Reference, table: Mapping[tuple[str, str], str | SecretsError], policy: str) -> str:
    """The value of a bare reference, under the missing-secret ``policy``."""
    value = table[ref.key]
    if not isinstance(value, SecretsError):
        return value
    if policy == "error" or not isinstance(value, SecretNotFoundError):
        raise value.copy()
    return ref.text if policy == "keep" else ""
