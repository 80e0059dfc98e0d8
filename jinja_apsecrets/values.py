"""Resolved values as templates and callers get them.

:class:`SecretText` is a resolved value: a ``str`` that is marked as resolved
(so it is never parsed for references again) and whose ``repr`` hides the value
from debuggers, error reporters and tracebacks' frame locals.

Hiding must not change what a template prints. Printing a list, a dict or a
tuple, ``| pprint`` and ``"%r"`` all call ``repr`` on their items, and plain
Jinja2 prints the value there. So the repr shows the value while a template is
running on the calling thread's stack (a frame whose globals hold
``__jinja_template__``), and hides it everywhere else: an error reporter reads
frame locals after the render has failed, when no template frame is on its
stack. A reporter called from inside a running template (a function the
template calls that captures locals) would see the value, as it would see any
other variable of that template.
"""

from __future__ import annotations

import pprint
import sys
from typing import Any

__all__ = ["SecretText", "in_template"]


def in_template() -> bool:
    """Whether a Jinja template is running on this thread's stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if "__jinja_template__" in frame.f_globals:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class SecretText(str):
    """A resolved secret value. Behaves as ``str``; its repr hides the value
    outside templates (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        if in_template():
            return str.__repr__(self)
        return f"<SecretText len={len(self)}>"


def _register_pprint() -> None:
    """Let ``pprint`` wrap a long SecretText as it wraps a long ``str`` (it
    picks a layout by the type's ``__repr__``), inside templates only."""
    dispatch = getattr(pprint.PrettyPrinter, "_dispatch", None)
    as_str = dispatch.get(str.__repr__) if isinstance(dispatch, dict) else None
    if dispatch is None or as_str is None:  # pragma: no cover - another pprint
        return

    def pprint_secret(printer: Any, value: str, stream: Any, *args: Any) -> None:
        if in_template():
            as_str(printer, value, stream, *args)
        else:
            stream.write(repr(value))

    dispatch[SecretText.__repr__] = pprint_secret


def _register_yaml() -> None:
    """Let ``yaml.safe_dump`` write SecretText as the string it is (the safe
    dumper knows only exact types)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - a dependency, but not needed here
        return

    def represent(dumper: Any, data: str) -> Any:
        return dumper.represent_str(str(data))

    for dumper in (yaml.SafeDumper, yaml.Dumper):
        dumper.add_representer(SecretText, represent)


_register_pprint()
_register_yaml()
