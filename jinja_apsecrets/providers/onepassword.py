"""``onepassword``: 1Password secret references, through a service account.

A path is a 1Password secret reference, ``op://vault/item/[section/]field``
with the SDK's query attributes (``?attribute=otp``, ``?ssh-format=openssh``).
It is checked offline by the SDK's own validator, so a malformed reference
fails at compile time with the SDK's message under ``VALIDATION``.

All references of one resolver round go to 1Password in a single
``Secrets.resolve_all`` call; its per-reference errors (vault, item, field not
found, too many matches, ...) become ``SECRET_MANAGER_GET_SECRET_FAILED`` for
that reference alone. Authentication failures are
``SECRET_MANAGER_CONNECTION_FAILED``; rate limiting is retried with a bounded
backoff.

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
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from onepassword.client import Client
from onepassword.errors import RateLimitExceededException
from onepassword.secrets import Secrets
from pydantic import ValidationError as _ResponseError

from ..errors import SecretConnectionError, SecretNotFoundError, SecretsError
from .base import Document, FetchResult, Field, Locator, Provider, SecretId

__all__ = ["OnePasswordProvider"]

T = TypeVar("T")

#: How this library introduces itself to 1Password.
INTEGRATION_NAME = "jinja_apsecrets"
#: The environment variable the 1Password tools read the token from.
TOKEN_ENV = "OP_SERVICE_ACCOUNT_TOKEN"
#: Seconds to wait before each retry of a rate-limited call (then give up).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0)

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

    ``retry_delays`` (seconds before each retry of a rate-limited call) and
    ``sleep`` (the coroutine that waits) are injectable so tests never sleep.
    """

    id = "onepassword"
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

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__(name, options)
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._runner_finalizer: weakref.finalize[Any, Any] | None = None
        # The authenticated client, or the login in progress (shared by all).
        self._client_future: concurrent.futures.Future[Any] | None = None

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """Validate ``path`` with the SDK's offline validator.

        The whole reference, query attributes included, is the secret id.
        """
        try:
            Secrets.validate_secret_reference(path)
        except Exception as exc:  # the SDK raises a plain Exception
            message = _sdk_message(exc)
            if "must be" not in message:
                message = f"{message}. Should be {self.path_format}"
            raise self.invalid(path, message) from None
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
        try:
            return await self._retry(
                lambda: Client.authenticate(
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
        try:
            return await self._retry(call)
        except SecretsError:
            raise
        except _ResponseError:
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

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()``, retrying on rate limiting after each of the delays."""
        for delay in self._retry_delays:
            try:
                return await call()
            except RateLimitExceededException:
                await self._sleep(delay)
        try:
            return await call()
        except RateLimitExceededException:
            raise SecretConnectionError(
                f"1Password rate limit exceeded; gave up after {len(self._retry_delays)} retries",
                provider=self.name,
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
