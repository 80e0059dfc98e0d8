"""What the AWS providers share: connection fields, the boto3 client, error
classification, and botocore log redaction.

``aws`` (Secrets Manager) and ``aws-ssm`` (Systems Manager Parameter Store)
differ only in paths and calls. Both subclass :class:`AwsBase` here, which
owns the rest:

* the connection fields (region, keys or profile, endpointUrl, timeouts,
  attempts) and their offline checks;
* the client: boto3 and botocore are imported **inside** client creation, never
  at module level, so offline work (``refs``, compile-time validation of
  paths) runs without the SDK installed; one client per connection, shared by
  threads, on a botocore session that reuses the process's service models;
* the one failure rule of :mod:`.base` applied to AWS: error codes first
  (credentials, throttling, denial, absence, KMS), then the HTTP status; a
  response whose body is cut short or is not JSON is refused before botocore
  parses it into an empty result (it would otherwise read as "no value");
* where a secret was looked for: the region, and the account once any ARN
  of this connection has shown it;
* botocore logs response bodies, secret values included, at DEBUG (boto3
  issue 2292): records of the ``botocore`` loggers made while a thread reads
  secrets are redacted; they keep their logger, level and source line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SecretNotFoundError, SecretsError, SecretValidationError
from .base import Failure, Field, Provider, failure_for_status

if TYPE_CHECKING:
    import botocore.loaders
    import botocore.session

__all__ = ["AWS_FIELDS", "AwsBase", "reading"]

log = logging.getLogger(__name__)

#: Connection fields common to every AWS provider.
AWS_FIELDS: Mapping[str, Field] = {
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
}

#: Concurrent calls a connection may make (the HTTP pool is twice that).
WORKERS = 8

HINT_CREDENTIALS = "Verify IAM credentials are correct"
# A region becomes part of a hostname: anything but a region name is refused.
_REGION_NAME = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
HINT_REGION = "Ensure region is correct"
HINT_NETWORK = "Check network connectivity and the connection's endpointUrl and region"

# -- error codes ---------------------------------------------------------------

# The credentials themselves are wrong: nothing can be read.
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
# Still failing after botocore's retries (its standard mode retries these:
# botocore/retries/standard.py, throttled and transient error codes).
_UNAVAILABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalServiceError",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)
DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
_ABSENT_CODES = frozenset(
    {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
)
# KMS refused to decrypt (a disabled or missing key, a wrong key state).
_UNDECRYPTABLE_CODES = frozenset(
    {"DecryptionFailure", "InvalidKeyId", "KMSInvalidStateException", "KMSDisabledException"}
)
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_ACCOUNT = re.compile(r"\Aarn:[^:]+:[^:]+:[^:]*:(\d{12}):")


def classify(code: str, status: int, message: str = "") -> Failure:
    """The :class:`Failure` an AWS error means: by its code, else its status.

    ``message`` (AWS's own text, never a value) only tells a deleted secret
    from other invalid requests; it is not shown.
    """
    if code in _AUTH_CODES:
        return Failure.CREDENTIALS
    if code in _UNAVAILABLE_CODES:
        return Failure.UNAVAILABLE
    if code in DENIED_CODES:
        return Failure.DENIED
    if code in _ABSENT_CODES:
        return Failure.ABSENT
    if code in _UNDECRYPTABLE_CODES:
        return Failure.UNDECRYPTABLE
    if code == "InvalidRequestException" and "delet" in message.lower():
        return Failure.DELETED
    if status >= 500 or status in (408, 429) or not 400 <= status <= 499:
        return failure_for_status(status)
    # A 4xx with a code we do not know: a rejected request, unless the code is
    # only the status again (a body botocore could not read).
    return failure_for_status(status) if code.isdigit() or not code else Failure.REJECTED


def error_code(exc: Any) -> str:
    """The AWS error code of a ``ClientError``. Some endpoints (moto_server
    with IAM checks on, proxies) answer a JSON-protocol call with a
    query-protocol XML body that botocore reports as code "403"; the real code
    is inside."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code.isdigit():
        match = _XML_CODE.search(str(error.get("Message", "")))
        if match:
            return match[1]
    return code


def mentions_kms(message: str) -> bool:
    """True when AWS's text says KMS refused (``Access to KMS is not allowed``)."""
    return "kms" in message.lower()


# -- the client ----------------------------------------------------------------

# Service models are loaded once per process and shared by every connection's
# session: a fresh loader costs ~100 ms of CPU per client.
_loader_lock = threading.Lock()
_loader: botocore.loaders.Loader | None = None


def _new_locks_after_fork() -> None:
    # A pool thread of the parent may have held one (building the first client,
    # attaching the log guard) while the process forked: the child's copy would
    # stay held forever.
    global _loader_lock
    _loader_lock = threading.Lock()
    _LogGuard._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


def _botocore_session() -> botocore.session.Session:
    """A new botocore session that shares the process's data loader."""
    import botocore.loaders
    import botocore.session

    global _loader
    if _loader is None:
        _loader = botocore.loaders.create_loader()
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader)
    return session


class _Garbled(Exception):
    """A response cut short or not JSON: raised from botocore's before-parse
    hook, before the parser turns it into an empty result."""


def _check_body(response_dict: Mapping[str, Any], **_: Any) -> None:
    body = response_dict.get("body") or b""
    headers = response_dict.get("headers") or {}
    declared = str(headers.get("content-length", ""))
    if declared.isdigit() and int(declared) != len(body):
        raise _Garbled(f"sent {len(body)} of the {declared} bytes it announced (cut off)")
    if int(response_dict.get("status_code", 0)) < 300:
        try:
            parsed = json.loads(body)
        except ValueError:
            # No chaining: the decode error quotes the body.
            parsed = None
        if not isinstance(parsed, dict):
            raise _Garbled("answered with something other than JSON (is endpointUrl AWS?)")


class AwsBase(Provider):
    """Base of the AWS providers: fields, client, errors. Subclasses set
    :attr:`service` and :attr:`service_title` and add paths and calls."""

    sdk_modules = ("boto3.session", "botocore.exceptions", "botocore.parsers")

    #: boto3's service name.
    service: ClassVar[str]
    #: The service as messages name it.
    service_title: ClassVar[str]
    fields: ClassVar[Mapping[str, Field]] = AWS_FIELDS
    #: The connection test: a cheap read the IAM policy grants, as AWS names
    #: it and as boto3 does (``("ListSecrets", "list_secrets")``), and the
    #: hint for when it is denied.
    check_call: ClassVar[tuple[str, str]]
    check_hint: ClassVar[str]

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self._lock = threading.Lock()
        self._client: Any = None
        self._account: str | None = None

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
        # Checked before any request, and never echoed (it may come from ${...}).
        if out["region"] and not _REGION_NAME.fullmatch(out["region"]):
            raise fail("region: expected an AWS region name such as us-east-1 or eu-west-2")
        url = out["endpointUrl"]
        if url and not url.startswith(("http://", "https://")):
            raise fail(f"endpointUrl must start with http:// or https://, got {url!r}")
        for field in ("connectTimeout", "readTimeout"):
            if out[field] <= 0:
                raise fail(f"{field} must be a positive number of seconds")
        if out["maxAttempts"] < 1:
            raise fail("maxAttempts must be at least 1")
        return out

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use (importing boto3 then).

        Raises :class:`SecretValidationError` when boto3 is not installed and
        :class:`SecretConnectionError` for an unknown profile or no region.
        """
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            import boto3.session
            import botocore.exceptions
            from botocore.config import Config
        except ModuleNotFoundError as exc:
            raise SecretValidationError(
                f"provider {self.id!r} needs {exc.name or 'boto3'}, which is not installed: "
                "pip install 'jinja-apsecrets[aws]'",
                provider=self.name,
                hint="pip install 'jinja-apsecrets[aws]'",
            ) from None
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
                    self.service,  # type: ignore[call-overload]
                    endpoint_url=opts["endpointUrl"] or None,
                    verify=opts["caBundle"] or True,
                    config=Config(
                        connect_timeout=opts["connectTimeout"],
                        read_timeout=opts["readTimeout"],
                        retries={"mode": "standard", "total_max_attempts": opts["maxAttempts"]},
                        max_pool_connections=2 * WORKERS,
                        user_agent_extra="jinja-apsecrets",
                    ),
                )
            client.meta.events.register(f"before-parse.{self.service}", _check_body)
            _LogGuard.install()
        except botocore.exceptions.ProfileNotFound:
            raise self.failure(
                Failure.CREDENTIALS,
                f"AWS profile {opts['profile']!r} not found",
                hint=HINT_CREDENTIALS,
            ) from None
        except botocore.exceptions.NoRegionError:
            raise self.failure(
                Failure.UNREACHABLE,
                "No AWS region: set the connection's region or AWS_REGION",
                hint=HINT_REGION,
            ) from None
        except ValueError as exc:  # an invalid region name or endpoint
            raise self.failure(
                Failure.UNREACHABLE, f"Cannot create the AWS client: {exc}", hint=HINT_REGION
            ) from None
        return client

    def close(self) -> None:
        """Drop the client; the next call creates a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- connection ----------------------------------------------------------------

    def check(self) -> None:
        """:attr:`check_call` with MaxResults=1. Raises
        :class:`SecretConnectionError` with a hint."""
        action, method = self.check_call
        try:
            with self.calling(action):
                getattr(self.client, method)(MaxResults=1)
        except SecretNotFoundError as exc:
            # Answered, but refused: as a connection test, a failure.
            denied = "Access denied" in exc.message
            raise self.failure(
                Failure.CREDENTIALS if denied else Failure.UNAVAILABLE,
                f"Access denied to {self.service}:{action}"
                if denied
                else f"{self.service_title} refused {action}: {exc.message}",
                hint=self.check_hint if denied else HINT_REGION,
            ) from None

    # -- where ---------------------------------------------------------------------

    def note_arn(self, arn: object) -> None:
        """Learn the account from an ARN this connection was answered with."""
        if self._account is None and isinstance(arn, str):
            match = _ACCOUNT.match(arn)
            if match:
                self._account = match[1]

    def where(self, name: str = "") -> str:
        """``in region R (account A)``: where a secret was looked for, as far
        as known: the account from ``name`` when it is an ARN, else from any
        ARN seen on this connection."""
        region = self._client.meta.region_name if self._client is not None else None
        match = _ACCOUNT.match(name)
        account = match[1] if match else self._account
        text = f"in region {region or self.options['region'] or 'unknown'}"
        return f"{text} (account {account})" if account else text

    # -- errors --------------------------------------------------------------------

    @contextmanager
    def calling(self, what: str) -> Iterator[None]:
        """Run one AWS call about ``what``: botocore's log records redacted,
        its failures turned into this library's errors by :meth:`call_failure`
        (a :class:`SecretNotFoundError` when AWS answered about ``what``, a
        :class:`SecretConnectionError` when it could not answer)."""
        import botocore.exceptions
        import botocore.parsers
        import urllib3.exceptions

        with reading():
            try:
                yield
            except (
                botocore.exceptions.ClientError,
                botocore.exceptions.BotoCoreError,
                botocore.parsers.ResponseParserError,
                urllib3.exceptions.HTTPError,
                _Garbled,
            ) as exc:
                raise self.call_failure(exc, what) from None

    def call_failure(self, exc: BaseException, what: str) -> SecretsError:
        """The error for a failed call about ``what`` (a secret, or the check).

        ``exc`` is what botocore raised; the code follows the one rule. For a
        failure about one secret (GET_SECRET_FAILED) the message names it and
        where it was looked for; connection failures name the service.
        """
        import botocore.exceptions
        import botocore.parsers

        if isinstance(exc, botocore.exceptions.ClientError):
            code = error_code(exc)
            meta = exc.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            kind = classify(code, status, message)
            if not kind.backend_answered:
                return self._no_answer(kind, code, status, int(meta.get("RetryAttempts") or 0))
            return self.item_failure(kind, what, code, message)
        if isinstance(exc, _Garbled | botocore.parsers.ResponseParserError):
            # A parser error's text quotes the body: never shown.
            got = str(exc) if isinstance(exc, _Garbled) else "sent a response botocore cannot parse"
            return self.failure(Failure.GARBLED, f"{self.service_title} {got}", hint=HINT_NETWORK)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return self.failure(
                Failure.CREDENTIALS,
                "No AWS credentials: set accessKeyId and secretAccessKey, a profile, or "
                "configure boto3's default credential chain",
                hint=HINT_CREDENTIALS,
            )
        if isinstance(exc, botocore.exceptions.PartialCredentialsError):
            return self.failure(
                Failure.CREDENTIALS, f"Incomplete AWS credentials: {exc}", hint=HINT_CREDENTIALS
            )
        # botocore's messages name the endpoint and the reason, never a body.
        return self.failure(
            Failure.UNREACHABLE, f"Cannot reach {self.service_title}: {exc}", hint=HINT_NETWORK
        )

    def _no_answer(self, kind: Failure, code: str, status: int, retries: int) -> SecretsError:
        if kind is Failure.CREDENTIALS:
            return self.failure(
                kind, f"AWS rejected the credentials ({code})", hint=HINT_CREDENTIALS
            )
        tries = f"after {retries + 1} attempts" if retries else "on the first attempt"
        what = f"{code} {status}" if code and not code.isdigit() else f"HTTP {status}"
        if "hrottl" in code or "TooManyRequests" in code or status == 429:
            return self.failure(
                kind,
                f"{self.service_title} throttled the requests ({what}) {tries}",
                hint="Lower the connection's concurrency or raise maxAttempts",
            )
        return self.failure(
            kind, f"{self.service_title} could not answer ({what}) {tries}", hint=HINT_NETWORK
        )

    def item_failure(self, kind: Failure, what: str, code: str, message: str = "") -> SecretsError:
        """GET_SECRET_FAILED for one secret the service answered about."""
        where, noun = self.where(what), self.noun
        if kind is Failure.ABSENT:
            text = f"{noun} {what} not found {where}"
        elif kind is Failure.DELETED:
            text = f"{noun} {what} is marked for deletion ({where})"
        elif kind is Failure.DENIED and mentions_kms(message):
            text = (
                f"Access denied to the KMS key of {noun.lower()} {what}: the IAM policy must "
                "grant kms:Decrypt on the key that encrypts it"
            )
        elif kind is Failure.DENIED:
            text = f"Access denied to {noun.lower()} {what}: {self.denied_advice}"
        elif kind is Failure.UNDECRYPTABLE:
            text = f"{noun} {what} cannot be decrypted with its KMS key ({code})"
        else:
            text = f"Cannot read {noun.lower()} {what} ({code or 'unknown error'})"
        return self.failure(kind, text)

    #: What messages call one item: a secret, a parameter.
    noun: ClassVar[str] = "Secret"
    #: What a denial of one item asks for.
    denied_advice: ClassVar[str] = "the IAM policy must allow reading it"


# -- logging -------------------------------------------------------------------

_state = threading.local()


@contextmanager
def reading() -> Iterator[None]:
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
