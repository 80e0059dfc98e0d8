"""Values the extension hands to templates.

:class:`MissingSecret` is the :class:`jinja2.Undefined` returned for a missing
secret under the lenient ``on_missing="undefined"`` policy: it prints as an
empty string, ``| default(...)`` replaces it, and any other use fails with a
message naming the connection and path (never a value).

:class:`SecretText` is a resolved value: a plain ``str`` whose ``repr`` does not
show the value, so it stays out of debugger views and tracebacks' locals. It
also marks the value as resolved, so it is never parsed again.
"""

from __future__ import annotations

from jinja2 import Undefined

__all__ = ["MissingSecret", "SecretText"]


class MissingSecret(Undefined):
    """A secret that could not be resolved, as an undefined value."""

    __slots__ = ("secret_connection", "secret_path")

    def __init__(self, connection: str, path: str, reason: str) -> None:
        super().__init__(
            hint=f"secret {connection}|ap_sep_v1|{path} is missing: {reason}",
            name=f"{connection}|ap_sep_v1|{path}",
        )
        self.secret_connection = connection
        self.secret_path = path

    def __repr__(self) -> str:
        return f"MissingSecret({self.secret_connection!r}, {self.secret_path!r})"


class SecretText(str):
    """A resolved secret value. Behaves as ``str``; its repr hides the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<SecretText len={len(self)}>"
