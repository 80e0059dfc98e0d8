"""Starlette and FastAPI: secret references in ``Jinja2Templates``.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI, Request
    from fastapi.templating import Jinja2Templates
    from jinja_apsecrets import Resolver
    from jinja_apsecrets.integrations.starlette import install, resolved, template_response

    resolver = Resolver.from_config("apsecrets.yaml")
    templates = Jinja2Templates(directory="templates")
    install(templates, resolver)
    app = FastAPI()

    @app.get("/")
    async def home(request: Request):
        return await template_response(templates, request, "home.html", {"user": "ada"})

    DB = {"dsn": "<<aws|ap_sep_v1|prod/db:dsn>>"}
    Settings = Annotated[dict, Depends(resolved(resolver, DB))]

    @app.get("/db")
    async def db(settings: Settings):
        ...

``templates.TemplateResponse(...)`` keeps working as usual once installed: it
renders synchronously (inside the running loop in an ``async def`` endpoint,
in a worker thread in a plain ``def`` one), and a cache miss is fetched right
there, blocking the loop while it waits, as any synchronous I/O would.
:func:`template_response` fetches first, on the loop, the references of the
template and of the templates it extends, includes or imports (those of
connections that cache values), then renders from the cache; with an
``enable_async=True`` environment it renders with ``render_async``. Call
``resolver.close()`` when the application shuts down (in its lifespan).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import jinja2
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from ..functions import no_resolver
from ..prefetch import collect_static_refs, manifest_of
from ..resolver import OnMissing, Resolver
from ._common import add_secrets

__all__ = ["RenderedTemplateResponse", "install", "prefetch", "resolved", "template_response"]

T = TypeVar("T")


def _environment(templates_or_env: Jinja2Templates | jinja2.Environment) -> jinja2.Environment:
    if isinstance(templates_or_env, jinja2.Environment):
        return templates_or_env
    return templates_or_env.env


def install(
    templates_or_env: Jinja2Templates | jinja2.Environment,
    resolver: Resolver,
    *,
    on_missing: OnMissing | None = None,
) -> jinja2.Environment:
    """Add the extension to the templates' environment and install ``resolver``.

    Accepts a :class:`~starlette.templating.Jinja2Templates` (FastAPI's is the
    same class) or its ``.env``. Returns the environment.
    """
    return add_secrets(_environment(templates_or_env), resolver, on_missing)


async def prefetch(templates_or_env: Jinja2Templates | jinja2.Environment, name: str) -> None:
    """Fetch, on the running loop, the static references of template ``name``
    and of every template it loads, in one round.

    Failures are kept in the cache and raised by the render that uses them,
    with template and line. References of connections that cache nothing
    (``ttl: 0``, the ``env`` and ``file`` default) are left to the render,
    which would read them again anyway.
    """
    env = _environment(templates_or_env)
    resolver: Resolver | None = getattr(env, "secret_resolver", None)
    if resolver is None:
        raise no_resolver(name, None)
    template = env.get_template(name)
    own, deps = manifest_of(template)
    refs = resolver.cacheable(collect_static_refs(env, own, deps, template.name))
    if refs:
        await resolver.lookup_async(refs, template=template.name)


class RenderedTemplateResponse(HTMLResponse):
    """An HTML response from a template rendered beforehand (asynchronously).

    Like Starlette's own template response, it keeps ``template`` and
    ``context`` and reports them to the test client.
    """

    def __init__(
        self,
        template: jinja2.Template,
        context: dict[str, Any],
        content: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.template = template
        self.context = context
        super().__init__(content, status_code, headers, media_type, background)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "http.response.debug" in scope.get("extensions", {}):
            info = {"template": self.template, "context": self.context}
            await send({"type": "http.response.debug", "info": info})
        await super().__call__(scope, receive, send)


async def template_response(
    templates: Jinja2Templates,
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    media_type: str | None = None,
    background: BackgroundTask | None = None,
) -> HTMLResponse:
    """``templates.TemplateResponse(...)`` for ``async def`` endpoints.

    Secrets are fetched on the running loop before rendering, so the loop is
    never blocked by a secret manager; an ``enable_async=True`` environment is
    rendered with ``render_async``. Context processors and the ``request``
    variable work as with ``TemplateResponse``.
    """
    env = templates.env
    if not env.is_async:
        await prefetch(env, name)
        return templates.TemplateResponse(
            request, name, context, status_code, headers, media_type, background
        )
    context = context if context is not None else {}
    context.setdefault("request", request)
    for processor in templates.context_processors:
        context.update(processor(request))
    template = templates.get_template(name)
    content = await template.render_async(context)
    return RenderedTemplateResponse(
        template, context, content, status_code, headers, media_type, background
    )


def resolved(
    resolver: Resolver, obj: T, *, on_missing: OnMissing | None = None
) -> Callable[[], Coroutine[Any, Any, T]]:
    """A FastAPI dependency giving ``obj`` with its references resolved.

    ``Depends(resolved(resolver, {"db": {"password": "<<aws|ap_sep_v1|prod/db:password>>"}}))``
    resolves on the running loop, in one round, on every request; the
    resolver's cache makes repeated requests cheap. ``obj`` is never mutated.
    """

    async def dependency() -> T:
        value: T = await resolver.resolve_async(obj, on_missing=on_missing)
        return value

    return dependency
