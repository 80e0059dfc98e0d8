"""What a lookup tells its caller's hooks, once its answer is known.

A resolver has two optional hooks: ``on_value`` gets every string value a
lookup hands out (the CLI's redactor learns them, to scrub error messages),
and ``audit`` gets one record per reference looked up: time, template,
connection, path, whether the cache answered and the outcome code, never a
value. :func:`tell` calls both for one lookup; a failing audit sink is logged
and never breaks rendering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .answers import Found, Located, Ref
from .cache import Key
from .errors import SecretsError

__all__ = ["Audit", "OnValue", "tell"]

log = logging.getLogger("jinja_apsecrets")

Audit = Callable[[dict[str, Any]], None]
OnValue = Callable[[str], None]


def tell(
    found: Found,
    located: Mapping[Ref, Located],
    hits: Mapping[Key, Any],
    template: str | None,
    *,
    on_value: OnValue | None,
    audit: Audit | None,
) -> None:
    """``on_value`` each value of ``found``, ``audit`` each reference (a
    cache hit if its secret is among ``hits``)."""
    if on_value is not None:
        for value, _ in found.values():
            if isinstance(value, str):
                on_value(value)
    if audit is None:
        return
    for ref, (value, _) in found.items():
        result = located[ref]
        hit = not isinstance(result, SecretsError) and (
            (result[0].provider.name, result[1].secret) in hits
        )
        record = {
            "time": time.time(),
            "template": template,
            "connection": ref[0],
            "path": ref[1],
            "cache": "hit" if hit else "miss",
            "outcome": value.code if isinstance(value, SecretsError) else "ok",
        }
        try:
            audit(record)
        except Exception:  # an audit sink must not break rendering
            log.exception("audit hook failed")
