"""Django: the Jinja2 backend, through render_to_string and the test Client.

Django is configured once per process, minimally, here; each test installs its
own TEMPLATES with override_settings, so nothing leaks into other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template import TemplateSyntaxError, engines
from django.template.loader import render_to_string
from django.test import Client, override_settings
from django.urls import path

from jinja_apsecrets import Resolver, SecretNotFoundError, SecretReferenceSyntaxError

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="jinja-apsecrets-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        TEMPLATES=[],
        ROOT_URLCONF=__name__,
    )
    django.setup()


def page(request: HttpRequest, name: str) -> HttpResponse:
    return render(request, name, {"value": request.GET.get("value", "")}, using="jinja2")


urlpatterns = [path("<str:name>", page)]

PAGES = {
    "page.html": "pw=<<local|ap_sep_v1|app:db_password>> {{ value }}",
    "html.html": '<p title="{{ secret("local", "app:html") }}"><<local|ap_sep_v1|app:html>></p>',
    "missing.html": "line 1\n<<local|ap_sep_v1|app:nope>>",
    "unknown.html": "<<nowhere|ap_sep_v1|app:x>>",
    "plain.html": "{{ 6 * 7 }}",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text("app:\n  db_password: dj-Secret-1\n  html: '<b>&''\"'\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    for name, text in PAGES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def templates(site: Path, **options: Any) -> list[dict[str, Any]]:
    return [
        {"BACKEND": "django.template.backends.django.DjangoTemplates"},
        {
            "BACKEND": "jinja_apsecrets.integrations.django.Jinja2",
            "NAME": "jinja2",
            "DIRS": [site],
            "OPTIONS": {"apsecrets_config": site / "apsecrets.yaml", **options},
        },
    ]


@pytest.fixture
def configured(site: Path) -> Iterator[Resolver]:
    with override_settings(TEMPLATES=templates(site)):
        resolver: Resolver = engines["jinja2"].resolver
        yield resolver
        resolver.close()


class TestRender:
    def test_render_to_string(self, configured: Resolver) -> None:
        assert render_to_string("page.html", {"value": "<i>"}) == "pw=dj-Secret-1 &lt;i&gt;"

    def test_autoescape_applies_to_values(self, configured: Resolver) -> None:
        html = render_to_string("html.html")
        assert html == '<p title="&lt;b&gt;&amp;&#39;&#34;">&lt;b&gt;&amp;&#39;&#34;</p>'

    def test_test_client_and_urlconf(self, configured: Resolver) -> None:
        response = Client().get("/page.html", {"value": "<<local|ap_sep_v1|app:db_password>>"})
        assert response.status_code == 200
        assert response.content == (
            b"pw=dj-Secret-1 &lt;&lt;local|ap_sep_v1|app:db_password&gt;&gt;"
        )

    def test_templates_without_references_are_plain(self, configured: Resolver) -> None:
        assert render_to_string("plain.html") == "42"


class TestErrors:
    def test_missing_secret(self, configured: Resolver) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            Client().get("/missing.html")
        assert (info.value.code, info.value.template, info.value.lineno) == (
            "SECRET_MANAGER_GET_SECRET_FAILED",
            "missing.html",
            2,
        )

    def test_unknown_connection_is_a_template_syntax_error(self, configured: Resolver) -> None:
        with pytest.raises(TemplateSyntaxError) as info:
            render_to_string("unknown.html")
        cause = info.value.__cause__
        assert isinstance(cause, SecretReferenceSyntaxError)
        assert cause.code == "VALIDATION"
        assert info.value.template_debug["name"].endswith("unknown.html")

    def test_config_is_required(self, site: Path) -> None:
        backend = templates(site)[1]
        del backend["OPTIONS"]["apsecrets_config"]
        with override_settings(TEMPLATES=[backend]), pytest.raises(ImproperlyConfigured):
            engines["jinja2"]


class TestOptions:
    def test_on_missing_and_a_shared_resolver(self, site: Path) -> None:
        config = {
            "connections": {"local": {"provider": "file", "path": str(site / "secrets.yaml")}}
        }
        with Resolver.from_config(config) as resolver:
            options = {"apsecrets_config": resolver, "on_missing": "undefined"}
            with override_settings(TEMPLATES=templates(site, **options)):
                assert engines["jinja2"].resolver is resolver
                assert render_to_string("missing.html") == "line 1\n"

    def test_custom_environment_and_extensions(self, site: Path) -> None:
        options = {"environment": "jinja2.Environment", "extensions": ["jinja2.ext.do"]}
        with override_settings(TEMPLATES=templates(site, **options)):
            env = engines["jinja2"].env
            assert "jinja2.ext.ExprStmtExtension" in env.extensions
            assert render_to_string("page.html") == "pw=dj-Secret-1 "


LEAKED = "Zq8vXw3Kp"  # no 4-character piece in common with a traceback's own text


def hidden(text: str) -> bool:
    """No 4-character piece of :data:`LEAKED` (any case, or reversed) in ``text``."""
    low = text.lower()
    pieces = {LEAKED.lower()[i : i + 4] for i in range(len(LEAKED) - 3)}
    return not any(p in low or p[::-1] in low for p in pieces)


class TestRedaction:
    """``{% include secret(..) %}`` fails with the value as the template name:
    Django's DEBUG page and the ``django.request`` log show it redacted."""

    def test_debug_page_and_log(self, site: Path, caplog: pytest.LogCaptureFixture) -> None:
        import logging
        import re

        (site / "secrets.yaml").write_text(f"app: {{db_password: {LEAKED}}}\n")
        (site / "leak.html").write_text('{% include secret("local", "app:db_password") | upper %}')
        with (
            override_settings(TEMPLATES=templates(site), DEBUG=True),
            caplog.at_level(logging.ERROR, logger="django.request"),
        ):
            resolver: Resolver = engines["jinja2"].resolver
            response = Client(raise_request_exception=False).get("/leak.html")
            resolver.close()
        assert response.status_code == 500
        page = response.content.decode()
        (message,) = re.findall(r'<pre class="exception_value">(.*?)</pre>', page, re.S)
        assert "&lt;redacted&gt;" in message
        assert hidden(message)
        logged = "\n".join(
            logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
        )
        assert "TemplateNotFound: '<redacted>'" in logged
        assert hidden(logged)
