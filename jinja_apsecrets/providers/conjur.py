"""``cyberark-conjur``: variables from CyberArk Conjur, through its REST API.

A path is a Conjur variable id (``prod/db/password``); the full resource id
``<account>:variable:<id>`` is accepted too. The connection logs in with its
API key (``POST /authn/{account}/{login}/authenticate``) and sends the
returned access token, base64-encoded, as ``Authorization: Token
token="..."``. Tokens live 8 minutes; one is reused until 2 minutes remain,
so a connection logs in once per token lifetime, not per fetch.

The variables of one resolver round are fetched with the batch endpoint,
``GET /secrets?variable_ids=<account>:variable:<id>,...``, split only when
the URL would grow too long. What Conjur's ``SecretsController#batch`` does,
and how the provider answers it:

* it renders the values as JSON, which fails for a value that is not UTF-8
  text (406 ``CONJ00074E``; 500 on servers older than that error) unless the
  request sends ``Accept-Encoding: base64`` (compared to the whole header,
  ignoring case). The provider always sends it; the answer then says
  ``Content-Encoding: base64`` and each value is Ruby's ``Base64.encode64``
  (newline every 60 characters), which is decoded. A server that ignores the
  header answers plain values, taken as they are;
* it is all or nothing. 403 (no body) when the login may not execute one of
  the variables, invisible ones included; 404 naming only the *first*
  variable that is missing or has no value. After a 404 the named variable
  is reported missing and the rest asked again as a batch; after a 403, or a
  406/500, the batch is split in halves until the culprits stand alone
  (``GET /secrets/{account}/variable/{id}``, whose 404/403 is that
  variable's own error). Culprits are remembered and fetched alone in later
  rounds (while they still fail alone), so a failing batch costs its
  extra requests once, not every round.

HTTP goes through ``requests`` (imported when the session is made, not for
validating ids), which the ``conjur`` extra installs: connection pooling,
certificate verification by default, and retries of transient failures
(refused or reset connections, 502/503/504) with jittered backoff, see
:mod:`._http`. Logging in is retried too: Conjur's authenticate only issues
a token. What is still failing after the retries, or any other 5xx, is
SECRET_MANAGER_CONNECTION_FAILED; an answer about a variable (missing,
empty, forbidden) is SECRET_MANAGER_GET_SECRET_FAILED for that variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)
from . import _http
from .base import Document, FetchResult, Field, Locator, Provider, SecretId

if TYPE_CHECKING:
    import requests

__all__ = ["ConjurProvider"]

#: Seconds a Conjur access token is valid.
TOKEN_LIFETIME = 8 * 60.0
#: Seconds before the end of that lifetime when a new token is fetched.
TOKEN_REFRESH_MARGIN = 2 * 60.0
#: The environment variable Conjur's own tools read the API key from.
API_KEY_ENV = "CONJUR_AUTHN_API_KEY"
#: The 404 of a batch names the first missing variable, in the words of
#: ``Errors::Conjur::MissingSecretValue`` (CONJ00076E) or, on servers before
#: it, ``Exceptions::RecordNotFound`` ("Variable 'id' not found in account 'acct'").
_MISSING = (
    re.compile(r"Variable (?P<full>\S.*?) is empty or not found"),
    re.compile(r"Variable '(?P<id>.+?)' not found in account '(?P<account>.+?)'"),
)
#: Batch answers that say "some variable here cannot be served", without which
#: (422: more dynamic secrets than ``dynamic_secrets_per_request_max`` allows).
_UNATTRIBUTED = frozenset({403, 404, 406, 422, 500})


class ConjurProvider(Provider):
    """``cyberark-conjur``: values of Conjur variables.

    ``apiKey`` falls back to ``$CONJUR_AUTHN_API_KEY``. ``caCert`` names a CA
    bundle to trust; ``verify: false`` turns certificate checks off (never
    the default). ``clock`` (seconds, monotonic) is injectable so token
    lifetime tests never sleep.
    """

    id = "cyberark-conjur"
    sdk_modules = ("requests", "urllib3.util.retry")
    fields = {
        "url": Field(str, required=True, doc="Conjur appliance URL, https://conjur.example.com"),
        "organizationAccountName": Field(str, required=True, doc="Conjur account"),
        "loginId": Field(str, required=True, doc="host/... or user login"),
        "apiKey": Field(str, secret=True, doc=f"API key of the login; defaults to ${API_KEY_ENV}"),
        "caCert": Field(str, is_path=True, doc="CA bundle (PEM) to verify the server with"),
        "verify": Field(bool, default=True, doc="verify TLS certificates"),
        "timeout": Field(float, default=30.0, doc="seconds to wait for Conjur"),
        "retries": Field(
            int,
            default=_http.DEFAULT_RETRIES,
            doc="extra attempts after a refused or reset connection or a 502/503/504",
        ),
    }
    # Batches are sized by URL length, not count (see plan()).
    max_batch = 1_000_000
    #: Longest request target (path and query) one batch may use.
    max_url_length = 6000
    path_format = "a Conjur variable id, such as prod/db/password"
    troubleshooting = (
        "Verify the Conjur URL is reachable and its certificate trusted (caCert)",
        "Check organizationAccountName, loginId and apiKey",
        "Ensure the login has execute permission on the variables",
    )

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, options)
        self._clock = clock
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._auth: str | None = None  # the Authorization header value
        self._refresh_at = 0.0
        # Variables that failed a batch and were then served (or refused) alone:
        # fetched alone while they still fail alone. Guarded by _lock.
        self._solo: set[SecretId] = set()
        # Whether the server base64-encodes batch values on request (None: not yet seen).
        self._batch_base64: bool | None = None

    #: Seconds of the first retry's longest wait (see :mod:`._http`); tests set 0.
    retry_backoff = _http.DEFAULT_BACKOFF

    @classmethod
    def validate_options(cls, name: str, options: dict[str, Any]) -> dict[str, Any]:
        out = super().validate_options(name, options)
        parts = urlsplit(out["url"])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SecretValidationError(
                f"connections.{name}.url: expected an http(s) URL, got {out['url']!r}",
                provider=name,
            )
        for key in ("organizationAccountName", "loginId"):
            if not out[key].strip():
                raise SecretValidationError(
                    f"connections.{name}.{key}: must not be empty", provider=name
                )
        if out["retries"] < 0:
            raise SecretValidationError(
                f"connections.{name}.retries: expected 0 or more, got {out['retries']}",
                provider=name,
            )
        return out

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """A variable id: no blanks at the ends, no control characters, no
        empty segments. A full ``<account>:variable:<id>`` is reduced to the id.
        """
        prefix = f"{self.options['organizationAccountName']}:variable:"
        ident = path.removeprefix(prefix)
        bad = (
            not ident
            or ident != ident.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in ident)
            or ident.startswith("/")
            or ident.endswith("/")
            or "//" in ident
        )
        if bad:
            raise self.invalid(path, f"Wrong variable id {path!r}. Should be {self.path_format}")
        return Locator(SecretId(ident))

    # -- fetching ----------------------------------------------------------------

    def plan(self, ids: Sequence[SecretId]) -> list[list[SecretId]]:
        """One batch per round, split only to keep each URL under
        :attr:`max_url_length`. Ids containing a comma get a batch of their
        own: Conjur splits ``variable_ids`` on commas after decoding it.
        """
        batches: list[list[SecretId]] = []
        current: list[SecretId] = []
        length = len("/secrets?variable_ids=")
        for sid in dict.fromkeys(ids):
            if "," in sid.name:
                batches.append([sid])
                continue
            size = len(self._query_id(sid)) + 1
            if current and length + size > self.max_url_length:
                batches.append(current)
                current, length = [], len("/secrets?variable_ids=")
            current.append(sid)
            length += size
        if current:
            batches.append(current)
        return batches

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """Fetch ``ids`` with as few batch requests as Conjur's answers allow
        (see the module docstring). 401 after a fresh login is a connection error.
        """
        unique = list(dict.fromkeys(ids))
        with self._lock:
            alone = [sid for sid in unique if "," in sid.name or sid in self._solo]
        group = [sid for sid in unique if sid not in alone]
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in alone:
            out[sid] = self._fetch_alone(sid)
        self._fetch_group(group, out)
        return out

    def _fetch_group(
        self, ids: list[SecretId], out: dict[SecretId, Document | SecretsError]
    ) -> None:
        """Fill ``out`` for ``ids``: one batch, or fewer ids after a 404, or halves."""
        while ids:
            if len(ids) == 1:
                out[ids[0]] = self._fetch_alone(ids[0])
                return
            resp = self._get(self._batch_target(ids), headers={"Accept-Encoding": "base64"})
            if resp.status_code == 200:
                out.update(self._batch_values(resp, ids))
                return
            if resp.status_code not in _UNATTRIBUTED:
                raise self._unexpected(resp)
            named = self._named_missing(resp, ids) if resp.status_code == 404 else None
            if named is not None:
                # Conjur stops at the first missing variable: that one is
                # answered; ask for the others again.
                out[named] = self._missing(named)
                self._remember(named, solo=True)
                ids = [sid for sid in ids if sid != named]
                continue
            # 403 (no body), 406/500 (a value JSON cannot carry), 422 (too many
            # dynamic secrets): unnamed. Halves find it in about 2*log2(n) requests.
            half = len(ids) // 2
            self._fetch_group(ids[:half], out)
            ids = ids[half:]

    def _fetch_alone(self, sid: SecretId) -> Document | SecretsError:
        """One variable by itself; learns whether it still needs to be alone."""
        result = self._fetch_one(sid)
        # Alone while it fails alone, or while it is binary and the server has
        # not shown that batches can carry binary values (base64).
        binary = isinstance(result, str) and not result.isascii()
        self._remember(
            sid, solo=isinstance(result, SecretsError) or (binary and not self._batch_base64)
        )
        return result

    def _remember(self, sid: SecretId, *, solo: bool) -> None:
        with self._lock:
            if solo:
                self._solo.add(sid)
            else:
                self._solo.discard(sid)

    def _batch_target(self, ids: Sequence[SecretId]) -> str:
        return "/secrets?variable_ids=" + ",".join(self._query_id(sid) for sid in ids)

    def _batch_values(
        self, resp: requests.Response, ids: Sequence[SecretId]
    ) -> dict[SecretId, Document | SecretsError]:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping):
            raise SecretConnectionError(
                "Conjur answered the batch request with something other than a JSON object",
                provider=self.name,
            )
        encoded = resp.headers.get("Content-Encoding", "").strip().lower() == "base64"
        self._batch_base64 = encoded
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            value = data.get(self._full_id(sid))
            if not isinstance(value, str):
                out[sid] = SecretNotFoundError(f"Conjur returned no value for variable {sid.name}")
            elif encoded:
                out[sid] = self._decode(sid, value)
            else:
                out[sid] = value
        return out

    def _decode(self, sid: SecretId, value: str) -> Document | SecretsError:
        """A base64 batch value (Ruby's encode64: newlines every 60 characters)."""
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return SecretConnectionError(
                f"Conjur sent variable {sid.name} in a base64 encoding that does not decode",
                provider=self.name,
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._binary(sid)

    def _named_missing(self, resp: requests.Response, ids: Sequence[SecretId]) -> SecretId | None:
        """The variable a batch 404 names, if it is one of ``ids``."""
        message = _error_message(resp)
        account = self.options["organizationAccountName"]
        for pattern in _MISSING:
            match = pattern.search(message)
            if match is None:
                continue
            groups = match.groupdict()
            if "full" in groups:
                ident = groups["full"].removeprefix(f"{account}:variable:")
            elif groups.get("account") == account:
                ident = groups["id"]
            else:
                continue
            for sid in ids:
                if sid.name == ident:
                    return sid
        return None

    def _missing(self, sid: SecretId) -> SecretNotFoundError:
        return SecretNotFoundError(
            f"Conjur variable {sid.name} not found, empty, or not visible to "
            f"{self.options['loginId']}"
        )

    def _binary(self, sid: SecretId) -> SecretNotFoundError:
        return SecretNotFoundError(f"Conjur variable {sid.name} holds binary data, not UTF-8 text")

    def _fetch_one(self, sid: SecretId) -> Document | SecretsError:
        account = quote(self.options["organizationAccountName"], safe="")
        resp = self._get(f"/secrets/{account}/variable/{quote(sid.name, safe='')}")
        if resp.status_code == 200:
            try:
                return resp.content.decode("utf-8")
            except UnicodeDecodeError:
                return self._binary(sid)
        if resp.status_code == 404:
            return self._missing(sid)
        if resp.status_code == 403:
            return SecretNotFoundError(
                f"Access to Conjur variable {sid.name} denied: "
                f"{self.options['loginId']} lacks execute permission"
            )
        raise self._unexpected(resp)

    # -- connection --------------------------------------------------------------

    def check(self) -> None:
        """Log in now (a live test of URL, account, login and API key)."""
        self._token(force=True)

    def close(self) -> None:
        """Close the HTTP session and forget the token; both come back on use."""
        with self._lock:
            session, self._session = self._session, None
            self._solo.clear()
            self._batch_base64 = None
        with self._token_lock:
            self._auth, self._refresh_at = None, 0.0
        if session is not None:
            session.close()

    # -- HTTP --------------------------------------------------------------------

    def _full_id(self, sid: SecretId) -> str:
        return f"{self.options['organizationAccountName']}:variable:{sid.name}"

    def _query_id(self, sid: SecretId) -> str:
        # Each id URL-encoded; the colons of the resource id and the commas
        # between ids stay as Conjur's documentation writes them.
        return quote(self._full_id(sid), safe=":")

    def _http(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                try:
                    import requests  # noqa: F401 - only to fail early with the install hint
                except ImportError:
                    raise _http.missing_sdk(self.id, "conjur", "requests", self.name) from None
                # Room for every worker of a busy web app without discarding
                # connections; the login (POST) only issues a token, so it is
                # retried like the reads.
                self._session = _http.session(
                    retries=int(self.options["retries"]),
                    pool_size=32,
                    backoff=self.retry_backoff,
                    methods=_http.IDEMPOTENT | {"POST"},
                )
            return self._session

    def _send(self, method: str, target: str, **kwargs: Any) -> requests.Response:
        session = self._http()  # first: a missing requests is reported with its install hint
        import requests

        url = self.options["url"].rstrip("/") + target
        verify: bool | str = self.options["verify"]
        if verify and self.options["caCert"]:
            verify = self.options["caCert"]
        try:
            # verify per request: a session-level value would lose to REQUESTS_CA_BUNDLE.
            return session.request(
                method,
                url,
                verify=verify,
                timeout=self.options["timeout"],
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.SSLError:
            raise SecretConnectionError(
                f"TLS verification of Conjur at {self.options['url']} failed",
                provider=self.name,
                hint="Set caCert to the CA bundle that signed the Conjur certificate",
            ) from None
        except requests.RequestException as exc:
            raise SecretConnectionError(
                f"Cannot reach Conjur at {self.options['url']}: {type(exc).__name__}",
                provider=self.name,
                hint="Verify the Conjur URL is reachable",
            ) from None

    def _token(self, *, force: bool = False) -> str:
        """The Authorization header, logging in when there is none or it is due."""
        with self._token_lock:  # one login at a time; the others reuse its token
            if not force and self._auth is not None and self._clock() < self._refresh_at:
                return self._auth
            issued = self._clock()
            self._auth = self._login()
            self._refresh_at = issued + TOKEN_LIFETIME - TOKEN_REFRESH_MARGIN
            return self._auth

    def _login(self) -> str:
        api_key = self.options["apiKey"] or os.environ.get(API_KEY_ENV)
        if not api_key:
            raise SecretConnectionError(
                f"No Conjur API key: set apiKey or ${API_KEY_ENV}", provider=self.name
            )
        account = quote(self.options["organizationAccountName"], safe="")
        login = quote(self.options["loginId"], safe="")
        resp = self._send(
            "POST",
            f"/authn/{account}/{login}/authenticate",
            data=api_key.encode("utf-8"),
            headers={"Content-Type": "text/plain"},
        )
        if resp.status_code == 401:
            raise SecretConnectionError(
                f"Conjur rejected the login {self.options['loginId']} on account "
                f"{self.options['organizationAccountName']} (401 Unauthorized)",
                provider=self.name,
                hint="Check organizationAccountName, loginId and apiKey",
            )
        if resp.status_code != 200:
            raise self._unexpected(resp)
        if not resp.content.strip():
            raise SecretConnectionError("No token received", provider=self.name)
        if not resp.content.lstrip().startswith(b"{"):  # Conjur's tokens are JSON objects
            raise SecretConnectionError(
                "Conjur answered the login with something other than a token", provider=self.name
            )
        return f'Token token="{base64.b64encode(resp.content).decode("ascii")}"'

    def _get(self, target: str, headers: Mapping[str, str] | None = None) -> requests.Response:
        """GET with the token; on 401 log in again once, then give up."""
        auth = self._token()
        resp = self._send("GET", target, headers={**(headers or {}), "Authorization": auth})
        if resp.status_code != 401:
            return resp
        with self._token_lock:
            if self._auth == auth:  # not renewed by another thread meanwhile
                self._auth = None
        resp = self._send(
            "GET", target, headers={**(headers or {}), "Authorization": self._token()}
        )
        if resp.status_code == 401:
            raise SecretConnectionError(
                "Conjur refused the access token (401 Unauthorized)",
                provider=self.name,
                hint="Check the login is not disabled and its API key not rotated",
            )
        return resp

    def _unexpected(self, resp: requests.Response) -> SecretConnectionError:
        message = _error_message(resp)
        detail = f": {message[:200]}" if message else ""
        return SecretConnectionError(
            f"Conjur answered {resp.status_code} {resp.reason or ''}".rstrip() + detail,
            provider=self.name,
        )


def _error_message(resp: requests.Response) -> str:
    """The message of Conjur's JSON error body ``{"error": {"code", "message"}}``
    (never a value), or ``""``."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    return message if isinstance(message, str) else ""
