"""``cyberark-conjur``: variables from CyberArk Conjur, through its REST API.

A path is a Conjur variable id (``prod/db/password``); the full resource id
``<account>:variable:<id>`` is accepted too. The connection logs in with its
API key (``POST /authn/{account}/{login}/authenticate``) and sends the
returned access token, base64-encoded, as ``Authorization: Token
token="..."``. Tokens live 8 minutes; one is reused until 2 minutes remain,
so a connection logs in once per token lifetime, not per fetch.

The variables of one resolver round are fetched with the batch endpoint,
``GET /secrets?variable_ids=<account>:variable:<id>,...``, split only when
the URL would grow too long. Conjur answers a batch all or nothing: one
missing or forbidden variable fails it with 404 or 403, naming at most the
first culprit. The provider then asks for each variable alone (``GET
/secrets/{account}/variable/{id}``), so each reference gets its own value or
error.

HTTP goes through ``requests``: a well-kept client with connection pooling
and certificate verification by default, already installed with the
``hashicorp`` extra (hvac uses it), so the ``conjur`` extra adds nothing new.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)
from .base import Document, FetchResult, Field, Locator, Provider, SecretId

__all__ = ["ConjurProvider"]

#: Seconds a Conjur access token is valid.
TOKEN_LIFETIME = 8 * 60.0
#: Seconds before the end of that lifetime when a new token is fetched.
TOKEN_REFRESH_MARGIN = 2 * 60.0
#: The environment variable Conjur's own tools read the API key from.
API_KEY_ENV = "CONJUR_AUTHN_API_KEY"


class ConjurProvider(Provider):
    """``cyberark-conjur``: values of Conjur variables.

    ``apiKey`` falls back to ``$CONJUR_AUTHN_API_KEY``. ``caCert`` names a CA
    bundle to trust; ``verify: false`` turns certificate checks off (never
    the default). ``clock`` (seconds, monotonic) is injectable so token
    lifetime tests never sleep.
    """

    id = "cyberark-conjur"
    fields = {
        "url": Field(str, required=True, doc="Conjur appliance URL, https://conjur.example.com"),
        "organizationAccountName": Field(str, required=True, doc="Conjur account"),
        "loginId": Field(str, required=True, doc="host/... or user login"),
        "apiKey": Field(str, secret=True, doc=f"API key of the login; defaults to ${API_KEY_ENV}"),
        "caCert": Field(str, is_path=True, doc="CA bundle (PEM) to verify the server with"),
        "verify": Field(bool, default=True, doc="verify TLS certificates"),
        "timeout": Field(float, default=30.0, doc="seconds to wait for Conjur"),
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
        """Fetch ``ids`` with one batch request; attribute a failed batch
        variable by variable. 401 after a fresh login is a connection error.
        """
        unique = list(dict.fromkeys(ids))
        group = [sid for sid in unique if "," not in sid.name]
        out: dict[SecretId, Document | SecretsError] = {
            sid: self._fetch_one(sid) for sid in unique if "," in sid.name
        }
        if len(group) == 1:
            out[group[0]] = self._fetch_one(group[0])
        elif group:
            out.update(self._fetch_batch(group))
        return out

    def _fetch_batch(self, ids: Sequence[SecretId]) -> FetchResult:
        query = ",".join(self._query_id(sid) for sid in ids)
        resp = self._get(f"/secrets?variable_ids={query}")
        if resp.status_code in (403, 404, 406, 422):
            # Conjur names at most one culprit, so ask for each variable alone.
            return {sid: self._fetch_one(sid) for sid in ids}
        if resp.status_code != 200:
            raise self._unexpected(resp)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping):
            raise SecretConnectionError(
                "Conjur answered the batch request with something other than a JSON object",
                provider=self.name,
            )
        out: dict[SecretId, Document | SecretsError] = {}
        for sid in ids:
            value = data.get(self._full_id(sid))
            if isinstance(value, str):
                out[sid] = value
            else:
                out[sid] = SecretNotFoundError(f"Conjur returned no value for variable {sid.name}")
        return out

    def _fetch_one(self, sid: SecretId) -> Document | SecretsError:
        account = quote(self.options["organizationAccountName"], safe="")
        resp = self._get(f"/secrets/{account}/variable/{quote(sid.name, safe='')}")
        if resp.status_code == 200:
            try:
                return resp.content.decode("utf-8")
            except UnicodeDecodeError:
                return SecretNotFoundError(
                    f"Conjur variable {sid.name} holds binary data, not UTF-8 text"
                )
        if resp.status_code == 404:
            return SecretNotFoundError(
                f"Conjur variable {sid.name} not found, empty, or not visible to "
                f"{self.options['loginId']}"
            )
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
                session = requests.Session()
                # Room for every worker of a busy web app without discarding connections.
                adapter = requests.adapters.HTTPAdapter(pool_maxsize=32)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                self._session = session
            return self._session

    def _send(self, method: str, target: str, **kwargs: Any) -> requests.Response:
        url = self.options["url"].rstrip("/") + target
        verify: bool | str = self.options["verify"]
        if verify and self.options["caCert"]:
            verify = self.options["caCert"]
        try:
            # verify per request: a session-level value would lose to REQUESTS_CA_BUNDLE.
            return self._http().request(
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

    def _get(self, target: str) -> requests.Response:
        """GET with the token; on 401 log in again once, then give up."""
        auth = self._token()
        resp = self._send("GET", target, headers={"Authorization": auth})
        if resp.status_code != 401:
            return resp
        with self._token_lock:
            if self._auth == auth:  # not renewed by another thread meanwhile
                self._auth = None
        resp = self._send("GET", target, headers={"Authorization": self._token()})
        if resp.status_code == 401:
            raise SecretConnectionError(
                "Conjur refused the access token (401 Unauthorized)",
                provider=self.name,
                hint="Check the login is not disabled and its API key not rotated",
            )
        return resp

    def _unexpected(self, resp: requests.Response) -> SecretConnectionError:
        # Conjur's error bodies are JSON {"error": {"code", "message"}}, never values.
        detail = ""
        try:
            body = resp.json()
            message = body["error"]["message"]
            if isinstance(message, str):
                detail = f": {message[:200]}"
        except (ValueError, KeyError, TypeError):
            pass
        return SecretConnectionError(
            f"Conjur answered {resp.status_code} {resp.reason or ''}".rstrip() + detail,
            provider=self.name,
        )
