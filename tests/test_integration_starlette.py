"""FastAPI / Starlette: install() on Jinja2Templates, tested with FastAPI's TestClient.

No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations,
which refer to local names.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import jinja2
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from fastapi.testclient import TestClient

from jinja_apsecrets import Resolver, SecretNotFoundError
from jinja_apsecrets.fetching import Fetcher
from jinja_apsecrets.integrations.starlette import install, prefetch, resolved, template_response

PAGES = {
    "base.html": "<title><<local|ap_sep_v1|app:title>></title>{% block body %}{% endblock %}",
    "page.html": '{% extends "base.html" %}{% block body %}pw=<<local|ap_sep_v1|app:db_password>> user={{ user }}{% endblock %}',
    "missing.html": "line 1\n<<local|ap_sep_v1|app:nope>>",
}
SETTINGS = {"db": {"password": "<<local|ap_sep_v1|app:db_password>>", "port": 5432}}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text("app:\n  db_password: api-Secret-1\n  title: A&B\n")
    for name, text in PAGES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def audit() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def resolver(site: Path, audit: list[dict[str, Any]]) -> Iterator[Resolver]:
    config = {
        "connections": {
            "local": {"provider": "file", "path": str(site / "secrets.yaml"), "ttl": 60}
        }
    }
    with Resolver.from_config(config, audit=audit.append) as resolver:
        yield resolver


def make_client(templates: Jinja2Templates, resolver: Resolver) -> TestClient:
    app = FastAPI()

    @app.get("/sync/{name}")
    async def sync_in_loop(request: Request, name: str) -> HTMLResponse:
        # A synchronous render inside the running event loop.
        return templates.TemplateResponse(request, name, {"user": request.query_params.get("u")})

    @app.get("/string")
    async def string_in_loop() -> HTMLResponse:
        return HTMLResponse(templates.env.from_string("<<local|ap_sep_v1|app:title>>").render())

    @app.get("/async/{name}")
    async def rendered_async(request: Request, name: str) -> HTMLResponse:
        return await template_response(templates, request, name, {"user": "ada"})

    @app.get("/settings")
    async def settings(conf: Annotated[Any, Depends(resolved(resolver, SETTINGS))]) -> Any:
        return conf

    return TestClient(app)


@pytest.fixture
def client(site: Path, resolver: Resolver) -> TestClient:
    templates = Jinja2Templates(directory=site)
    install(templates, resolver)
    return make_client(templates, resolver)


class TestTemplateResponse:
    def test_reference_in_template_tree(self, client: TestClient) -> None:
        response = client.get("/sync/page.html", params={"u": "<i>"})
        assert response.text == "<title>A&amp;B</title>pw=api-Secret-1 user=&lt;i&gt;"
        assert response.template.name == "page.html"  # type: ignore[attr-defined]

    def test_variables_are_data(self, client: TestClient) -> None:
        response = client.get("/sync/page.html", params={"u": "<<local|ap_sep_v1|app:title>>"})
        assert response.text.endswith("user=&lt;&lt;local|ap_sep_v1|app:title&gt;&gt;")

    def test_from_string_render_inside_the_loop(self, client: TestClient) -> None:
        assert client.get("/string").text == "A&amp;B"

    def test_missing_secret_raises_with_location(self, client: TestClient) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            client.get("/sync/missing.html")
        assert (info.value.template, info.value.lineno) == ("missing.html", 2)
        assert "api-Secret-1" not in str(info.value)


class TestAsync:
    def test_template_response_fetches_on_the_loop_first(
        self, client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def sync_fetch(*args: object) -> None:
            raise AssertionError("fetched synchronously")

        monkeypatch.setattr(Fetcher, "fetch", sync_fetch)
        with pytest.raises(AssertionError, match="fetched synchronously"):
            client.get("/sync/page.html")  # the control: TemplateResponse fetches in the render
        response = client.get("/async/page.html")
        assert response.text == "<title>A&amp;B</title>pw=api-Secret-1 user=ada"

    def test_prefetch_covers_the_template_tree(
        self, site: Path, resolver: Resolver, audit: list[dict[str, Any]]
    ) -> None:
        env = install(jinja2.Environment(loader=jinja2.FileSystemLoader(site)), resolver)
        asyncio.run(prefetch(env, "page.html"))
        assert sorted(a["path"] for a in audit) == ["app:db_password", "app:title"]

    def test_prefetch_leaves_uncached_connections_to_the_render(
        self, site: Path, audit: list[dict[str, Any]]
    ) -> None:
        config = {
            "connections": {"local": {"provider": "file", "path": str(site / "secrets.yaml")}}
        }
        with Resolver.from_config(config, audit=audit.append) as resolver:
            env = install(jinja2.Environment(loader=jinja2.FileSystemLoader(site)), resolver)
            asyncio.run(prefetch(env, "page.html"))
        assert audit == []

    def test_async_environment_renders_with_render_async(
        self, site: Path, resolver: Resolver
    ) -> None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(site), enable_async=True, autoescape=True
        )
        templates = Jinja2Templates(env=env)
        install(env, resolver)
        response = make_client(templates, resolver).get("/async/page.html")
        assert response.text == "<title>A&amp;B</title>pw=api-Secret-1 user=ada"
        assert response.context["user"] == "ada"  # type: ignore[attr-defined]

    def test_missing_secret_through_template_response(self, client: TestClient) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            client.get("/async/missing.html")
        assert info.value.code == "SECRET_MANAGER_GET_SECRET_FAILED"


class TestDependency:
    def test_settings_resolved_in_a_dependency(self, client: TestClient) -> None:
        assert client.get("/settings").json() == {"db": {"password": "api-Secret-1", "port": 5432}}
        assert SETTINGS["db"]["password"] == "<<local|ap_sep_v1|app:db_password>>"

    def test_install_returns_the_environment_once_extended(
        self, site: Path, resolver: Resolver
    ) -> None:
        templates = Jinja2Templates(directory=site)
        assert install(templates, resolver) is install(templates, resolver, on_missing="keep")
        assert templates.get_template("missing.html").render() == (
            "line 1\n<<local|ap_sep_v1|app:nope>>"
        )


LEAKED = "Zq8vXw3Kp"  # no 4-character piece in common with a traceback's own text


def hidden(text: str) -> bool:
    """No 4-character piece of :data:`LEAKED` (any case, or reversed) in ``text``."""
    low = text.lower()
    pieces = {LEAKED.lower()[i : i + 4] for i in range(len(LEAKED) - 3)}
    return not any(p in low or p[::-1] in low for p in pieces)


class TestRedaction:
    """Jinja2's ``TemplateNotFound: <value>`` is redacted on Starlette's debug page."""

    @pytest.mark.parametrize("route", ["sync", "async"])
    def test_debug_page(self, site: Path, route: str) -> None:
        (site / "secrets.yaml").write_text(f"app: {{db_password: {LEAKED}}}\n")
        (site / "leak.html").write_text('{% include secret("local", "app:db_password")[::-1] %}')
        config = {
            "connections": {"local": {"provider": "file", "path": str(site / "secrets.yaml")}}
        }
        with Resolver.from_config(config) as resolver:
            templates = Jinja2Templates(directory=site)
            install(templates, resolver)
            app = FastAPI(debug=True)

            @app.get("/sync")
            async def sync_page(request: Request) -> HTMLResponse:
                return templates.TemplateResponse(request, "leak.html")

            @app.get("/async")
            async def async_page(request: Request) -> HTMLResponse:
                return await template_response(templates, request, "leak.html")

            client = TestClient(app, raise_server_exceptions=False)
            response = client.get(f"/{route}", headers={"accept": "text/html"})
        assert response.status_code == 500
        assert "TemplateNotFound" in response.text
        assert "&lt;redacted&gt;" in response.text
        assert hidden(response.text)
