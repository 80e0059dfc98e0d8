"""One body for a sync method and its async twin.

Jinja's ``async_variant`` and httpx's Client/AsyncClient keep the logic in one
place behind thin sync and async doors. Here the shared body calls a step that
returns either a value (the sync door's step) or an awaitable (the async
door's), and :func:`then` continues with the result either at once or after
awaiting. The async door awaits what comes back with :func:`settle`. So the
flow stays visible in one function, and only the I/O step differs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, Union, cast

__all__ = ["MaybeAwaitable", "settle", "then"]

T = TypeVar("T")
R = TypeVar("R")

#: A value, or an awaitable of one.
MaybeAwaitable = Union[T, Awaitable[T]]  # noqa: UP007 - a generic runtime alias on 3.10


def then(
    result: MaybeAwaitable[T],
    step: Callable[[T], R],
    fail: Callable[[Exception], R] | None = None,
) -> MaybeAwaitable[R]:
    """``step(result)``: at once for a value, after awaiting an awaitable.

    ``fail``, if given, handles an exception the awaitable raises (a value
    cannot raise: its step already ran).
    """
    if not inspect.isawaitable(result):
        return step(result)
    pending = cast(Awaitable[T], result)

    async def later() -> R:
        try:
            value = await pending
        except Exception as exc:
            if fail is None:
                raise
            return fail(exc)
        return step(value)

    return later()


async def settle(result: MaybeAwaitable[T]) -> T:
    """The value of ``result``, awaited if it is awaitable (the async door)."""
    if inspect.isawaitable(result):
        return await cast(Awaitable[T], result)
    return result
