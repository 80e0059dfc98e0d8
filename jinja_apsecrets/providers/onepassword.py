"""``onepassword``: 1Password secret references, through a service account.

A path is a 1Password secret reference, ``op://vault/item/[section/]field``
with the SDK's query attributes (``?attribute=otp``, ``?ssh-format=openssh``).
It is checked offline by :func:`reference_error`, which accepts what the SDK's
validator (``Secrets.validate_secret_reference``, in its native core) accepts,
as measured against SDK 0.4.2, and also rejects empty segments
(``op://v//f``, ``op://v/i/f/``), which that validator lets through. It needs
no SDK: the SDK's validator loads the native core, and linting must not.
Names are checked against the SDK's character set (ASCII letters, digits,
``-``, ``_``, ``.`` and spaces): a vault or item whose name has other
characters (accents, other scripts, punctuation) is referenced by its id.

All references of one resolver round go to 1Password in a single
``Secrets.resolve_all`` call, whose response maps each reference, as sent, to
its value or error; its per-reference errors (vault, item, field not found,
too many matches, ...) become ``SECRET_MANAGER_GET_SECRET_FAILED`` for that
reference alone. Authentication failures are
``SECRET_MANAGER_CONNECTION_FAILED``. So is rate limiting, at once: service
account limits are counted per hour (per token) and per day (per account),
so a retry seconds later would only delay the same failure.

The SDK is in beta: ``pyproject.toml`` pins the range this module is tested
with (``onepassword-sdk>=0.4,<0.5``). It is imported when a client is made.

The SDK is async-only. :meth:`OnePasswordProvider.fetch_async` awaits it on
the caller's loop. :meth:`OnePasswordProvider.fetch` runs the same coroutine
on a private event loop in a helper thread, so it also works when called from
inside a running loop (a synchronous render in an async web handler).
Authentication always runs on that private loop, once per connection: a
thread blocked in a synchronous render can then never wait on a login owned
by its own, blocked, loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
)
from . import _http
from .base import Document, FetchResult, Field, Locator, Provider, SecretId

__all__ = ["OnePasswordProvider"]

T = TypeVar("T")

#: How this library introduces itself to 1Password.
INTEGRATION_NAME = "jinja_apsecrets"
#: The environment variable the 1Password tools read the token from.
TOKEN_ENV = "OP_SERVICE_ACCOUNT_TOKEN"
#: The reference format, in the SDK's words.
REFERENCE_FORMAT = "op://<vault>/<item>/[section/]field[?attribute=<attribute-value>]"
#: Characters the SDK's validator allows in names (ASCII only).
_NAME = re.compile(r"[A-Za-z0-9._ -]*\Z")
#: Query parameters the SDK's validator allows, and their values.
_QUERY: Mapping[str, tuple[str, ...]] = {
    "attribute": ("otp", "totp"),
    "ssh-format": ("openssh",),
}

# resolve_all's per-reference error types, as the SDK names them.
_REASONS: Mapping[str, str] = {
    "parsing": "reference could not be parsed",
    "fieldNotFound": "field not found",
    "vaultNotFound": "vault not found or not shared with the service account",
    "tooManyVaults": "more than one vault matches",
    "itemNotFound": "item not found",
    "tooManyItems": "more than one item matches",
    "tooManyMatchingFields": "more than one field matches",
    "noMatchingSections": "section not found",
    "incompatibleTOTPQueryParameterField": "field is not a one-time password",
    "unableToGenerateTotpCode": "one-time password could not be generated",
    "sSHKeyMetadataNotFound": "field is not an SSH key",
    "unsupportedFileFormat": "file is not a text file",
    "incompatibleSshKeyQueryParameterField": "field is not an SSH private key",
    "unableToParsePrivateKey": "private key could not be parsed",
    "unableToFormatPrivateKeyToOpenSsh": "private key could not be converted to OpenSSH",
}


def reference_error(reference: str) -> str | None:
    """Why ``reference`` is not a valid secret reference, or ``None``; offline.

    Accepts what SDK 0.4.2's validator accepts (a parity test checks that),
    except empty or blank segments, which 1Password cannot resolve anyway.
    """
    if not reference.startswith("op://"):
        return 'secret reference is not prefixed with "op://"'
    path, has_query, query = reference[len("op://") :].partition("?")
    if not _NAME.match(path.replace("/", "")) or not _NAME.match(query.replace("=", "")):
        return (
            "invalid character in secret reference: names may only contain ASCII letters, "
            'digits, spaces, "-", "_" and "."; reference a vault or item with other '
            "characters in its name by its id"
        )
    segments = path.split("/")
    key, has_value, value = query.partition("=")
    if not 3 <= len(segments) <= 4 or (has_query and (not has_value or "=" in value)):
        return f'secret reference has invalid format - must be "{REFERENCE_FORMAT}"'
    if has_query and key not in _QUERY:
        return f"secret reference has invalid query parameter {key!r}: use " + " or ".join(_QUERY)
    if has_query and value not in _QUERY[key]:
        return f"secret reference has invalid value {value!r} for {key}: use " + " or ".join(
            _QUERY[key]
        )
    empty = [
        n
        for n, s in zip(("vault", "item", "section", "field"), _named(segments), strict=True)
        if not s.strip()
    ]
    if empty:
        return f'secret reference has an empty {empty[0]} name - must be "{REFERENCE_FORMAT}"'
    return None


def _named(segments: list[str]) -> list[str]:
    """Segments in vault, item, section, field order ('' for a missing section)."""
    if len(segments) == 3:
        return [segments[0], segments[1], "x", segments[2]]
    return segments


def _sdk() -> Any:
    """The SDK's modules, imported on first use (see the module docstring)."""
    try:
        import onepassword.client
        import onepassword.errors
        import pydantic
    except ImportError:
        raise _http.missing_sdk("onepassword", "onepassword", "onepassword-sdk") from None
    return onepassword, pydantic


def _library_version() -> str:
    """This library's version: installed metadata, else ``__version__``, else "unknown"."""
    try:
        return version("jinja-apsecrets")
    except PackageNotFoundError:
        package = sys.modules[__name__.rsplit(".", 2)[0]]
        return str(getattr(package, "__version__", "unknown"))


def _sdk_message(exc: BaseException, *secrets: str | None) -> str:
    """The SDK's message for ``exc`` with any credential masked.

    The SDK's messages name what failed, not values; masking is a second
    guard in case a future version echoes its input.
    """
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _LoopThread:
    """A private event loop running in a daemon thread.

    Holds no reference to the provider, so a provider that is garbage
    collected stops its loop through a ``weakref.finalize``.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Cancel what is left, so callers blocked in run() wake up.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and wait for it from any thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("cannot wait for the 1Password loop from inside it")
        return self.submit(coro).result()

    def stop(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


class OnePasswordProvider(Provider):
    """``onepassword``: values from 1Password through a service account.

    ``serviceAccountToken`` falls back to ``$OP_SERVICE_ACCOUNT_TOKEN`` when
    unset. One authenticated SDK client per connection is created on first
    use and reused by every thread and event loop; :meth:`close` releases it.

    Rate limiting is not retried (see the module docstring).
    """

    id = "onepassword"
    sdk_modules = ("onepassword.client", "onepassword.errors", "pydantic")
    fields = {
        "serviceAccountToken": Field(
            str, secret=True, doc=f"service account token; defaults to ${TOKEN_ENV}"
        ),
    }
    # One resolve_all call takes every reference of a round (see plan()).
    max_batch = 1_000_000
    path_format = "op://vault/item/[section/]field"
    troubleshooting = (
        "Verify service account token is valid",
        "Check service account has vault access",
        "Ensure token hasn't expired",
    )

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._runner_finalizer: weakref.finalize[Any, Any] | None = None
        # The authenticated client, or the login in progress (shared by all).
        self._client_future: concurrent.futures.Future[Any] | None = None

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """Validate ``path`` offline (:func:`reference_error`, no SDK).

        The whole reference, query attributes included, is the secret id.
        """
        message = reference_error(path)
        if message is not None:
            if "must be" not in message:
                message = f"{message}. Should be {self.path_format}"
            raise self.invalid(path, message)
        return Locator(SecretId(path))

    # -- fetching ----------------------------------------------------------------

    def plan(self, ids: Sequence[SecretId]) -> list[list[SecretId]]:
        """Every id in one batch: one ``resolve_all`` call per round."""
        items = list(dict.fromkeys(ids))
        return [items] if items else []

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """Resolve ``ids`` on the private loop; safe inside a running loop."""
        return self._loop_thread().run(self._resolve_all(ids))

    async def fetch_async(self, ids: Sequence[SecretId]) -> FetchResult:
        """Resolve ``ids`` by awaiting the SDK on the caller's loop."""
        return await self._resolve_all(ids)

    async def _resolve_all(self, ids: Sequence[SecretId]) -> FetchResult:
        refs = list(dict.fromkeys(sid.name for sid in ids))
        if not refs:
            return {}
        client = await self._client()
        response = await self._call(client, lambda: client.secrets.resolve_all(refs))
        # Keyed by each reference exactly as sent (ResolveAllResponse's
        # individual_responses: Dict[str, Response[ResolvedReference, ...]]).
        results = response.individual_responses
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            item = results.get(sid.name)
            if item is not None and item.error is None and item.content is not None:
                out[sid] = item.content.secret
            else:
                error = None if item is None else item.error
                out[sid] = SecretNotFoundError(_describe(error, sid.name))
        return out

    # -- connection --------------------------------------------------------------

    def check(self) -> None:
        """Log in (once per connection) and list the vaults the token can read."""
        self._loop_thread().run(self._check())

    async def check_async(self) -> None:
        await self._check()

    async def _check(self) -> None:
        client = await self._client()
        vaults = await self._call(client, lambda: client.vaults.list())
        if not vaults:
            raise SecretConnectionError(
                "The 1Password service account has access to no vault",
                provider=self.name,
                hint="Check service account has vault access",
            )

    def close(self) -> None:
        """Release the SDK client and stop the private loop; both come back on use."""
        with self._lock:
            future, self._client_future = self._client_future, None
            runner, self._runner = self._runner, None
            finalizer, self._runner_finalizer = self._runner_finalizer, None
        if future is not None:
            _release(future)
        if finalizer is not None:
            finalizer.detach()
        if runner is not None:
            runner.stop()

    # -- internals ---------------------------------------------------------------

    def _loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = _LoopThread(f"jinja-apsecrets-1password-{self.name}")
                self._runner_finalizer = weakref.finalize(self, self._runner.stop)
            return self._runner

    async def _client(self) -> Any:
        """The shared client; the first caller starts the login on the private loop."""
        runner = self._loop_thread()
        with self._lock:
            future = self._client_future
            if future is None:
                future = self._client_future = runner.submit(self._authenticate())
        try:
            # shield: a cancelled render must not cancel a login others wait for.
            return await asyncio.shield(asyncio.wrap_future(future))
        except BaseException:
            if future.done() and (future.cancelled() or future.exception() is not None):
                self._forget(future)
            raise

    async def _authenticate(self) -> Any:
        token = self._token()
        if not token:
            raise SecretConnectionError(
                f"No 1Password service account token: set serviceAccountToken or ${TOKEN_ENV}",
                provider=self.name,
                hint="Verify service account token is valid",
            )
        onepassword, _ = _sdk()
        try:
            return await self._once(
                lambda: onepassword.client.Client.authenticate(
                    auth=token,
                    integration_name=INTEGRATION_NAME,
                    integration_version=_library_version(),
                )
            )
        except SecretsError:
            raise
        except Exception as exc:
            raise SecretConnectionError(
                f"1Password authentication failed: {_sdk_message(exc, token)}",
                provider=self.name,
                hint="Verify service account token is valid and hasn't expired",
            ) from None

    async def _call(self, client: Any, call: Callable[[], Awaitable[T]]) -> T:
        """One SDK call with an authenticated client; failures of the whole call
        are connection errors, and the client is dropped so the next call logs in again.
        """
        _, pydantic = _sdk()
        try:
            return await self._once(call)
        except SecretsError:
            raise
        except pydantic.ValidationError:
            # Its text quotes the response, which holds secret values.
            raise SecretConnectionError(
                "1Password returned a response this SDK version cannot read",
                provider=self.name,
            ) from None
        except Exception as exc:
            self._forget_client(client)
            raise SecretConnectionError(
                f"1Password request failed: {_sdk_message(exc, self._token())}",
                provider=self.name,
            ) from None

    async def _once(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()``; rate limiting fails at once, naming the limits."""
        onepassword, _ = _sdk()
        try:
            return await call()
        except onepassword.errors.RateLimitExceededException as exc:
            raise SecretConnectionError(
                f"1Password rate limit exceeded ({_sdk_message(exc, self._token())}): "
                "service accounts have an hourly limit per token and a daily limit per "
                "account, so retrying now would fail the same way",
                provider=self.name,
                hint="`op service-account ratelimit` shows the usage; spread reads over "
                "more tokens, cache longer (cache.ttl), or wait for the limit to reset",
            ) from None

    def _token(self) -> str | None:
        token: str | None = self.options["serviceAccountToken"] or os.environ.get(TOKEN_ENV)
        return token

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._client_future is future:
                self._client_future = None

    def _forget_client(self, client: Any) -> None:
        # Dropped, not released: other calls may still be using it.
        with self._lock:
            future = self._client_future
            if future is None or not future.done() or future.cancelled():
                return
            if future.exception() is None and future.result() is client:
                self._client_future = None


def _describe(error: Any, reference: str) -> str:
    """A message for one failed reference; never the SDK's free text but for parsing."""
    kind = getattr(error, "type", None)
    kind = str(getattr(kind, "value", kind)) if kind is not None else None
    if kind is None:
        return f"1Password returned no value for {reference}"
    reason = _REASONS.get(kind, f"reference cannot be resolved ({kind})")
    if kind == "parsing" and getattr(error, "message", None):
        reason = f"{reason}: {error.message}"
    return f"1Password {reason}: {reference}"


def _release(future: concurrent.futures.Future[Any]) -> None:
    """Free the SDK core's memory for a client, once.

    ``Client.authenticate`` registers the release on the class, not the
    instance, so it would otherwise only run at interpreter exit.
    """
    if not future.done() or future.cancelled() or future.exception() is not None:
        return
    finalizer = getattr(future.result(), "_finalizer", None)
    if callable(finalizer):
        with contextlib.suppress(Exception):  # releasing is best effort
            finalizer()
