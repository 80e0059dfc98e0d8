"""The undefined value of a missing secret.

:class:`MissingSecret` is the :class:`jinja2.Undefined` returned for a missing
secret under the lenient ``on_missing="undefined"`` policy: it prints as an
empty string, ``| default(...)`` replaces it, and any other use fails with a
message naming the connection and path (never a value).

``SecretText`` lives in :mod:`jinja_apsecrets.values`; it is re-exported here
for code that imported it from this module.
"""

from __future__ import annotations

from jinja2 import Undefined

from .values import SecretText

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
