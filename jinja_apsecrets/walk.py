"""Nested resolution: find references in dicts, lists and tuples, and rebuild.

The input is never mutated. Containers without references come back as the
same objects; strings are parsed once and resolved values are never parsed
again.

One rule for every way a value comes out (``secret()`` in a template,
``resolve_secrets``, ``Resolver.resolve``): a string a value went into is a
:class:`~jinja_apsecrets.values.SecretText`, a ``str`` whose repr hides it
outside templates and which is never parsed for references again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SecretNotFoundError, SecretsError
from .reference import Reference, find_references
from .values import SecretText

__all__ = ["collect", "conceal_values", "rebuild", "substitute"]


def collect(obj: Any, found: list[Reference] | None = None) -> list[Reference]:
    """Every reference in the strings of ``obj`` (dict values, list and tuple items)."""
    if found is None:
        found = []
    if isinstance(obj, SecretText):
        return found  # a resolved value is never parsed again
    if isinstance(obj, str):
        found.extend(find_references(obj))
    elif isinstance(obj, Mapping):
        for value in obj.values():
            collect(value, found)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            collect(item, found)
    return found


def conceal_values(
    values: Mapping[tuple[str, str], str | SecretsError],
) -> dict[tuple[str, str], SecretText | SecretsError]:
    """``values`` with each value a :class:`SecretText` (errors kept), so no
    frame holding them shows one."""
    return {ref: SecretText(v) if type(v) is str else v for ref, v in values.items()}  # type: ignore[misc]


def substitute(
    text: str, values: Mapping[tuple[str, str], str | SecretsError], on_missing: str
) -> Any:
    """``text`` with its references replaced by ``values``.

    A string that is exactly one reference becomes the value itself (or
    ``None`` under ``on_missing="undefined"``). Failures are decided (and
    raised) before anything is joined.
    """
    refs = find_references(text)
    if not refs:
        return text
    missing = {
        i: _missing(
            ref, value, on_missing, whole=len(refs) == 1 and ref.start == 0 and ref.end == len(text)
        )
        for i, ref in enumerate(refs)
        if isinstance(value := values[ref.key], SecretsError)
    }
    if len(refs) == 1 and refs[0].start == 0 and refs[0].end == len(text):
        return missing[0] if 0 in missing else SecretText(values[refs[0].key])
    out: list[str] = []
    pos = 0
    for i, ref in enumerate(refs):
        out.append(text[pos : ref.start])
        out.append(missing[i] or "" if i in missing else values[ref.key])  # type: ignore[arg-type]
        pos = ref.end
    out.append(text[pos:])
    return SecretText("".join(out))


def _missing(ref: Reference, error: SecretsError, on_missing: str, *, whole: bool) -> str | None:
    if on_missing == "error" or not isinstance(error, SecretNotFoundError):
        raise error.copy()
    if on_missing == "keep":
        return ref.text
    return None if whole else ""


def rebuild(obj: Any, values: Mapping[tuple[str, str], str | SecretsError], on_missing: str) -> Any:
    """A copy of ``obj`` with references resolved; unchanged parts are shared.
    Strings a value went into are :class:`SecretText`."""
    return _rebuild(obj, conceal_values(values), on_missing)


def _rebuild(obj: Any, values: Mapping[tuple[str, str], Any], on_missing: str) -> Any:
    if isinstance(obj, SecretText):
        return obj
    if isinstance(obj, str):
        return substitute(obj, values, on_missing)
    if isinstance(obj, Mapping):
        items = {k: _rebuild(v, values, on_missing) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        return items
    if isinstance(obj, (list, tuple)):
        new = [_rebuild(v, values, on_missing) for v in obj]
        if all(a is b for a, b in zip(new, obj, strict=True)):
            return obj
        return type(obj)(new) if type(obj) in (list, tuple) else new
    return obj
