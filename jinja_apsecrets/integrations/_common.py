"""Helpers the framework integrations share. Imports no framework.

:func:`add_secrets` does three things for every integration:

* adds the extension and installs the resolver;
* redacts Jinja2's (and Python's) own error messages that quote a value
  (``{% include secret(..) %}`` fails with ``TemplateNotFound: <the value>``,
  ``{{ d[secret(..)] }}`` with an ``UndefinedError`` naming it): the
  environment's ``handle_exception``, through which every render error passes,
  scrubs the exception's message in place with a
  :class:`~jinja_apsecrets.redaction.Redactor` fed by the resolver's
  ``on_value`` hook, so the framework's error page, its log record and an
  error reporter all see ``<redacted>``. The redactor keeps the most recent
  :data:`REDACTOR_SIZE` distinct values (values rotate in a long-lived app);
* makes the lenient policy's warning (``on_missing: undefined`` or ``keep``)
  appear once per reference per cache TTL instead of on every render
  (:class:`MissingWarningThrottle`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from ..errors import SecretValidationError
from ..extension import SecretsExtension
from ..redaction import Redactor
from ..resolver import ON_MISSING, OnMissing, Resolver

__all__ = [
    "ConfigSource",
    "MissingWarningThrottle",
    "RedactingErrors",
    "add_secrets",
    "as_on_missing",
    "load_resolver",
    "redactor_of",
]

#: How many distinct values an integration's redactor remembers.
REDACTOR_SIZE = 1000

EXTENSION = "jinja_apsecrets.SecretsExtension"

#: What an integration accepts as configuration: a ready resolver, a config
#: file path, or a mapping of the config file's shape.
ConfigSource = Resolver | str | os.PathLike[str] | Mapping[str, Any]


def load_resolver(source: ConfigSource, base: str | os.PathLike[str] | None = None) -> Resolver:
    """``source`` as a resolver; a relative config path is taken relative to ``base``."""
    if isinstance(source, Resolver):
        return source
    if isinstance(source, Mapping):
        return Resolver.from_config(source)
    path = Path(source).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return Resolver.from_config(path)


def as_on_missing(value: object, where: str) -> OnMissing | None:
    """Check an ``on_missing`` setting read from framework configuration."""
    if value is None or value in ON_MISSING:
        return value  # type: ignore[return-value]
    raise SecretValidationError(
        f"{where}: on_missing must be one of {', '.join(ON_MISSING)}, got {value!r}"
    )


def add_secrets(
    env: jinja2.Environment, resolver: Resolver, on_missing: OnMissing | None = None
) -> jinja2.Environment:
    """Add the extension to ``env`` (once) and install ``resolver`` on it,
    with error redaction and throttled missing-secret warnings (see the
    module docstring)."""
    if SecretsExtension.identifier not in env.extensions:
        env.add_extension(EXTENSION)
    env.install_secret_resolver(resolver, on_missing=on_missing)  # type: ignore[attr-defined]
    redactor = redactor_of(resolver)
    handler = env.__dict__.get("handle_exception")
    if isinstance(handler, RedactingErrors):
        handler.redactor = redactor
    else:
        env.handle_exception = RedactingErrors(env, redactor)  # type: ignore[method-assign]
    MissingWarningThrottle.install(env, resolver)
    return env


class _Fanout:
    """Calls two ``on_value`` hooks (the user's and the redactor's)."""

    def __init__(self, first: Callable[[str], None], second: Callable[[str], None]) -> None:
        self.first, self.second = first, second

    def __call__(self, value: str) -> None:
        self.first(value)
        self.second(value)


def redactor_of(resolver: Resolver) -> Redactor:
    """The redactor fed by ``resolver``'s ``on_value`` hook, added if missing
    (a hook already set is kept and called first)."""
    hook = resolver.on_value
    for candidate in (hook, getattr(hook, "second", None)):
        owner = getattr(candidate, "__self__", None)
        if isinstance(owner, Redactor):
            return owner
    redactor = Redactor(maxsize=REDACTOR_SIZE)
    resolver.on_value = redactor.add if hook is None else _Fanout(hook, redactor.add)
    return redactor


class RedactingErrors:
    """An environment's ``handle_exception``: Jinja's own (traceback
    rewriting), then the exception's messages redacted in place.

    The library's own errors are left as they are (their messages hold names
    and paths only). Pickles with the environment; the redactor comes back
    empty (see :class:`~jinja_apsecrets.redaction.Redactor`).
    """

    def __init__(self, env: jinja2.Environment, redactor: Redactor) -> None:
        self.env = env
        self.redactor = redactor

    def __call__(self, source: str | None = None) -> Any:
        try:
            # The class's method: a subclass's own handling still applies.
            return type(self.env).handle_exception(self.env, source)
        except BaseException as exc:
            self.redactor.redact_exception(exc)
            raise


#: The message of the lenient policy's warning (jinja_apsecrets.functions).
_MISSING_WARNING = "secret %s|%s missing"


class MissingWarningThrottle:
    """Lets the missing-secret warning of one reference through once per
    cache TTL (a web app renders a page many times a second; one line per
    reference per TTL says the same).

    One per environment (``env.secret_warning_throttle``), using its
    resolver's ``ttl`` and clock. :class:`_ThrottleFilter`, a filter on the
    ``jinja_apsecrets`` logger, finds the environment of the render that logs
    the warning and asks its throttle; environments without one (the CLI,
    plain Jinja2 use) are not affected.
    """

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._until: dict[tuple[Any, ...], float] = {}

    @classmethod
    def install(cls, env: jinja2.Environment, resolver: Resolver) -> MissingWarningThrottle:
        throttle = cls(resolver)
        env.secret_warning_throttle = throttle  # type: ignore[attr-defined]
        _ThrottleFilter.install()
        return throttle

    def allow(self, key: tuple[Any, ...]) -> bool:
        """Whether the warning for ``key`` is due (and, if so, note it)."""
        now = self.resolver.timer()
        if self._until.get(key, now) > now:
            return False
        if len(self._until) >= 10_000:
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[key] = now + max(self.resolver.ttl, 0.0)
        return True


class _ThrottleFilter(logging.Filter):
    """Routes each missing-secret warning to the throttle of the environment
    rendering it (found from the template frame on the stack, as the library
    finds template and line)."""

    @classmethod
    def install(cls) -> None:
        logger = logging.getLogger("jinja_apsecrets")
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(_MISSING_WARNING)):
            return True
        env = _render_env()
        if env is None:
            return True
        throttle = getattr(env, "secret_warning_throttle", None)
        args = record.args if isinstance(record.args, tuple) else ()
        if isinstance(throttle, MissingWarningThrottle) and not throttle.allow(tuple(args[:2])):
            return False
        handler = env.__dict__.get("handle_exception")
        if isinstance(handler, RedactingErrors) and len(args) > 1 and isinstance(args[1], str):
            # The path is written by the template and may be computed from a
            # value (secret("aws", "db:" ~ secret(..))): no whole value in the log.
            record.args = (args[0], handler.redactor.redact_values(args[1]), *args[2:])
        return True


def _render_env() -> jinja2.Environment | None:
    """The environment of the template rendering on this thread's stack."""
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            env: jinja2.Environment = template.environment
            return env
        frame = frame.f_back  # type: ignore[assignment]
    return None
