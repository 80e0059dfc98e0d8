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

The client, the connection fields, the classification of failures (the one
rule of :mod:`.base`) and the redaction of botocore's DEBUG logs are shared
with ``aws-ssm`` in :mod:`._aws_common`. Nothing here imports boto3 at module
level: paths are validated without the SDK installed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from ..errors import SecretNotFoundError, SecretsError
from ._aws_common import (
    AWS_FIELDS,
    DENIED_CODES,
    HINT_CREDENTIALS,
    HINT_REGION,
    WORKERS,
    AwsBase,
    classify,
    error_code,
)
from .base import Document, Failure, FetchResult, Field, Locator, SecretId, split_key

__all__ = ["AwsProvider"]

log = logging.getLogger(__name__)
#: An AWS region name: us-east-1, eu-central-2, us-gov-west-1, us-isob-east-1 (engineer `safety`).

#: Largest SecretIdList BatchGetSecretValue accepts.
BATCH_SIZE = 20

_FORMAT = "secretName:secretJsonKey"
_WRONG_FORMAT = f"Wrong key format. Should be {_FORMAT}"
# The characters AWS allows in a secret name.
_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}\Z")
_VERSION = re.compile(r"\?(versionStage|versionId)=([^?&=]+)\Z")

_HINT_LIST = "Check IAM permissions include secretsmanager:ListSecrets"


class AwsProvider(AwsBase):
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
    service = "secretsmanager"
    service_title = "AWS Secrets Manager"
    fields = {
        **AWS_FIELDS,
        "batchGet": Field(bool, default=True, doc="use BatchGetSecretValue when allowed"),
    }
    max_batch = BATCH_SIZE
    path_format = _FORMAT
    troubleshooting = (HINT_CREDENTIALS, _HINT_LIST, HINT_REGION)
    # One of the two calls the spec's IAM policy grants.
    check_call = ("ListSecrets", "list_secrets")
    check_hint = _HINT_LIST
    denied_advice = "the IAM policy must grant secretsmanager:GetSecretValue on it"

    def __init__(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self._batch_denied = not self.options["batchGet"]

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
        missing, deleted, denied, binary or undecryptable secret. Raises
        :class:`SecretConnectionError` when AWS could not answer (unreachable,
        5xx or throttled after botocore's retries, a cut-off response,
        rejected credentials).
        """
        out: dict[SecretId, Document | SecretsError] = {}
        plain = [sid for sid in ids if sid.version is None]
        single = [sid for sid in ids if sid.version is not None]
        if len(plain) > 1:
            for start in range(0, len(plain), BATCH_SIZE):
                chunk = plain[start : start + BATCH_SIZE]
                got = None if self._batch_denied else self._batch_get(chunk)
                if got is None:
                    single.extend(chunk)
                else:
                    out.update(got)
        else:
            single.extend(plain)
        out.update(self._get_each(single))
        return out

    def _batch_get(self, ids: Sequence[SecretId]) -> dict[SecretId, Document | SecretsError] | None:
        """One BatchGetSecretValue, all pages; ``None`` when it is denied (then
        for the rest of the connection) or refused as a whole (a malformed id,
        say): each id is then read alone and gets its own answer."""
        import botocore.exceptions

        wanted = {sid.name: sid for sid in ids}
        found: dict[SecretId, Document | SecretsError] = {}
        kwargs: dict[str, Any] = {"SecretIdList": list(wanted)}
        while True:
            try:
                with self.calling("BatchGetSecretValue"):
                    try:
                        page = self.client.batch_get_secret_value(**kwargs)
                    except botocore.exceptions.ClientError as exc:
                        if error_code(exc) not in DENIED_CODES:
                            raise
                        self._note_batch_denied()
                        return None
            except SecretNotFoundError:
                return None
            for entry in page.get("SecretValues", []):
                self.note_arn(entry.get("ARN"))
                for sid in _requested_by(entry, wanted):
                    found[sid] = _document(sid, entry)
            for error in page.get("Errors", []):
                for failed in _requested_by({"ARN": error.get("SecretId")}, wanted):
                    if failed not in found:
                        found[failed] = self._entry_error(failed, error)
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        for sid in ids:
            if sid not in found:
                found[sid] = self.item_failure(Failure.ABSENT, str(sid), "")
        return found

    def _entry_error(self, sid: SecretId, error: Mapping[str, Any]) -> SecretsError:
        """The error of one ``Errors`` entry of a batch (no HTTP status: each
        entry stands for a 400-class answer about one secret)."""
        code, message = str(error.get("ErrorCode", "")), str(error.get("Message", ""))
        kind = classify(code, 400, message)
        if kind.backend_answered:
            return self.item_failure(kind, str(sid), code, message)
        return self.failure(kind, f"{self.service_title} could not read {sid} ({code})")

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
        with ThreadPoolExecutor(min(WORKERS, len(ids))) as pool:
            return dict(zip(ids, pool.map(self._get_one, ids), strict=True))

    def _get_one(self, sid: SecretId) -> Document | SecretsError:
        kwargs: dict[str, Any] = {"SecretId": sid.name}
        if sid.version is not None:
            kind, _, value = sid.version.partition("=")
            kwargs["VersionStage" if kind == "versionStage" else "VersionId"] = value
        try:
            with self.calling(str(sid)):
                entry = self.client.get_secret_value(**kwargs)
        except SecretNotFoundError as exc:
            return exc
        self.note_arn(entry.get("ARN"))
        return _document(sid, entry)


# -- responses -----------------------------------------------------------------

_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}\Z")


def _requested_by(entry: Mapping[str, Any], wanted: Mapping[str, SecretId]) -> list[SecretId]:
    """The requested ids a batch entry names: by name, by full ARN, or by
    partial ARN (the ARN without its ``-AbCdEf`` suffix). An ``Errors`` entry
    may name by ARN a secret that was asked for by name: the ARN's name part,
    suffix removed, maps it back."""
    arn = str(entry.get("ARN") or "")
    keys = {str(entry.get("Name") or ""), arn}
    if arn.startswith("arn:"):
        keys.add(_ARN_SUFFIX.sub("", arn))
        name = arn.split(":", 6)[6] if arn.count(":") >= 6 else ""
        keys.update({name, _ARN_SUFFIX.sub("", name)})
    keys.discard("")
    return [wanted[key] for key in sorted(keys) if key in wanted]


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
