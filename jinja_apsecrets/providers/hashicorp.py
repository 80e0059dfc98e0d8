"""``hashicorp``: KV v1 and v2 secrets from HashiCorp Vault or OpenBao, through hvac.

Path grammar (the spec's): ``mount/data/path/key`` on a KV v2 mount,
``mount/path/key`` on a KV v1 mount, and ``?version=N`` after either form on
KV v2. The last segment is always the key; everything before it is the secret
path, read once however many of its keys a template uses.

Which part of the secret path is the mount, and which KV version it runs, is
not guessed from the text: mounts may have slashes in their names
(``team/kv``), and ``data`` may be a folder on a KV v1 mount. The first read
below a mount asks the server (``sys/internal/ui/mounts/<path>``, which any
token with access below the mount may read; ``sys/mounts`` as a fallback) and
the answer is cached per mount. Vault refuses nested mounts, so the longest
cached prefix is the mount.

Offline, the mount and its KV version are unknown unless the connection says
so: ``kvVersion: 2`` (every mount of the connection; the mount is then the
first path segment) or ``mounts: {team/kv: 2, kv1: 1}`` (per mount, longest
prefix wins). With them :meth:`VaultProvider.parse_path` rejects a KV v2 path
without ``data/`` before any request; without them
:meth:`VaultProvider.offline_warnings` says that it cannot know. At render
time the server's answer wins, except that mounts named in ``mounts`` are
taken at their word (no lookup request).

Authentication: AppRole when ``roleId`` and ``secretId`` are set, otherwise a
token (``token``, else ``VAULT_TOKEN``). The token is shared by every thread,
renewed while renewable, and replaced by one new login when it expires or a
read is refused because it is no longer valid. AppRole secret ids may be
limited to a number of uses (``secret_id_num_uses``, 1 for a "single-use"
id): each login spends one, so a single-use id serves one login, and the
connection fails with CONNECTION_FAILED when its token expires. With
``agent: true`` the connection sends no token at all: a Vault Agent or
OpenBao Agent at ``url`` (``api_proxy { use_auto_auth_token = true }``) adds
its own auto-auth token: one login per host, no credentials in the processes.
Its ``cache`` keeps tokens and leased secrets; KV reads carry no lease and are
forwarded to the server (measured with OpenBao 2.7), so this provider's own
cache still matters.

Transient failures (refused or reset connections, 502/503/504) are retried
``retries`` times with jittered backoff (see :mod:`._http`); then, as any
failure of the server to answer, they are CONNECTION_FAILED. An answer about
the secret (absent, denied, deleted, destroyed) is GET_SECRET_FAILED.

hvac and requests are imported when the client is created, never for
validating paths, so offline checks need neither.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)
from . import _http
from .base import Document, FetchResult, Field, Locator, Provider, SecretId

if TYPE_CHECKING:
    import hvac

__all__ = ["VaultProvider"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"version=([1-9][0-9]{0,9})\Z")
#: Connecting is quick or hopeless: a server that is down fails fast.
_CONNECT_TIMEOUT = 3.0
#: Connections kept per host; above the resolver's usual per-connection bound.
_POOL_SIZE = 32
#: Renew a renewable token once less than this share of its lease is left.
_RENEW_SHARE = 1 / 3
_KV_TYPES = ("kv", "generic")
#: Hints for a failed connection, by how the connection authenticates.
_HINTS: Mapping[str, tuple[str, ...]] = {
    "approle": (
        "Verify Vault URL is accessible",
        "Check AppRole credentials are valid (a secret id may be expired, or used up if "
        "it was issued with secret_id_num_uses)",
        "Ensure policy grants sys/mounts read permission",
    ),
    "token": (
        "Verify Vault URL is accessible",
        "Check the token (token, else VAULT_TOKEN) is valid: not expired or revoked",
        "Ensure policy grants sys/mounts read permission",
    ),
    "agent": (
        "Verify the Vault/OpenBao Agent listens at the connection's url",
        "Check the agent's auto_auth has a token and api_proxy sets use_auto_auth_token = true",
        "Ensure the agent token's policy grants sys/mounts read permission",
    ),
}


def _errors() -> Any:
    """``hvac.exceptions``, imported on first use (see the module docstring)."""
    try:
        import hvac.exceptions
    except ImportError:
        raise _http.missing_sdk("hashicorp", "hashicorp", "hvac") from None
    return hvac.exceptions


@dataclass(frozen=True)
class _Mount:
    """A secrets engine mount: ``path`` ends with ``/``; ``kv`` is 1, 2 or 0 (not KV)."""

    path: str
    type: str
    kv: int


class _Denied(Exception):
    """A 403 on some request of a read; the caller decides what it means."""


class _MissingData(dict[str, Any]):
    """The document of a KV v2 path written without ``data/``.

    :meth:`VaultProvider.select` turns it into a VALIDATION error naming the
    corrected path with the reference's own key, which :meth:`fetch` (given
    secret ids, not keys) could not name.
    """

    def __init__(self, mount: str, rest: str, version: str | None) -> None:
        super().__init__()
        self.mount, self.rest, self.version = mount, rest, version

    def suggestion(self, key: str | None) -> str:
        query = f"?{self.version}" if self.version else ""
        return f"{self.mount}data/{self.rest}/{key}{query}"


class VaultProvider(Provider):
    """HashiCorp Vault / OpenBao KV secrets. See the module docstring."""

    id = "hashicorp"
    sdk_modules = ("hvac", "hvac.exceptions", "requests", "urllib3.util.retry")
    fields = {
        "url": Field(
            str, doc="the server address, e.g. https://vault.example.com:8200; else VAULT_ADDR"
        ),
        "roleId": Field(str, doc="AppRole role id (with secretId)"),
        "secretId": Field(str, secret=True, doc="AppRole secret id (with roleId)"),
        "namespace": Field(str, doc="Vault Enterprise / OpenBao namespace, e.g. team-a"),
        "token": Field(
            str, secret=True, doc="a Vault token when not using AppRole; else VAULT_TOKEN"
        ),
        "caCert": Field(
            str, is_path=True, doc="CA bundle (PEM) that signed the server's certificate"
        ),
        "verify": Field(bool, default=True, doc="verify the server's TLS certificate"),
        "appRoleMount": Field(
            str, default="approle", doc="where the AppRole auth method is mounted"
        ),
        "timeout": Field(float, default=10.0, doc="seconds to wait for a response"),
        "retries": Field(
            int,
            default=_http.DEFAULT_RETRIES,
            doc="extra attempts after a refused or reset connection or a 502/503/504",
        ),
        "agent": Field(
            bool,
            default=False,
            doc="url is a Vault/OpenBao Agent whose api_proxy adds its auto-auth token: "
            "send no token",
        ),
        "kvVersion": Field(
            int, choices=(1, 2), doc="KV version of the mounts, for exact offline checks"
        ),
        "mounts": Field(
            dict, doc="KV version per mount path, e.g. {secret: 2, team/kv: 2, legacy: 1}"
        ),
    }
    max_batch = 1  # Vault has no batch read: one read per secret path.
    path_format = "mount/data/path/key (KV v2) or mount/path/key (KV v1), optionally ?version=N"
    # The spec's hints; an instance replaces them with its auth method's (_HINTS).
    troubleshooting = _HINTS["approle"]

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        self.url: str = (opts["url"] or os.environ.get("VAULT_ADDR") or "").rstrip("/")
        if not self.url:
            raise SecretValidationError(
                f"connections.{name}.url: required field is missing (or set VAULT_ADDR)",
                provider=name,
            )
        if not self.url.startswith(("http://", "https://")):
            raise SecretValidationError(
                f"connections.{name}.url: expected an address starting with http:// or https://",
                provider=name,
            )
        if opts["agent"]:
            extra = [key for key in ("roleId", "secretId", "token") if opts[key]]
            if extra:
                raise SecretValidationError(
                    f"connections.{name}: agent is true, so the agent authenticates: "
                    f"remove {', '.join(extra)}",
                    provider=name,
                )
        if bool(opts["roleId"]) != bool(opts["secretId"]):
            given, absent = ("roleId", "secretId") if opts["roleId"] else ("secretId", "roleId")
            raise SecretValidationError(
                f"connections.{name}: {given} is set but {absent} is not; AppRole needs both",
                provider=name,
            )
        #: The clock for token lifetimes; tests may replace it.
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()  # client and token state
        self._mount_lock = threading.Lock()  # mount discovery, one at a time
        self._client: hvac.Client | None = None
        self._token: str | None = None
        self._deadline: float | None = None  # None: the token does not expire
        self._lease = 0.0
        self._renewable = False
        self._mounts: dict[str, _Mount] = {}
        # The base class declares hints per provider; a Vault connection's
        # depend on how it authenticates, so the instance shadows them.
        self.__dict__["troubleshooting"] = _HINTS[self.auth_method]

    @classmethod
    def validate_options(cls, name: str, options: dict[str, Any]) -> dict[str, Any]:
        out = super().validate_options(name, options)
        if out["retries"] < 0:
            raise SecretValidationError(
                f"connections.{name}.retries: expected 0 or more, got {out['retries']}",
                provider=name,
            )
        mounts = out["mounts"]
        if mounts is not None:
            for key, value in mounts.items():
                path = key.strip("/") if isinstance(key, str) else ""
                if not path or isinstance(value, bool) or value not in (1, 2):
                    raise SecretValidationError(
                        f"connections.{name}.mounts: expected mount paths mapped to "
                        f"KV version 1 or 2, got {key!r}: {value!r}",
                        provider=name,
                    )
            out["mounts"] = _mount_table(mounts)
        return out

    @property
    def auth_method(self) -> str:
        """``"agent"``, ``"approle"`` or ``"token"``: how this connection authenticates."""
        if self.options["agent"]:
            return "agent"
        return "approle" if self.options["roleId"] else "token"

    @property
    def uses_approle(self) -> bool:
        """AppRole login (roleId and secretId set), else a fixed token or an agent."""
        return self.auth_method == "approle"

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """Split ``path`` into secret path, key and version; offline.

        The mount and KV version are learnt at fetch time, so a KV v2 path
        without ``data/`` is reported then.
        """
        base, has_query, query = path.partition("?")
        version = None
        if has_query:
            match = _VERSION.match(query)
            if match is None:
                raise self.invalid(
                    path, f"Wrong version {query!r}: only ?version=N with N >= 1 is supported"
                )
            version = f"version={match.group(1)}"
        parts = base.split("/")
        if len(parts) < 3 or not all(parts):
            raise self.invalid(path, f"Wrong key format. Should be {self.path_format}")
        if any(p in (".", "..") for p in parts):
            raise self.invalid(path, f"'.' and '..' are not allowed in Vault paths: {base}")
        locator = Locator(SecretId("/".join(parts[:-1]), version), parts[-1])
        self._check_kv_offline(path, locator)
        return locator

    def configured_mount(self, secret_path: str) -> tuple[str, int] | None:
        """The mount (with its trailing ``/``) and KV version the configuration
        gives for ``secret_path``, or ``None`` if it says nothing; offline.

        ``mounts`` entries win (longest prefix); else ``kvVersion`` applies to
        the first segment, the usual one-segment mount name.
        """
        # Normalized again: an offline linter may fill options without
        # validate_options (when a setting it needs comes from the environment).
        mounts = _mount_table(self.options.get("mounts"))
        hits = [m for m in mounts if (secret_path + "/").startswith(m)]
        if hits:
            best = max(hits, key=len)
            return best, mounts[best]
        version = self.options.get("kvVersion")
        if version is None:
            return None
        return secret_path.split("/", 1)[0] + "/", int(version)

    def offline_warnings(self, path: str) -> list[str]:
        """What offline validation of a valid ``path`` cannot know.

        Empty when ``kvVersion`` or ``mounts`` covers the path's mount; else
        one warning that the KV version (so whether ``data/`` is right) is
        unknown until the server is asked. Raises like :meth:`parse_path`.
        """
        locator = self.parse_path(path)
        if self.configured_mount(locator.secret.name) is not None:
            return []
        return [
            "KV version unknown offline: whether this path needs data/ after the mount is "
            f"known only to the server; set kvVersion (1 or 2) or mounts in connection "
            f"{self.name} to check it offline"
        ]

    def _check_kv_offline(self, path: str, locator: Locator) -> None:
        configured = self.configured_mount(locator.secret.name)
        if configured is None:
            return
        mount, kv = configured
        rest = locator.secret.name[len(mount) :]
        version = locator.secret.version
        if kv == 1:
            if version:
                raise self.invalid(
                    path, f"?{version} needs a KV v2 mount; {mount} is KV version 1 (configured)"
                )
            return
        if rest == "data" or not rest.startswith("data/"):
            fixed = f"{mount}data/{rest}/{locator.key}" + (f"?{version}" if version else "")
            raise self.invalid(
                path,
                f"Mount {mount} is KV version 2 (configured): paths need data/ after the "
                f"mount: did you mean {fixed}?",
            )

    def select(self, document: Document, locator: Locator) -> str:
        if isinstance(document, _MissingData):
            raise SecretValidationError(
                f"Mount {document.mount} is KV version 2: paths need data/ after the mount: "
                f"did you mean {document.suggestion(locator.key)}?"
            )
        return super().select(document, locator)

    # -- client and token ----------------------------------------------------------

    @property
    def client(self) -> hvac.Client:
        """The hvac client, created on first use (no network)."""
        with self._lock:
            return self._client_locked()

    #: Seconds of the first retry's longest wait (see :mod:`._http`); tests set 0.
    retry_backoff = _http.DEFAULT_BACKOFF

    def _client_locked(self) -> hvac.Client:
        if self._client is None:
            _errors()  # hvac is installed, or a VALIDATION error with the pip command
            import hvac

            opts = self.options
            verify: bool | str = bool(opts["verify"])
            if verify and opts["caCert"]:
                verify = os.path.expanduser(opts["caCert"])
            # Logins (POST) are not retried after the request was sent: a
            # secret id limited in uses would be spent by a login whose answer was lost.
            session = _http.session(
                retries=int(opts["retries"]), pool_size=_POOL_SIZE, backoff=self.retry_backoff
            )
            session.verify = verify  # hvac prefers a given session's own setting
            timeout = float(opts["timeout"])
            self._client = hvac.Client(
                url=self.url,
                token="",  # not VAULT_TOKEN behind our back: set after login
                verify=verify,
                timeout=(min(_CONNECT_TIMEOUT, timeout), timeout),
                session=session,
                namespace=opts["namespace"] or None,
            )
        return self._client

    def _ensure_token(self) -> str:
        """A token believed valid: log in, renew or log in again as needed."""
        with self._lock:
            self._client_locked()
            if self._token is None:
                self._login_locked()
            elif self._deadline is not None:
                left = self._deadline - self.clock()
                if left <= 0:
                    log.debug("connection %s: token expired, logging in again", self.name)
                    self._login_locked()
                elif self._renewable and left < self._lease * _RENEW_SHARE:
                    self._renew_locked()
            assert self._token is not None
            return self._token

    def _login_locked(self) -> None:
        client = self._client_locked()
        hx = _errors()
        self._token = None
        client.token = ""
        started = self.clock()
        if self.options["agent"]:
            # No token: the agent's api_proxy adds its auto-auth token.
            self._set_token("", None, None, started)
            return
        if self.uses_approle:
            try:
                response = client.auth.approle.login(
                    role_id=self.options["roleId"],
                    secret_id=self.options["secretId"],
                    mount_point=self.options["appRoleMount"],
                    use_token=False,
                )
            except (hx.InvalidRequest, hx.Forbidden, hx.Unauthorized, hx.InvalidPath) as exc:
                raise self._connection_error(
                    f"No token received: AppRole login failed ({_reason(exc)}); a secret id "
                    "issued with secret_id_num_uses is used up after that many logins"
                ) from None
            auth = response.get("auth") if isinstance(response, Mapping) else None
            token = auth.get("client_token") if isinstance(auth, Mapping) else None
            if not token or not isinstance(auth, Mapping):
                raise self._connection_error("No token received from the AppRole login")
            lease, renewable = auth.get("lease_duration"), auth.get("renewable")
            log.debug("connection %s: logged in with AppRole", self.name)
        else:
            token = self.options["token"] or os.environ.get("VAULT_TOKEN")
            if not token:
                raise self._connection_error(
                    "No token received: set roleId and secretId, or token, or VAULT_TOKEN"
                )
            # A given token is used as it is, with no lookup first: that would
            # cost a round trip before the first read. A dead token shows up as
            # a 403, which _retry_after_denial tells apart from a policy denial.
            lease, renewable = None, None
        self._set_token(str(token), lease, renewable, started)

    def _set_token(self, token: str, lease: Any, renewable: Any, started: float) -> None:
        self._token = token
        self._client_locked().token = token
        self._lease = float(lease or 0)
        self._deadline = started + self._lease if self._lease > 0 else None
        self._renewable = bool(renewable) and self._deadline is not None

    def _renew_locked(self) -> None:
        client = self._client_locked()
        started = self.clock()
        try:
            auth = client.auth.token.renew_self()["auth"]
        except _errors().VaultError as exc:
            log.debug("connection %s: renewal refused (%s)", self.name, _reason(exc))
            self._renewable = False  # log in again when it expires
            return
        previous = self._lease
        assert self._token is not None
        self._set_token(self._token, auth.get("lease_duration"), auth.get("renewable"), started)
        if self._lease < previous:  # capped by max TTL: renewing again gains nothing
            self._renewable = False
        log.debug("connection %s: token renewed", self.name)

    def _token_alive(self) -> bool:
        try:
            self._client_locked().auth.token.lookup_self()
        except _errors().Forbidden:
            return False
        return True

    def _retry_after_denial(self, used: str) -> bool:
        """After a 403: ``True`` if a fresh token is in place to retry with."""
        with self._lock:
            if self._token != used:
                return True  # another thread logged in meanwhile
            if self._token_alive():
                return False  # the token is fine: its policies refuse the path
            if self.options["agent"]:
                raise self._connection_error(
                    "Vault rejected the agent's token: the agent has no valid auto-auth token"
                )
            if not self.uses_approle:
                raise self._connection_error(
                    "Vault rejected the token: it is expired, revoked or unknown"
                )
            log.debug("connection %s: token no longer valid, logging in again", self.name)
            self._login_locked()
            return True

    def _authorized(self, op: Callable[[], Document]) -> Document:
        """Run ``op`` with a valid token; on a 403 for a dead token log in once and retry."""
        used = self._ensure_token()
        try:
            return op()
        except _Denied as denied:
            if not self._retry_after_denial(used):
                raise SecretNotFoundError(str(denied)) from None
        try:
            return op()
        except _Denied as denied:
            raise SecretNotFoundError(str(denied)) from None

    # -- mounts --------------------------------------------------------------------

    def _mount_for(self, path: str) -> _Mount:
        cached = self._cached_mount(path)
        if cached is not None:
            return cached
        # Mounts named in the configuration are taken at their word: no
        # discovery request (kvVersion alone only guesses the mount's name).
        mounts = _mount_table(self.options["mounts"])
        named = _longest_prefix((_Mount(m, "kv", kv) for m, kv in mounts.items()), path)
        if named is not None:
            return named
        with self._mount_lock:
            cached = self._cached_mount(path)
            if cached is None:
                cached = self._discover_mount(path)
                if cached.path.endswith("/"):
                    # Copy on write: readers iterate without the lock.
                    self._mounts = {**self._mounts, cached.path: cached}
            return cached

    def _cached_mount(self, path: str) -> _Mount | None:
        return _longest_prefix(self._mounts.values(), path)

    def _discover_mount(self, path: str) -> _Mount:
        adapter = self.client.adapter
        hx = _errors()
        try:
            response = adapter.get(f"/v1/sys/internal/ui/mounts/{quote(path)}")
            mount = _mount_of(response["data"])
            if mount.path and (path + "/").startswith(mount.path):
                return mount
        except (hx.Forbidden, hx.InvalidPath):
            pass  # nothing mounted there, no access below it, or an old server
        try:
            response = adapter.get("/v1/sys/mounts")
        except hx.Forbidden:
            raise _Denied(
                f"Permission denied for path {path}: the token's policies grant nothing "
                "below its mount (or nothing is mounted there), and it may not read sys/mounts"
            ) from None
        table = response.get("data") or response
        mounts = [
            _mount_of({**info, "path": key})
            for key, info in table.items()
            if isinstance(info, Mapping) and isinstance(key, str) and key.endswith("/")
        ]
        found = _longest_prefix(mounts, path)
        if found is None:
            raise SecretNotFoundError(
                f"Secret {path} not found: no secrets engine is mounted there"
            )
        return found

    # -- fetching ------------------------------------------------------------------

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """Read each secret path once; KV v2 gives its ``data``, KV v1 its keys."""
        out: dict[SecretId, Document | SecretsError] = {}
        with self._transport():
            for sid in ids:
                try:
                    out[sid] = self._authorized(functools.partial(self._read, sid))
                except SecretConnectionError:
                    raise
                except SecretsError as exc:
                    out[sid] = exc
        return out

    def _read(self, sid: SecretId) -> Document:
        path = sid.name
        mount = self._mount_for(path)
        if mount.kv == 0:
            raise SecretValidationError(
                f"{path} is on a {mount.type} secrets engine ({mount.path}), not KV v1 or v2"
            )
        rest = path[len(mount.path) :]
        params: dict[str, str] = {}
        if mount.kv == 2:
            data_rest = rest[len("data/") :] if rest.startswith("data/") else ""
            if not data_rest:
                if rest in ("data", "data/"):
                    raise SecretValidationError(
                        f"{path} names no secret. Should be {self.path_format}"
                    )
                return _MissingData(mount.path, rest, sid.version)
            if sid.version:
                params["version"] = sid.version.partition("=")[2]
        elif sid.version:
            raise SecretValidationError(
                f"?{sid.version} needs a KV v2 mount; {mount.path} is KV version 1"
            )
        hx = _errors()
        try:
            response = self.client.adapter.get(f"/v1/{quote(path)}", params=params or None)
        except hx.Forbidden:
            raise _Denied(f"Permission denied for path {path}") from None
        except hx.InvalidPath as exc:
            gone = _deleted(exc.json, path) if mount.kv == 2 else None
            raise SecretNotFoundError(gone or self._not_found(path, mount, rest, sid)) from None
        except hx.InvalidRequest as exc:
            # The server answered about this request (a bad parameter, say).
            raise SecretNotFoundError(f"Vault refused reading {path}: {_reason(exc)}") from None
        # 429, 5xx and the rest: the server could not answer; _transport says so.
        if not isinstance(response, Mapping):  # hvac hands back a 2xx body it cannot parse
            raise self._connection_error(f"Vault at {self.url} answered with no JSON object")
        data = response.get("data")
        if mount.kv == 2 and isinstance(data, Mapping):
            # A read that lands on a deleted version answers 200 with null
            # data on some servers; the metadata says what happened.
            if data.get("data") is None and (gone := _deleted(response, path)):
                raise SecretNotFoundError(gone)
            data = data.get("data")
        if not isinstance(data, Mapping):
            raise SecretNotFoundError(f"Secret {path} has no data")
        return data

    @staticmethod
    def _not_found(path: str, mount: _Mount, rest: str, sid: SecretId) -> str:
        if sid.version:
            return f"Version {sid.version.partition('=')[2]} of secret {path} not found"
        if mount.kv == 1 and rest.startswith("data/"):
            return (
                f"Secret {path} not found (mount {mount.path} is KV version 1: "
                "its paths have no data/ segment)"
            )
        return f"Secret {path} not found"

    # -- connection ----------------------------------------------------------------

    def check(self) -> None:
        """Log in, look up the token, and make sure it can see a KV mount."""
        with self._transport():
            self._ensure_token()
            client = self.client
            try:
                client.auth.token.lookup_self()
                listing = client.adapter.get("/v1/sys/internal/ui/mounts")
            except _errors().Forbidden:
                raise self._connection_error(
                    "Vault rejected the agent's token"
                    if self.options["agent"]
                    else "Vault rejected the token"
                ) from None
            engines = (listing.get("data") or {}).get("secret") or {}
            if not any(
                isinstance(info, Mapping) and info.get("type") in _KV_TYPES
                for info in engines.values()
            ):
                raise self._connection_error(
                    "The token may read no KV secrets engine: check its policies"
                )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.adapter.close()
            self._client, self._token, self._deadline = None, None, None
        with self._mount_lock:
            self._mounts.clear()

    @contextlib.contextmanager
    def _transport(self) -> Iterator[None]:
        """Turn network and server-state failures into connection errors.

        Reached after the session's retries (see :mod:`._http`) gave up.
        """
        import requests

        hx = _errors()
        try:
            yield
        except requests.exceptions.SSLError:
            raise self._connection_error(
                f"TLS verification failed for {self.url}: check caCert"
            ) from None
        except requests.exceptions.Timeout:
            raise self._connection_error(f"Vault at {self.url} did not answer in time") from None
        except requests.exceptions.RequestException as exc:
            kind = type(exc).__name__
            raise self._connection_error(f"Cannot reach Vault at {self.url} ({kind})") from None
        except (hx.VaultDown, hx.VaultNotInitialized, hx.BadGateway) as exc:
            raise self._connection_error(
                f"Vault at {self.url} is unavailable ({_reason(exc)})"
            ) from None
        except hx.RateLimitExceeded as exc:
            raise self._connection_error(
                f"Vault at {self.url} is rate limiting requests ({_reason(exc)})"
            ) from None
        except hx.VaultError as exc:
            raise self._connection_error(f"Vault at {self.url} failed: {_reason(exc)}") from None

    def _connection_error(self, message: str) -> SecretConnectionError:
        return SecretConnectionError(
            message, provider=self.name, hint="; ".join(self.troubleshooting)
        )


def _mount_of(info: Mapping[str, Any]) -> _Mount:
    kind = str(info.get("type") or "")
    options = info.get("options") or {}
    kv = 0
    if kind in _KV_TYPES:
        kv = 2 if str(options.get("version", "1")) == "2" else 1
    return _Mount(str(info.get("path") or ""), kind, kv)


def _longest_prefix(mounts: Iterable[_Mount], path: str) -> _Mount | None:
    hits = [m for m in mounts if m.path and (path + "/").startswith(m.path)]
    return max(hits, key=lambda m: len(m.path), default=None)


def _mount_table(mounts: Any) -> dict[str, int]:
    """``mounts`` as ``{"path/": version}``; entries that are not valid are left out
    (:meth:`VaultProvider.validate_options` reports them)."""
    if not isinstance(mounts, Mapping):
        return {}
    return {
        key.strip("/") + "/": int(value)
        for key, value in mounts.items()
        if isinstance(key, str)
        and key.strip("/")
        and value in (1, 2)
        and not isinstance(value, bool)
    }


def _deleted(body: Any, path: str) -> str | None:
    """ "version N was deleted at T" or "... destroyed" from a KV v2 read's
    metadata (which holds no values), or ``None`` if the version is live."""
    data = body.get("data") if isinstance(body, Mapping) else None
    meta = data.get("metadata") if isinstance(data, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    version = meta.get("version")
    if meta.get("destroyed") is True:
        return f"Secret {path}: version {version} was destroyed; read another version"
    deleted = meta.get("deletion_time")
    if isinstance(deleted, str) and deleted:
        return (
            f"Secret {path}: version {version} was deleted at {deleted} "
            "(undelete it, or read another version)"
        )
    return None


def _reason(exc: Any) -> str:
    """Vault's own words for a failure (never values), without its list markup."""
    errors = exc.errors if isinstance(exc.errors, list) else []
    text = "; ".join(e.replace("1 error occurred:", "").replace("*", "").strip() for e in errors)
    return " ".join(text.split())[:200] or type(exc).__name__
