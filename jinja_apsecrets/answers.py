"""A lookup's answer: each reference's value picked out of its secret's document.

After a round, every located reference has its secret's outcome (a cached
document or an error). :func:`answer` turns them into what callers get: per
reference, its value as text (or the error that names that reference) and
when that value expires; :func:`values_of` and :func:`value_of` pick out what
the resolver's ``get`` doors hand out. Nothing here does I/O or keeps state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from .cache import Key, Outcome
from .errors import SecretNotFoundError, SecretsError
from .fetching import Connection
from .providers.base import Locator

__all__ = ["Found", "Located", "Ref", "about", "answer", "value_of", "values_of"]

Ref = tuple[str, str]
#: A located reference: its connection and locator, or why it cannot be fetched.
Located = Union[tuple[Connection, Locator], SecretsError]  # noqa: UP007 - runtime alias on 3.10
#: What a lookup gives for each reference: its value (or error) and its expiry.
Found = dict[Ref, tuple[Union[str, SecretsError], float]]  # noqa: UP007


def about(error: SecretsError, ref: Ref) -> SecretsError:
    """``error``, naming the reference it is about (a copy if it named another)."""
    if (error.provider, error.path) == ref:
        return error
    return error.copy(provider=ref[0], path=ref[1])


def answer(located: Mapping[Ref, Located], outcomes: Mapping[Key, Outcome], now: float) -> Found:
    """Each reference's value (or error) and expiry; errors expire ``now``."""
    out: Found = {}
    for ref, result in located.items():
        if isinstance(result, SecretsError):
            out[ref] = (result, now)
            continue
        conn, locator = result
        out[ref] = _select(ref, conn, locator, outcomes[(conn.provider.name, locator.secret)], now)
    return out


def _select(
    ref: Ref, conn: Connection, locator: Locator, outcome: Outcome, now: float
) -> tuple[str | SecretsError, float]:
    """The reference's value out of its secret's document, or its error."""
    if isinstance(outcome, SecretsError):
        return about(outcome, ref), now
    try:
        return conn.provider.select(outcome.document, locator), outcome.expires
    except SecretsError as exc:
        return about(exc, ref), now
    except (TypeError, ValueError) as exc:  # a value that is not text
        error = SecretNotFoundError(
            f"Secret value for {ref[1]} cannot be printed as text ({type(exc).__name__})",
            provider=ref[0],
            path=ref[1],
        )
        return error, now


def values_of(found: Found) -> dict[Ref, str | SecretsError]:
    """Each reference's value or error, without expiries."""
    return {ref: value for ref, (value, _) in found.items()}


def value_of(found: Found, ref: Ref) -> str:
    """The value of ``ref`` in ``found``, or a copy of its error raised (a
    found error is shared: each raise gets its own copy)."""
    value = found[ref][0]
    if isinstance(value, SecretsError):
        raise value.copy()
    return value
