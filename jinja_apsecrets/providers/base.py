"""The provider contract: one small base class behind every secret manager.

A provider turns reference paths into values for one named connection:

* :meth:`Provider.parse_path` validates a path offline (no network, no
  credentials) and returns a :class:`Locator`: *which secret* to fetch
  (:class:`SecretId`) and *which key* of it to print;
* :meth:`Provider.plan` groups secret ids into batches, each one network
  operation (AWS: 20 ids per BatchGetSecretValue; Vault: one path per read);
* :meth:`Provider.fetch` fetches one batch and returns, for each id, either the
  secret's document (a string or a mapping of keys) or a :class:`SecretsError`;
* :meth:`Provider.select` picks the locator's key out of a document;
* :meth:`Provider.check` is the live connection test.

Failures follow one rule, written here and nowhere else (:class:`Failure`):
when the backend *could not answer* (refused, reset, timed out, 5xx,
throttled after the retries, an unparseable or truncated answer, rejected
credentials) the error is ``SECRET_MANAGER_CONNECTION_FAILED``; when it
*answered* that this secret is absent, denied, deleted or undecryptable, it is
``SECRET_MANAGER_GET_SECRET_FAILED``. The difference matters downstream: a
missing-secret policy (``on_missing``) applies only to the second, and
``stale_if_error`` serves the last good value only for the first. Providers
map their SDK's exceptions to a :class:`Failure` (HTTP statuses through
:func:`failure_for_status`) and build the error with :meth:`Provider.failure`.

Providers know nothing of Jinja, caching or policy: the resolver does that.
Construction is cheap and offline; SDK clients are created on first use and
are never pickled (a pickled provider is rebuilt from its name and options).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import importlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)

__all__ = [
    "Document",
    "Failure",
    "FetchResult",
    "Field",
    "Locator",
    "Provider",
    "SecretId",
    "failure_for_status",
]

#: What one fetch returns for one secret: its text, or its keys and values.
Document = Union[str, Mapping[str, Any]]  # noqa: UP007 - a runtime alias on 3.10
#: For each requested id: the document, or the error for that id alone.
FetchResult = Mapping["SecretId", Document | SecretsError]


@dataclass(frozen=True)
class SecretId:
    """One unit of fetching: a secret, and optionally a version of it.

    ``version`` is provider-specific text (``"versionStage=AWSPREVIOUS"``,
    ``"3"``); two references to the same id share one fetch.
    """

    name: str
    version: str | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}?{self.version}"


@dataclass(frozen=True)
class Locator:
    """A parsed reference path: the secret to fetch and the key to print.

    ``key`` is ``None`` when the whole secret is the value.
    """

    secret: SecretId
    key: str | None = None


class Failure(enum.Enum):
    """Why a request to a backend failed, as far as the error code cares.

    The first four mean the backend could not answer: the connection failed,
    whatever the secret. The others mean it answered about this secret.
    """

    #: Connection refused or reset, DNS or TLS failure, timeout.
    UNREACHABLE = "unreachable"
    #: 5xx, or throttled/rate limited even after the retries.
    UNAVAILABLE = "unavailable"
    #: An answer that cannot be parsed: truncated, not the expected format.
    GARBLED = "garbled"
    #: Credentials missing, expired or rejected: nothing can be read.
    CREDENTIALS = "credentials"
    #: The secret, its version or its key does not exist.
    ABSENT = "absent"
    #: The identity may not read this secret (or its KMS key).
    DENIED = "denied"
    #: The secret was deleted or is scheduled for deletion.
    DELETED = "deleted"
    #: The backend holds the secret but cannot decrypt it.
    UNDECRYPTABLE = "undecryptable"
    #: The backend rejected this request for this secret (a bad version id).
    REJECTED = "rejected"

    @property
    def backend_answered(self) -> bool:
        """True when the backend answered about the secret (GET_SECRET_FAILED)."""
        return self not in _NO_ANSWER

    @property
    def error_class(self) -> type[SecretsError]:
        """:class:`SecretNotFoundError` or :class:`SecretConnectionError`."""
        return SecretNotFoundError if self.backend_answered else SecretConnectionError


_NO_ANSWER = frozenset(
    {Failure.UNREACHABLE, Failure.UNAVAILABLE, Failure.GARBLED, Failure.CREDENTIALS}
)


def failure_for_status(status: int) -> Failure:
    """The :class:`Failure` an HTTP status means when a backend gives no better code.

    401 (and a proxy's 407) reject the credentials; 403 denies this secret; 404
    and 410 say it is absent or gone; 408, 429 and every 5xx mean the backend
    could not answer now (a caller's retries are over by the time this is
    asked); other 4xx reject this request. A status that is no error at all
    where an error was expected (1xx-3xx) is an answer we cannot use.
    """
    if status in (401, 407):
        return Failure.CREDENTIALS
    if status == 403:
        return Failure.DENIED
    if status == 404:
        return Failure.ABSENT
    if status == 410:
        return Failure.DELETED
    if status in (408, 429) or 500 <= status <= 599:
        return Failure.UNAVAILABLE
    if 400 <= status <= 499:
        return Failure.REJECTED
    return Failure.GARBLED


@dataclass(frozen=True)
class Field:
    """One configuration field of a provider.

    ``secret`` marks credentials: they are never shown in reprs or errors.
    """

    type: type | tuple[type, ...] = str
    required: bool = False
    default: Any = None
    secret: bool = False
    doc: str = ""
    choices: tuple[Any, ...] = field(default=())
    #: A file path: relative values in a config file are taken relative to it.
    is_path: bool = False


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


class Provider(abc.ABC):
    """Base class of all providers. Subclasses set the class attributes below."""

    #: The provider id used in configuration (``provider: aws``).
    id: ClassVar[str]
    #: Configuration fields beyond the common ones (see :data:`COMMON_FIELDS`).
    fields: ClassVar[Mapping[str, Field]] = {}
    #: Largest number of secret ids one :meth:`fetch` call should receive.
    max_batch: ClassVar[int] = 1
    #: Cache lifetime in seconds when the connection sets none; ``None`` means
    #: the resolver's ``cache.ttl``. Local providers use 0 (always fresh).
    default_ttl: ClassVar[float | None] = None
    #: Path format shown in validation errors.
    path_format: ClassVar[str] = ""
    #: Advice shown when a connection check fails (the spec's troubleshooting).
    troubleshooting: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.options: dict[str, Any] = self.validate_options(name, dict(options or {}))

    # -- configuration -----------------------------------------------------------

    @classmethod
    def check_field_names(cls, name: str, options: Iterable[str], where: str) -> None:
        """Raise VALIDATION (message starting with ``where``) if an option
        name is not one of :attr:`fields`, listing the known ones."""
        unknown = sorted(set(options) - set(cls.fields))
        if unknown:
            known = ", ".join(sorted(cls.fields)) or "none"
            raise SecretValidationError(
                f"{where}: unknown field(s) {', '.join(unknown)} for provider "
                f"{cls.id!r}; known fields: {known}",
                provider=name,
            )

    @classmethod
    def validate_options(cls, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Check options against :attr:`fields`; fill defaults. Raises VALIDATION."""
        out: dict[str, Any] = {}
        cls.check_field_names(name, options, f"connections.{name}")
        for key, spec in cls.fields.items():
            value = options.get(key)
            if value is None or (value == "" and spec.type is not str):
                if spec.required:
                    raise SecretValidationError(
                        f"connections.{name}.{key}: required field is missing "
                        f"(expected {_type_name(spec.type)})",
                        provider=name,
                    )
                out[key] = spec.default
                continue
            if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, spec.type) or (
                isinstance(value, bool) and spec.type in (int, float)
            ):
                raise SecretValidationError(
                    f"connections.{name}.{key}: expected {_type_name(spec.type)}, "
                    f"got {type(value).__name__}",
                    provider=name,
                )
            if spec.choices and value not in spec.choices:
                raise SecretValidationError(
                    f"connections.{name}.{key}: expected one of "
                    f"{', '.join(map(str, spec.choices))}, got {value!r}",
                    provider=name,
                )
            out[key] = value
        return out

    # -- paths -------------------------------------------------------------------

    @abc.abstractmethod
    def parse_path(self, path: str) -> Locator:
        """Validate ``path`` offline and return its locator.

        Raise :class:`SecretValidationError` with a message that says what the
        format should be. Must not touch the network.
        """

    def invalid(self, path: str, message: str) -> SecretValidationError:
        """A VALIDATION error for ``path`` on this connection."""
        return SecretValidationError(message, provider=self.name, path=path)

    def failure(self, kind: Failure, message: str, *, hint: str | None = None) -> SecretsError:
        """The error for a failed request, with the code the one rule gives ``kind``.

        A :class:`SecretConnectionError` (the backend could not answer) carries
        this connection's name and, without a ``hint`` of its own, the first of
        :attr:`troubleshooting`; a :class:`SecretNotFoundError` (the backend
        answered about one secret) leaves ``provider`` and ``path`` to the
        resolver, which knows the reference. ``message`` must hold no value.
        """
        if kind.backend_answered:
            return SecretNotFoundError(message, hint=hint)
        if hint is None and self.troubleshooting:
            hint = self.troubleshooting[0]
        return SecretConnectionError(message, provider=self.name, hint=hint)

    # -- fetching ----------------------------------------------------------------

    def plan(self, ids: Sequence[SecretId]) -> list[list[SecretId]]:
        """Group ids into batches of at most :attr:`max_batch`, one fetch each."""
        size = max(1, self.max_batch)
        items = list(ids)
        return [items[i : i + size] for i in range(0, len(items), size)]

    #: Modules :meth:`fetch` imports lazily (the SDK), imported by :meth:`prepare`.
    sdk_modules: ClassVar[tuple[str, ...]] = ()

    def prepare(self) -> None:
        """Import :attr:`sdk_modules`, on the thread that asks for a round,
        before its fetches go to the resolver's pool.

        An import inside a pool thread can hang a forked process: Ansible forks
        its workers while holding its display lock, which the child's main
        thread then owns, so a pool thread writing an import-time warning to
        stderr (urllib3's, on importing requests) waits forever. Never raises:
        a missing SDK is reported by :meth:`fetch` with its install hint.
        """
        for module in self.sdk_modules:
            if module not in sys.modules:
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)

    @abc.abstractmethod
    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """Fetch one batch. Return a document or an error for every id.

        Errors that concern the whole connection (bad credentials, unreachable
        backend) may be raised as :class:`SecretConnectionError` instead. Either
        way the code follows :class:`Failure`: build errors with :meth:`failure`.
        """

    async def fetch_async(self, ids: Sequence[SecretId]) -> FetchResult:
        """Async :meth:`fetch`, for direct use. The default runs :meth:`fetch`
        in a worker thread.

        The resolver itself always calls :meth:`fetch`, in its own pool, also
        on its async path: a fetch then never depends on a caller's event loop
        (a sync render blocking that loop cannot deadlock on it), so
        :meth:`fetch` must work from any thread, inside a running loop too.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.fetch, ids)

    def select(self, document: Document, locator: Locator) -> str:
        """Pick the locator's key out of a fetched document, as text.

        Strings are returned as they are; numbers, booleans, objects and arrays
        as JSON text. Missing keys raise the spec's "Secret value for key K not
        found". Messages never include the document.
        """
        key = locator.key
        if key is None:
            if isinstance(document, str):
                return document
            return as_text(document)
        if not isinstance(document, Mapping):
            raise SecretNotFoundError(
                f"Secret {locator.secret} is not a JSON object, so it has no key {key}",
            )
        if key not in document:
            raise SecretNotFoundError(f"Secret value for key {key} not found")
        return as_text(document[key])

    # -- connection --------------------------------------------------------------

    @abc.abstractmethod
    def check(self) -> None:
        """Live connection test. Raise :class:`SecretConnectionError` on failure."""

    async def check_async(self) -> None:
        """Async :meth:`check`. The default runs :meth:`check` in a worker thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.check)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and sessions. The provider may be used again later."""

    # -- safety ------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<{type(self).__name__} connection={self.name!r}>"

    def __getstate__(self) -> dict[str, Any]:
        # Rebuilt from name and options: clients, tokens, sessions, caches and
        # locks are left out and recreated on use.
        return {"name": self.name, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["name"], state["options"])


def as_text(value: Any) -> str:
    """A secret value as text: strings as they are, JSON values as JSON text,
    anything else (a YAML date) as ``str()`` gives it."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (Mapping, list, tuple, int, float, bool)):
        # default=str: YAML files may hold dates and the like inside containers.
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)  # a date, say


def split_key(path: str, *, sep: str = ":") -> tuple[str, str] | None:
    """Split ``name:key`` on the first ``sep``; ``None`` if either side is empty."""
    name, found, key = path.partition(sep)
    if not found or not name or not key:
        return None
    return name, key
