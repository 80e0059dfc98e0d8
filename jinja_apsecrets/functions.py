"""What templates call: the ``secret()`` global, the ``resolve_secrets``,
``b64encode`` and ``b64decode`` filters, ``install_secret_resolver`` and the
missing-secret policies.

These know nothing of how templates are compiled; the extension uses the
helpers here for its own render-time calls.
"""

from __future__ import annotations

import base64
import binascii
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from jinja2 import pass_context
from jinja2.environment import Environment
from jinja2.runtime import Context
from jinja2.utils import missing

from .errors import SecretNotFoundError, SecretsError, SecretValidationError
from .reference import SEPARATOR
from .resolver import ON_MISSING, OnMissing, Resolver
from .runs import RenderCache, conceal_found
from .undefined import MissingSecret
from .values import SecretText
from .walk import collect, rebuild

__all__ = [
    "b64decode",
    "b64encode",
    "install_secret_resolver",
    "missing_value",
    "no_resolver",
    "on_missing_policy",
    "printed_value",
    "render_cache",
    "resolve_secrets",
    "secret",
    "then",
]

log = logging.getLogger("jinja_apsecrets")

T = TypeVar("T")
R = TypeVar("R")


def no_resolver(template: str | None, lineno: int | None) -> SecretValidationError:
    error = SecretValidationError(
        "No secret resolver is installed on this environment: "
        "call env.install_secret_resolver(Resolver.from_config(...))",
        template=template,
        lineno=lineno,
    )
    return error


def _location(default: str | None) -> tuple[str | None, int | None]:
    """Template name and line of the innermost template frame on the stack."""
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            return template.name, template.get_corresponding_lineno(frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return default, None


def on_missing_policy(environment: Environment, resolver: Resolver) -> OnMissing:
    policy: OnMissing | None = getattr(environment, "secret_on_missing", None)
    return policy or resolver.on_missing


def missing_value(
    error: SecretsError, ref: Sequence[Any], template: str | None, *, policy: OnMissing
) -> Any:
    """What a failed reference prints under ``policy``; raises for ``error``."""
    conn, path, text, lineno = ref
    if policy == "error" or not isinstance(error, SecretNotFoundError):
        raise error.locate(template, lineno)
    log.warning(
        "secret %s|%s missing in %s:%s (%s), %s",
        conn,
        path,
        template,
        lineno,
        error.code,
        "left as its reference text" if policy == "keep" else "printed as an empty value",
    )
    if policy == "keep":
        return text
    return MissingSecret(conn, path, error.message)


def printed_value(
    value: str | SecretsError, ref: Sequence[Any], policy: OnMissing, template: str | None
) -> Any:
    """A looked-up value as a template gets it: ``SecretText``, or what
    ``policy`` makes of an error (see :func:`missing_value`)."""
    if isinstance(value, SecretsError):
        value = missing_value(value, ref, template, policy=policy)
    return SecretText(value) if type(value) is str else value


# -- environment additions ---------------------------------------------------------


def install_secret_resolver(
    environment: Environment,
    resolver: Resolver | None,
    *,
    on_missing: OnMissing | None = None,
    resolve_values: bool = False,
) -> None:
    """Attach ``resolver`` to ``environment`` (bound as ``env.install_secret_resolver``).

    ``on_missing`` overrides the resolver's policy for this environment.
    ``resolve_values=True`` also resolves references in the values of template
    variables (looked up from the render's context, deeply, once per render):
    only for trusted inputs, since any such string could then read any secret
    the resolver can reach. Templates compiled before are dropped from
    the template cache, so they are validated against the new connections.
    """
    if on_missing is not None and on_missing not in ON_MISSING:
        raise SecretValidationError(f"on_missing must be one of {', '.join(ON_MISSING)}")
    env: Any = environment
    env.secret_resolver = resolver
    env.secret_on_missing = on_missing
    env.secret_render_cache = RenderCache(resolver) if resolver is not None else None
    if bool(resolve_values) != bool(env.secret_resolve_values):
        env.secret_resolve_values = bool(resolve_values)
        if resolve_values:
            env.context_class = _resolving_context(env.context_class)
        elif issubclass(env.context_class, _ResolvingMixin):
            env.context_class = next(
                c for c in env.context_class.__mro__[1:] if not issubclass(c, _ResolvingMixin)
            )
    if environment.cache is not None:
        environment.cache.clear()


def _resolving_context(base: type[Context]) -> type[Context]:
    """``base`` with variable lookups that resolve references (``resolve_values``)."""
    if issubclass(base, _ResolvingMixin):
        return base
    if base is Context:
        return _ResolvingMixin  # importable, so the environment still pickles
    return type(f"Resolving{base.__name__}", (_ResolvingMixin, base), {})


class _ResolvingMixin(Context):
    """Resolves references in the values of variables when a template looks them
    up (render arguments, globals), deeply, once per render. Only values read
    from the context are resolved, never printed output, so a secret value,
    however it is later combined, is never parsed again."""

    def resolve_or_missing(self, key: str) -> Any:
        value = super().resolve_or_missing(key)
        if value is missing or isinstance(value, SecretText):
            return value
        if key in self.vars:
            # Set by the template (seen from a block), perhaps from a secret:
            # data. A variable handed to an included template is a plain
            # context value there, and is resolved (see README, limitations).
            return value
        if not isinstance(value, (str, Mapping, list, tuple)) or (
            isinstance(value, str) and SEPARATOR not in value
        ):
            return value
        done: dict[str, Any] = self.__dict__.setdefault("_apsecrets_resolved", {})
        if key in done:
            return done[key]
        env: Any = self.environment
        resolver: Resolver | None = env.secret_resolver
        refs = collect(value) if resolver is not None else []
        if resolver is not None and refs:
            policy = on_missing_policy(env, resolver)
            value = _rebuilt(self, value, resolver.lookup({r.key for r in refs}), policy)
        done[key] = value
        return value


def render_cache(environment: Environment, resolver: Resolver) -> RenderCache:
    """The environment's cache of rendered runs and values for ``resolver``
    (a new one if the resolver was set without ``install_secret_resolver``)."""
    env: Any = environment
    cache: RenderCache | None = env.secret_render_cache
    if cache is None or cache.resolver is not resolver:
        cache = env.secret_render_cache = RenderCache(resolver)
    return cache


@pass_context
def secret(context: Context, connection: str, path: str) -> Any:
    """The function form: ``{{ secret("aws", "prod/tls:cert") | indent(4) }}``.

    Paths may be computed. Returns the value (``SecretText``), or under the
    lenient policies the reference text or a :class:`MissingSecret`. Compiled
    templates answer a warm call from the render cache before calling this.
    """
    env: Any = context.environment
    resolver: Resolver | None = env.secret_resolver
    if resolver is None:
        raise no_resolver(*_location(context.name))
    if not isinstance(connection, str) or not isinstance(path, str):
        name, lineno = _location(context.name)
        raise SecretValidationError(
            "secret() takes a connection name and a path, both strings "
            f"(got {type(connection).__name__} and {type(path).__name__})",
            template=name,
            lineno=lineno,
        )
    ref = (connection, path)
    generation = resolver.generation()
    finish = partial(_secret_value, context, resolver, ref, generation)
    if env.is_async:
        return then(resolver.lookup_async([ref], template=context.name), finish)
    return finish(resolver.lookup([ref], template=context.name))


def _secret_value(
    context: Context,
    resolver: Resolver,
    ref: tuple[str, str],
    generation: int,
    found: Mapping[tuple[str, str], tuple[str | SecretsError, float]],
) -> Any:
    value, expires = found[ref]
    if isinstance(value, SecretsError):
        name, lineno = _location(context.name)
        text = f"<<{ref[0]}|{SEPARATOR}|{ref[1]}>>"
        policy = on_missing_policy(context.environment, resolver)
        return printed_value(value, (*ref, text, lineno), policy, name)
    concealed = SecretText(value)
    render_cache(context.environment, resolver).store_value(ref, concealed, expires, generation)
    return concealed


@pass_context
def resolve_secrets(context: Context, value: Any) -> Any:
    """Filter: resolve references inside a trusted value (strings, dicts, lists)."""
    env: Any = context.environment
    resolver: Resolver | None = env.secret_resolver
    if resolver is None:
        raise no_resolver(*_location(context.name))
    refs = collect(value)
    if not refs:
        return value
    policy = on_missing_policy(env, resolver)
    keys = {r.key for r in refs}
    if env.is_async:
        found = resolver.lookup_async(keys, template=context.name)
        return then(found, lambda f: _rebuilt(context, value, f, policy))
    return _rebuilt(context, value, resolver.lookup(keys, template=context.name), policy)


def _rebuilt(context: Context, value: Any, found: Any, policy: OnMissing) -> Any:
    """``value`` with the looked-up references written in (see :func:`rebuild`)."""
    values, _ = conceal_found(found)
    del found  # from here on, this frame holds values only as SecretText
    try:
        return rebuild(value, values, policy)
    except SecretsError as exc:
        raise exc.locate(*_location(context.name)) from None


async def then(awaitable: Awaitable[T], finish: Callable[[T], R]) -> R:
    """``finish`` applied to what ``awaitable`` gives: the async door of a
    helper whose sync door calls ``finish`` directly (one body for both)."""
    return finish(await awaitable)


# -- base64, for manifests such as Kubernetes Secrets --------------------------------


def b64encode(value: Any, encoding: str = "utf-8") -> str:
    """Filter: ``value`` (text) base64-encoded. A secret stays a
    :class:`SecretText`, so its encoding is hidden as the value is."""
    data = value if isinstance(value, bytes) else str(value).encode(encoding)
    encoded = base64.b64encode(data).decode("ascii")
    return SecretText(encoded) if isinstance(value, SecretText) else encoded


def b64decode(value: Any, encoding: str = "utf-8") -> str:
    """Filter: base64 ``value`` decoded to text. A secret stays a
    :class:`SecretText`; input that is not base64 (or not text once decoded)
    is a ``ValueError`` that does not quote it."""
    try:
        decoded = base64.b64decode(str(value).encode("ascii"), validate=True).decode(encoding)
    except (binascii.Error, UnicodeError):
        raise ValueError(f"b64decode: the input is not base64 of {encoding} text") from None
    return SecretText(decoded) if isinstance(value, SecretText) else decoded
