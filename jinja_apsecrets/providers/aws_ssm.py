"""``aws-ssm``: AWS Systems Manager Parameter Store through boto3.

A reference path is a parameter name, ``/prod/db/password`` or a name without
slashes (``db_password``), then optionally ``:jsonKey`` when the value is a
JSON object, then optionally ``?version=N`` or ``?label=NAME``::

    <<aws-ssm|ap_sep_v1|/prod/db/password>>
    <<aws-ssm|ap_sep_v1|/prod/db/config:port>>
    <<aws-ssm|ap_sep_v1|/prod/db/password?label=previous>>

Names are checked offline against the Parameter Store's rules: letters,
digits and ``_.-/``; a name with ``/`` is fully qualified (starts with ``/``,
no empty level); at most 15 levels and 2048 characters. Parameter names never
contain ``:``, so the first colon starts the key.

Fetching: ``GetParameters`` with ``WithDecryption=True`` (SecureStrings come
decrypted; String and StringList values as stored), up to 10 names a call,
each distinct name (with its version or label selector, ``/name:3`` or
``/name:label``) asked for once. A name is asked for at most once per call, so
every answer maps back to one request even where a server leaves out the
``Selector`` field. ``InvalidParameters`` fails only those references
(``SECRET_MANAGER_GET_SECRET_FAILED``); a call refused as a whole about its
parameters (denied, a KMS key it cannot use) is asked again name by name, so
one bad parameter does not fail the others. Everything else follows the AWS
rule of :mod:`._aws_common`. The connection check is
``DescribeParameters(MaxResults=1)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..errors import SecretNotFoundError, SecretsError
from ._aws_common import HINT_CREDENTIALS, HINT_REGION, WORKERS, AwsBase
from .base import Document, Failure, FetchResult, Locator, SecretId

__all__ = ["ParameterStoreProvider"]

#: Largest ``Names`` list GetParameters accepts.
BATCH_SIZE = 10
#: The Parameter Store's limits on names.
MAX_NAME_LENGTH = 2048
MAX_LEVELS = 15

_FORMAT = "/path/name[:jsonKey][?version=N | ?label=LABEL]"
_CHARS = re.compile(r"[A-Za-z0-9_.\-/]+\Z")
_SELECTOR = re.compile(r"\?(version|label)=([^?&=]*)\Z")
_VERSION = re.compile(r"[1-9][0-9]{0,18}\Z")
_LABEL = re.compile(r"[A-Za-z_.\-][A-Za-z0-9_.\-]{0,99}\Z")

_HINT_DESCRIBE = "Check IAM permissions include ssm:DescribeParameters"


class ParameterStoreProvider(AwsBase):
    """``aws-ssm``: values of AWS Systems Manager parameters.

    Same connection fields as ``aws`` (region, keys or profile, endpointUrl,
    caBundle, timeouts, maxAttempts). Construction is offline; the boto3
    client is created on first use and shared by threads.
    """

    id = "aws-ssm"
    service = "ssm"
    service_title = "AWS Systems Manager Parameter Store"
    max_batch = BATCH_SIZE
    path_format = _FORMAT
    troubleshooting = (HINT_CREDENTIALS, _HINT_DESCRIBE, HINT_REGION)
    check_call = ("DescribeParameters", "describe_parameters")
    check_hint = _HINT_DESCRIBE
    denied_advice = "the IAM policy must grant ssm:GetParameters on it"
    noun = "Parameter"

    # -- paths -------------------------------------------------------------------

    def parse_path(self, path: str) -> Locator:
        """``name[:key][?version=N|?label=L]``, checked offline."""
        rest, version = path, None
        match = _SELECTOR.search(path)
        if match:
            kind, value = match[1], match[2]
            rest = path[: match.start()]
            if kind == "version" and not _VERSION.match(value):
                raise self.invalid(path, f"Wrong version {value!r}: a positive whole number")
            if kind == "label" and not _LABEL.match(value):
                raise self.invalid(
                    path,
                    f"Wrong label {value!r}: 1-100 letters, digits and _.- characters, "
                    "not starting with a digit",
                )
            version = f"{kind}={value}"
        name, colon, key = rest.partition(":")
        if "?" in name:
            raise self.invalid(path, f"Wrong selector. Should be {_FORMAT}")
        if colon and not key:
            raise self.invalid(path, f"Empty JSON key. Should be {_FORMAT}")
        problem = _name_problem(name)
        if problem:
            raise self.invalid(path, f"Wrong parameter name {name[:80]!r}: {problem}")
        return Locator(SecretId(name, version), key or None)

    def select(self, document: Document, locator: Locator) -> str:
        """The value as stored, or a key of the JSON object it holds."""
        if locator.key is None or not isinstance(document, str):
            return super().select(document, locator)
        try:
            data = json.loads(document)
        except ValueError:
            data = None  # no chaining: the decode error quotes the value
        if not isinstance(data, dict):
            raise SecretNotFoundError(
                f"Parameter {locator.secret} is not a JSON object, so it has no key {locator.key}"
            )
        return super().select(data, locator)

    # -- fetching ----------------------------------------------------------------

    def plan(self, ids: Sequence[SecretId]) -> list[list[SecretId]]:
        """Distinct ids, 10 a call, a parameter name at most once per call."""
        batches: list[list[SecretId]] = []
        for sid in dict.fromkeys(ids):
            for batch in batches:
                if len(batch) < BATCH_SIZE and all(other.name != sid.name for other in batch):
                    batch.append(sid)
                    break
            else:
                batches.append([sid])
        return batches

    def fetch(self, ids: Sequence[SecretId]) -> FetchResult:
        """One GetParameters per batch of :meth:`plan` (the resolver normally
        hands over one batch). Raises :class:`SecretConnectionError` when the
        service could not answer."""
        out: dict[SecretId, Document | SecretsError] = {}
        for batch in self.plan(ids):
            out.update(self._get_parameters(batch))
        return out

    def _get_parameters(self, ids: Sequence[SecretId]) -> dict[SecretId, Document | SecretsError]:
        wanted = {_request_name(sid): sid for sid in ids}
        try:
            with self.calling(str(ids[0]) if len(ids) == 1 else "GetParameters"):
                page = self.client.get_parameters(Names=list(wanted), WithDecryption=True)
        except SecretNotFoundError as exc:
            if len(ids) == 1:
                return {ids[0]: exc}
            # Refused as a whole (a KMS key one of them uses, say): ask for
            # each alone, so only the culprits fail.
            with ThreadPoolExecutor(min(WORKERS, len(ids))) as pool:
                singles = pool.map(self._get_parameters, [[sid] for sid in ids])
                return {k: v for single in singles for k, v in single.items()}
        by_name = {sid.name: sid for sid in ids}
        out: dict[SecretId, Document | SecretsError] = {}
        for entry in page.get("Parameters", []):
            self.note_arn(entry.get("ARN"))
            sid = by_name.get(str(entry.get("Name", "")))
            value = entry.get("Value")
            if sid is not None and isinstance(value, str):
                out[sid] = value
        for name in page.get("InvalidParameters", []):
            sid = wanted.get(str(name)) or by_name.get(str(name).partition(":")[0])
            if sid is not None and sid not in out:
                out[sid] = self._absent(sid)
        for sid in ids:
            if sid not in out:
                out[sid] = self._absent(sid)
        return out

    def _absent(self, sid: SecretId) -> SecretsError:
        what = f"Parameter {sid.name}"
        if sid.version is not None:
            kind, _, value = sid.version.partition("=")
            what = f"{kind.capitalize()} {value} of parameter {sid.name}"
        # Missing names come back in InvalidParameters, a missing version may
        # too: either way the service answered that it is not there.
        return self.failure(Failure.ABSENT, f"{what} not found {self.where()}")


def _name_problem(name: str) -> str | None:
    """What is wrong with a parameter name, or ``None``."""
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    if not _CHARS.match(name):
        return "only letters, digits and _.-/ are allowed"
    if "/" in name:
        if not name.startswith("/"):
            return "a name with / must start with / (fully qualified)"
        levels = name[1:].split("/")
        if "" in levels:
            return "empty level (// or a trailing /)"
        if len(levels) > MAX_LEVELS:
            return f"{len(levels)} levels; at most {MAX_LEVELS}"
    return None


def _request_name(sid: SecretId) -> str:
    """The name as GetParameters takes it: ``name``, ``name:3``, ``name:label``."""
    if sid.version is None:
        return sid.name
    return f"{sid.name}:{sid.version.partition('=')[2]}"
