"""One HTTP session recipe for the providers that speak REST through ``requests``.

Vault (through hvac) and Conjur share it, so both retry transient failures the
same way, as botocore's "standard" retry mode does for AWS:

* what is retried: a refused or reset connection, a read that fails after the
  request was sent (only for idempotent methods, where a second attempt can do
  no harm), and the gateway answers 502, 503 and 504 (a proxy or load balancer
  in front of a restarting, sealed or standby server);
* how often: ``retries`` more attempts (default 2, so 3 in all);
* how long between: "full jitter" backoff, a random wait between 0 and
  ``backoff * 2**(n-1)`` seconds before the n-th retry, capped at
  :data:`BACKOFF_MAX`. Many processes that lost the same server then do not
  come back in lock-step. ``Retry-After`` is ignored: it may ask for minutes,
  and a render must stay bounded.

So a request takes at most ``(retries + 1) * timeout`` plus the backoff waits
(under ``backoff * (2**retries - 1)`` seconds: 1.5 s with the defaults).
After the last attempt, the last answer (a 503, say) is handed to the caller,
which reports it as ``SECRET_MANAGER_CONNECTION_FAILED``.

``requests`` and ``urllib3`` are imported when a session is made, not when
this module is, so offline validation never loads them.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..errors import SecretValidationError

if TYPE_CHECKING:
    import requests

__all__ = ["BACKOFF_MAX", "DEFAULT_BACKOFF", "DEFAULT_RETRIES", "RETRY_STATUSES", "session"]

#: Extra attempts after the first, unless a connection sets ``retries``.
DEFAULT_RETRIES = 2
#: Seconds: the first retry waits up to this long, each later one twice as long.
DEFAULT_BACKOFF = 0.5
#: Seconds: no single wait is longer.
BACKOFF_MAX = 5.0
#: Answers that mean "not now" from a gateway or a server that is not ready.
RETRY_STATUSES = frozenset({502, 503, 504})
#: Methods a repeated request cannot harm (a read, or a login that only issues a token).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def _retry_class() -> type[Any]:
    from urllib3.util.retry import Retry

    class JitteredRetry(Retry):
        """urllib3's ``Retry`` with full-jitter backoff from the first retry on.

        urllib3's own schedule retries the first time at once and adds jitter
        on top of a fixed wait; clients that failed together would retry
        together.
        """

        #: The random source; tests may seed or replace it.
        rng: random.Random = random.Random()  # noqa: S311 - timing jitter, not secrecy

        def get_backoff_time(self) -> float:
            failures = 0
            for attempt in reversed(self.history):
                if attempt.redirect_location is not None:
                    break
                failures += 1
            if failures == 0 or self.backoff_factor <= 0:
                return 0.0
            ceiling = min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))
            return float(self.rng.uniform(0.0, ceiling))

    return JitteredRetry


def retry_policy(
    retries: int, *, backoff: float = DEFAULT_BACKOFF, methods: Collection[str] = IDEMPOTENT
) -> Any:
    """The urllib3 ``Retry`` for ``retries`` extra attempts (0 turns retrying off)."""
    cls = _retry_class()
    return cls(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=False,  # requests follows redirects itself
        allowed_methods=frozenset(methods),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=BACKOFF_MAX,
        respect_retry_after_header=False,
        raise_on_status=False,  # the caller classifies the last answer
        raise_on_redirect=False,
    )


def session(
    *,
    retries: int,
    pool_size: int,
    backoff: float = DEFAULT_BACKOFF,
    methods: Collection[str] = IDEMPOTENT,
) -> requests.Session:
    """A ``requests`` session whose adapters pool ``pool_size`` connections per
    host and retry transient failures (see the module docstring)."""
    import requests
    from requests.adapters import HTTPAdapter

    http = requests.Session()
    adapter = HTTPAdapter(
        pool_maxsize=pool_size,
        max_retries=retry_policy(retries, backoff=backoff, methods=methods),
    )
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


def missing_sdk(
    provider_id: str, extra: str, module: str, connection: str | None = None
) -> SecretValidationError:
    """The error for an SDK that is not installed, with the install command
    (the registry's words for the same problem)."""
    command = f"pip install 'jinja-apsecrets[{extra}]'"
    return SecretValidationError(
        f"provider {provider_id!r} needs {module}, which is not installed: {command}",
        provider=connection,
        hint=command,
    )
