"""``aws``: AWS Secrets Manager through boto3.

A reference path is ``secretName:jsonKey``: the secret's ``SecretString`` is a
JSON object and the key picks one of its values. The name may be a full ARN
(``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf:jsonKey``; the key
follows the colon after the ARN's seven fields). A ``?versionStage=STAGE`` or
``?versionId=ID`` suffix selects a version other than ``AWSCURRENT``.

Fetching: distinct secrets are read with BatchGetSecretValue, 20 ids a call,
paginated by hand; a secret on its own or a versioned one with
GetSecretValue. The spec's IAM policy grants only ``GetSecretValue`` and
``ListSecrets``: when BatchGetSecretValue is denied the provider switches to
concurrent GetSecretValue calls and stays switched for the connection.

botocore logs response bodies, secret values included, at DEBUG (boto3 issue
2292). While this provider talks to AWS, records of the ``botocore`` loggers
emitted on that thread are redacted: they keep their logger, level and source
line, and lose their text and arguments.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, cast

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from ..errors import (
    SecretConnectionError,
    SecretNotFoundError,
    SecretsError,
    SecretValidationError,
)
from .base import Document, FetchResult, Field, Locator, Provider, SecretId, split_key

__all__ = ["AwsProvider"]

log = logging.getLogger(__name__)
#: An AWS region name: us-east-1, eu-central-2, us-gov-west-1, us-isob-east-1 (engineer `safety`).
_REGION_NAME = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")

#: Largest SecretIdList BatchGetSecretValue accepts.
BATCH_SIZE = 20
#: Concurrent GetSecretValue calls within one batch when batching is unavailable.
FALLBACK_WORKERS = 8

# Service models are loaded once per process and shared by every connection's
# session: a fresh loader costs ~100 ms of CPU per client.
_loader_lock = threading.Lock()
_loader: botocore.loaders.Loader | None = None


def _botocore_session() -> botocore.session.Session:
    """A new botocore session that shares the process's data loader."""
    global _loader
    if _loader is None:
        _loader = botocore.loaders.create_loader()
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader)
    return session


_FORMAT = "secretName:secretJsonKey"
_WRONG_FORMAT = f"Wrong key format. Should be {_FORMAT}"
# The characters AWS allows in a secret name.
_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}\Z")
_VERSION = re.compile(r"\?(versionStage|versionId)=([^?&=]+)\Z")
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")

# Error codes that mean the credentials themselves are wrong: the whole
# connection fails, not one secret.
_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "AuthFailure",
    }
)
_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})

_HINT_CREDENTIALS = "Verify IAM credentials are correct"
_HINT_LIST = "Check IAM permissions include secretsmanager:ListSecrets"
_HINT_REGION = "Ensure region is correct"
_HINT_NETWORK = "Check network connectivity and the connection's endpointUrl and region"


class _SecretsClient(Protocol):
    """The part of boto3's Secrets Manager client this provider calls."""

    @property
    def meta(self) -> Any: ...

    def get_secret_value(self, **kwargs: Any) -> dict[str, Any]: ...
    def batch_get_secret_value(self, **kwargs: Any) -> dict[str, Any]: ...
    def list_secrets(self, **kwargs: Any) -> dict[str, Any]: ...
    def close(self) -> None: ...


class AwsProvider(Provider):
    """``aws``: values of JSON keys of AWS Secrets Manager secrets.

    Options (all optional): ``region``; ``accessKeyId`` with
    ``secretAccessKey`` (and ``sessionToken`` for temporary credentials) or
    ``profile``, else boto3's default credential chain; ``endpointUrl`` for a
    local server or a VPC endpoint; ``caBundle``; ``connectTimeout``,
    ``readTimeout`` and ``maxAttempts`` (botocore's standard retry mode, which
    also retries throttling); ``batchGet: false`` to skip BatchGetSecretValue.

    Construction is offline. The boto3 client is created on first use, once,
    and shared by every thread; :meth:`fetch` may run in several threads.
    """

    id = "aws"
    fields = {
        "region": Field(str, doc="AWS region, e.g. us-east-1; default: boto3's (AWS_REGION)"),
        "accessKeyId": Field(str, secret=True, doc="access key id; default: boto3's chain"),
        "secretAccessKey": Field(str, secret=True, doc="secret access key"),
        "sessionToken": Field(str, secret=True, doc="session token of temporary credentials"),
        "profile": Field(str, doc="a profile of ~/.aws/config instead of keys"),
        "endpointUrl": Field(str, doc="another endpoint: a VPC endpoint, a local moto_server"),
        "caBundle": Field(str, is_path=True, doc="CA certificates to verify TLS with"),
        "connectTimeout": Field(float, default=3.0, doc="seconds to open a connection"),
        "readTimeout": Field(float, default=10.0, doc="seconds to wait for a response"),
        "maxAttempts": Field(int, default=3, doc="attempts per call, retries included"),
        "batchGet": Field(bool, default=True, doc="use BatchGetSecretValue when allowed"),
    }
    max_batch = BATCH_SIZE
    path_format = _FORMAT
    troubleshooting = (_HINT_CREDENTIALS, _HINT_LIST, _HINT_REGION)

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self._lock = threading.Lock()
        self._client: _SecretsClient | None = None
        self._batch_denied = not self.options["batchGet"]

    @classmethod
    def validate_options(cls, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Also check that keys come in pairs and numbers are positive."""
        out = super().validate_options(name, options)

        def fail(message: str) -> SecretsError:
            return SecretValidationError(f"connections.{name}: {message}", provider=name)

        key_id, key = out["accessKeyId"] or None, out["secretAccessKey"] or None
        if (key_id is None) != (key is None):
            raise fail("accessKeyId and secretAccessKey must be given together")
        if out["sessionToken"] and key_id is None:
            raise fail("sessionToken needs accessKeyId and secretAccessKey")
        if out["profile"] and key_id is not None:
            raise fail("give either profile or accessKeyId/secretAccessKey, not both")
        # -- region check (engineer `safety`, issue 10 item 4): a region becomes part
        # of a hostname, so anything but a region name is refused before any request,
        # without echoing it.
        if out["region"] and not _REGION_NAME.fullmatch(out["region"]):
            raise fail("region: expected an AWS region name such as us-east-1 or eu-west-2")
        # -- end of region check
        url = out["endpointUrl"]
        if url and not url.startswith(("http://", "https://")):
            raise fail(f"endpointUrl must start with http:// or https://, got {url!r}")
        for field in ("connectTimeout", "readTimeout"):
            if out[field] <= 0:
                raise fail(f"{field} must be a positive number of seconds")
        if out["maxAttempts"] < 1:
            raise fail("maxAttempts must be at least 1")
        return out

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """``name:key``, ``arn:...:secret:name-AbCdEf:key``, each with an optional
        ``?versionStage=S`` or ``?versionId=I`` suffix. Offline."""
        rest, version = path, None
        match = _VERSION.search(path)
        if match:
            rest, version = path[: match.start()], f"{match[1]}={match[2]}"
        if rest.startswith("arn:"):
            fields = rest.split(":", 7)
            if len(fields) < 7 or fields[2] != "secretsmanager" or fields[5] != "secret":
                raise self.invalid(
                    path,
                    "Wrong secret ARN. Should be "
                    "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME:secretJsonKey",
                )
            if len(fields) < 8 or not fields[7] or not fields[6]:
                raise self.invalid(path, _WRONG_FORMAT)
            name, key = ":".join(fields[:7]), fields[7]
        else:
            parts = split_key(rest)
            if parts is None:
                raise self.invalid(path, _WRONG_FORMAT)
            name, key = parts
            if not _NAME.match(name):
                raise self.invalid(
                    path,
                    f"Wrong secret name {name!r}: AWS secret names have 1-512 letters, "
                    "digits and /_+=.@- characters",
                )
        return Locator(SecretId(name, version), key)

    # -- the client --------------------------------------------------------------

    @property
    def client(self) -> _SecretsClient:
        """The boto3 Secrets Manager client, created on first use.

        Raises :class:`SecretConnectionError` for an unknown profile or a
        missing region.
        """
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> _SecretsClient:
        opts = self.options
        try:
            with _loader_lock:
                session = boto3.session.Session(
                    aws_access_key_id=opts["accessKeyId"] or None,
                    aws_secret_access_key=opts["secretAccessKey"] or None,
                    aws_session_token=opts["sessionToken"] or None,
                    region_name=opts["region"] or None,
                    profile_name=opts["profile"] or None,
                    botocore_session=_botocore_session(),
                )
                client = session.client(
                    "secretsmanager",
                    endpoint_url=opts["endpointUrl"] or None,
                    verify=opts["caBundle"] or True,
                    config=Config(
                        connect_timeout=opts["connectTimeout"],
                        read_timeout=opts["readTimeout"],
                        retries={"mode": "standard", "total_max_attempts": opts["maxAttempts"]},
                        max_pool_connections=2 * FALLBACK_WORKERS,
                        user_agent_extra="jinja-apsecrets",
                    ),
                )
            _LogGuard.install()
        except botocore.exceptions.ProfileNotFound:
            raise self._connection_error(
                f"AWS profile {opts['profile']!r} not found", _HINT_CREDENTIALS
            ) from None
        except botocore.exceptions.NoRegionError:
            raise self._connection_error(
                "No AWS region: set the connection's region or AWS_REGION", _HINT_REGION
            ) from None
        except ValueError as exc:  # an invalid region name or endpoint
            raise self._connection_error(
                f"Cannot create the AWS client: {exc}", _HINT_REGION
            ) from None
        return cast(_SecretsClient, client)

    def close(self) -> None:
        """Drop the client; the next call creates a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- fetching ----------------------------------------------------------------

    def plan(self, ids: Sequence[SecretId]) -> list[list[SecretId]]:
        """Unversioned ids in batches of 20 while BatchGetSecretValue is
        allowed; every other id a batch of its own (one GetSecretValue), so
        the connection's ``concurrency`` bounds the parallel calls."""
        batched = [] if self._batch_denied else [sid for sid in ids if sid.version is None]
        if len(batched) < 2:
            batched = []
        chosen = set(batched)
        rest = [[sid] for sid in ids if sid not in chosen]
        size = BATCH_SIZE
        return [batched[i : i + size] for i in range(0, len(batched), size)] + rest

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """Read ``ids``: one BatchGetSecretValue per 20 unversioned ids when
        allowed, else concurrent GetSecretValue calls.

        Returns a mapping of keys for a JSON-object secret, the text for any
        other ``SecretString``, and a :class:`SecretNotFoundError` for a
        missing, deleted, binary or unreadable secret. Raises
        :class:`SecretConnectionError` for bad credentials or an unreachable
        endpoint.
        """
        out: dict[SecretId, Document | SecretsError] = {}
        plain = [sid for sid in ids if sid.version is None]
        single = [sid for sid in ids if sid.version is not None]
        if len(plain) > 1 and not self._batch_denied:
            for start in range(0, len(plain), BATCH_SIZE):
                chunk = plain[start : start + BATCH_SIZE]
                got = self._batch_get(chunk)
                if got is None:
                    single.extend(plain[start:])
                    break
                out.update(got)
        else:
            single.extend(plain)
        out.update(self._get_each(single))
        return out

    def _batch_get(self, ids: Sequence[SecretId]) -> dict[SecretId, Document | SecretsError] | None:
        """One BatchGetSecretValue, all pages; ``None`` once it is denied."""
        wanted = {sid.name: sid for sid in ids}
        found: dict[SecretId, Document | SecretsError] = {}
        kwargs: dict[str, Any] = {"SecretIdList": list(wanted)}
        while True:
            try:
                with _reading():
                    page = self.client.batch_get_secret_value(**kwargs)
            except botocore.exceptions.ClientError as exc:
                code = _error_code(exc)
                if code in _DENIED_CODES:
                    self._note_batch_denied()
                    return None
                if code in _AUTH_CODES:
                    raise self._auth_error(code) from None
                for sid in ids:
                    found.setdefault(sid, _item_error(str(sid), code, exc))
                return found
            except botocore.exceptions.BotoCoreError as exc:
                raise self._unreachable(exc) from None
            for entry in page.get("SecretValues", []):
                for sid in _requested_by(entry, wanted):
                    found[sid] = _document(sid, entry)
            for error in page.get("Errors", []):
                failed = wanted.get(str(error.get("SecretId", "")))
                if failed is not None and failed not in found:
                    code = str(error.get("ErrorCode", ""))
                    found[failed] = _item_error(str(failed), code, error.get("Message", ""))
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        for sid in ids:
            if sid not in found:
                found[sid] = SecretNotFoundError(f"Secret {sid} not found")
        return found

    def _note_batch_denied(self) -> None:
        if not self._batch_denied:
            self._batch_denied = True
            log.info(
                "connection %s: BatchGetSecretValue is not allowed; reading secrets one "
                "GetSecretValue call each (grant secretsmanager:BatchGetSecretValue to read "
                "20 a call)",
                self.name,
            )

    def _get_each(self, ids: Sequence[SecretId]) -> dict[SecretId, Document | SecretsError]:
        if len(ids) <= 1:
            return {sid: self._get_one(sid) for sid in ids}
        with ThreadPoolExecutor(min(FALLBACK_WORKERS, len(ids))) as pool:
            return dict(zip(ids, pool.map(self._get_one, ids), strict=True))

    def _get_one(self, sid: SecretId) -> Document | SecretsError:
        kwargs: dict[str, Any] = {"SecretId": sid.name}
        if sid.version is not None:
            kind, _, value = sid.version.partition("=")
            kwargs["VersionStage" if kind == "versionStage" else "VersionId"] = value
        try:
            with _reading():
                entry = self.client.get_secret_value(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = _error_code(exc)
            if code in _AUTH_CODES:
                raise self._auth_error(code) from None
            return _item_error(str(sid), code, exc)
        except botocore.exceptions.BotoCoreError as exc:
            raise self._unreachable(exc) from None
        return _document(sid, entry)

    # -- connection --------------------------------------------------------------

    def check(self) -> None:
        """ListSecrets with MaxResults=1, one of the two calls the spec's IAM
        policy grants. Raises :class:`SecretConnectionError` with a hint."""
        try:
            with _reading():
                self.client.list_secrets(MaxResults=1)
        except botocore.exceptions.ClientError as exc:
            code = _error_code(exc)
            if code in _AUTH_CODES:
                raise self._auth_error(code) from None
            if code in _DENIED_CODES:
                raise self._connection_error(
                    "Access denied to secretsmanager:ListSecrets", _HINT_LIST
                ) from None
            raise self._connection_error(
                f"AWS Secrets Manager refused ListSecrets ({code})", _HINT_REGION
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._unreachable(exc) from None

    # -- errors ------------------------------------------------------------------

    def _connection_error(self, message: str, hint: str) -> SecretConnectionError:
        return SecretConnectionError(message, provider=self.name, hint=hint)

    def _auth_error(self, code: str) -> SecretConnectionError:
        return self._connection_error(f"AWS rejected the credentials ({code})", _HINT_CREDENTIALS)

    def _unreachable(self, exc: botocore.exceptions.BotoCoreError) -> SecretConnectionError:
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return self._connection_error(
                "No AWS credentials: set accessKeyId and secretAccessKey, a profile, or "
                "configure boto3's default credential chain",
                _HINT_CREDENTIALS,
            )
        if isinstance(exc, botocore.exceptions.PartialCredentialsError):
            return self._connection_error(f"Incomplete AWS credentials: {exc}", _HINT_CREDENTIALS)
        # botocore's messages name the endpoint and the reason, never a body.
        return self._connection_error(f"Cannot reach AWS Secrets Manager: {exc}", _HINT_NETWORK)


# -- responses -----------------------------------------------------------------


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    """The AWS error code. Some endpoints (moto_server with IAM checks on,
    proxies) answer a JSON-protocol call with a query-protocol XML body that
    botocore reports as code "403"; the real code is inside."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code.isdigit():
        match = _XML_CODE.search(str(error.get("Message", "")))
        if match:
            return match[1]
    return code


def _item_error(what: str, code: str, detail: object) -> SecretNotFoundError:
    """The error for one secret that AWS would not return.

    ``detail`` (an AWS message or ClientError) is used only to tell a deleted
    secret from other invalid requests: AWS messages carry no secret values,
    but ours stay within what we know.
    """
    if code == "ResourceNotFoundException":
        return SecretNotFoundError(f"Secret {what} not found")
    if code == "InvalidRequestException" and "delet" in str(detail).lower():
        return SecretNotFoundError(f"Secret {what} is marked for deletion")
    if code in _DENIED_CODES:
        return SecretNotFoundError(
            f"Access denied to secret {what}: the IAM policy must grant "
            "secretsmanager:GetSecretValue on it"
        )
    if code == "DecryptionFailure":
        return SecretNotFoundError(f"Secret {what} cannot be decrypted with its KMS key")
    return SecretNotFoundError(f"Cannot read secret {what} ({code or 'unknown error'})")


def _requested_by(entry: Mapping[str, Any], wanted: Mapping[str, SecretId]) -> list[SecretId]:
    """The requested ids a BatchGetSecretValue entry answers: by name, by full
    ARN, or by partial ARN (the ARN without its ``-AbCdEf`` suffix)."""
    arn = str(entry.get("ARN", ""))
    keys = {str(entry.get("Name", "")), arn, arn[:-7]}
    return [wanted[key] for key in keys if key in wanted]


def _document(sid: SecretId, entry: Mapping[str, Any]) -> Document | SecretsError:
    """A JSON object's keys, or the text of any other secret string."""
    text = entry.get("SecretString")
    if text is None:
        if entry.get("SecretBinary") is not None:
            return SecretNotFoundError(
                f"Secret {sid} is binary (SecretBinary); only a SecretString holding a "
                "JSON object can be referenced by key"
            )
        return SecretNotFoundError(f"Secret {sid} has no value")
    try:
        data = json.loads(text)
    except ValueError:
        # No chaining: the decode error holds the whole document.
        return str(text)
    return cast(Mapping[str, Any], data) if isinstance(data, dict) else str(text)


# -- logging -------------------------------------------------------------------

_state = threading.local()


@contextmanager
def _reading() -> Iterator[None]:
    """Mark this thread as talking to AWS, for :class:`_LogGuard`."""
    _LogGuard.install()
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth


class _LogGuard(logging.Filter):
    """Redacts records of the ``botocore`` loggers made while this thread reads
    secrets (botocore logs whole response bodies at DEBUG).

    Logger filters see only records made on their own logger, so the guard is
    attached to every ``botocore.*`` logger, and again when new ones appear.
    """

    _lock = threading.Lock()
    _seen = -1
    _guard: _LogGuard | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_state, "depth", 0):
            record.msg = "[redacted by jinja_apsecrets while reading secrets]"
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    @classmethod
    def install(cls) -> None:
        loggers = logging.Logger.manager.loggerDict
        if len(loggers) == cls._seen:
            return
        with cls._lock:
            guard = cls._guard = cls._guard or cls()
            for name in list(loggers):
                logger = loggers[name]
                if (
                    (name == "botocore" or name.startswith("botocore."))
                    and isinstance(logger, logging.Logger)
                    and guard not in logger.filters
                ):
                    logger.addFilter(guard)
            cls._seen = len(loggers)
