"""Flask: SecretsJinja on a real app, rendered through Flask's test client."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import flask
import pytest
from support import FakeClock

from jinja_apsecrets import Resolver, SecretNotFoundError, SecretValidationError
from jinja_apsecrets.integrations.flask import SecretsJinja, get_resolver

PAGES = {
    "page.html": "<p>pw=<<local|ap_sep_v1|app:db_password>></p>\n",
    "markup.html": "<p><<local|ap_sep_v1|app:html>> {{ secret('local', 'app:html') }}</p>",
    "plain.txt": "raw=<<local|ap_sep_v1|app:html>>",
    "user.html": "{{ value }}",
    "missing.html": "line 1\nkey=<<local|ap_sep_v1|app:nope>>\n",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text(
        "app:\n  db_password: flask-Secret-1\n  html: '<b>&''\"'\n"
    )
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "templates").mkdir()
    for name, text in PAGES.items():
        (tmp_path / "templates" / name).write_text(text)
    return tmp_path


def make_app(site: Path, **config: object) -> flask.Flask:
    app = flask.Flask(__name__, root_path=str(site), template_folder="templates")
    app.config.update({"TESTING": True, "APSECRETS_CONFIG": "apsecrets.yaml", **config})

    @app.get("/<name>")
    def page(name: str) -> str:
        return flask.render_template(name, value=flask.request.args.get("value"))

    return app


@pytest.fixture
def app(site: Path) -> Iterator[flask.Flask]:
    app = make_app(site)
    SecretsJinja(app)
    yield app
    get_resolver(app).close()


class TestRender:
    def test_reference_renders_the_value(self, app: flask.Flask) -> None:
        assert app.test_client().get("/page.html").text == "<p>pw=flask-Secret-1</p>"

    def test_autoescape_applies_to_values(self, app: flask.Flask) -> None:
        body = app.test_client().get("/markup.html").text
        assert body == "<p>&lt;b&gt;&amp;&#39;&#34; &lt;b&gt;&amp;&#39;&#34;</p>"

    def test_no_autoescape_for_text_templates(self, app: flask.Flask) -> None:
        assert app.test_client().get("/plain.txt").text == "raw=<b>&'\""

    def test_variables_are_data(self, app: flask.Flask) -> None:
        ref = "<<local|ap_sep_v1|app:db_password>>"
        body = app.test_client().get("/user.html", query_string={"value": ref}).text
        assert body == "&lt;&lt;local|ap_sep_v1|app:db_password&gt;&gt;"


class TestErrors:
    def test_missing_secret_names_code_template_and_line(self, app: flask.Flask) -> None:
        with pytest.raises(SecretNotFoundError) as info:
            app.test_client().get("/missing.html")
        err = info.value
        assert (err.code, err.template, err.lineno) == (
            "SECRET_MANAGER_GET_SECRET_FAILED",
            "missing.html",
            2,
        )
        assert "app:nope" in str(err)
        assert "flask-Secret-1" not in str(err)

    def test_missing_secret_is_a_500_outside_testing(self, site: Path) -> None:
        app = make_app(site, TESTING=False)
        SecretsJinja(app)
        assert app.test_client().get("/missing.html").status_code == 500

    def test_no_configuration_is_a_clear_error(self, site: Path) -> None:
        app = make_app(site, APSECRETS_CONFIG=None)
        with pytest.raises(SecretValidationError, match="APSECRETS_CONFIG"):
            SecretsJinja(app)

    def test_bad_on_missing_setting(self, site: Path) -> None:
        app = make_app(site, APSECRETS_ON_MISSING="ignore")
        with pytest.raises(SecretValidationError, match="APSECRETS_ON_MISSING"):
            SecretsJinja(app)


class TestSetup:
    def test_factory_pattern_and_on_missing_setting(self, site: Path) -> None:
        secrets = SecretsJinja()
        app = make_app(site, APSECRETS_ON_MISSING="keep")
        secrets.init_app(app)
        with app.app_context():
            assert get_resolver() is app.extensions["jinja_apsecrets"]
        # A kept reference is template text: it is not escaped.
        body = app.test_client().get("/missing.html").text
        assert body == "line 1\nkey=<<local|ap_sep_v1|app:nope>>"

    def test_shared_resolver_and_config_mapping(self, site: Path) -> None:
        config = {
            "connections": {"local": {"provider": "file", "path": str(site / "secrets.yaml")}}
        }
        with Resolver.from_config(config) as resolver:
            app = make_app(site, APSECRETS_CONFIG=None)
            SecretsJinja(app, resolver, on_missing="undefined")
            assert get_resolver(app) is resolver
            assert app.test_client().get("/missing.html").text == "line 1\nkey="
        other = make_app(site, APSECRETS_CONFIG=None)
        SecretsJinja(other, config=config)
        assert other.test_client().get("/page.html").text == "<p>pw=flask-Secret-1</p>"

    def test_init_twice_adds_the_extension_once(self, app: flask.Flask) -> None:
        SecretsJinja(app, get_resolver(app))
        names = [n for n in app.jinja_env.extensions if n.startswith("jinja_apsecrets")]
        assert names == ["jinja_apsecrets.extension.SecretsExtension"]
        assert app.test_client().get("/page.html").text == "<p>pw=flask-Secret-1</p>"


class TestExample:
    def test_examples_flask_app(self, monkeypatch: pytest.MonkeyPatch) -> None:
        path = Path(__file__).parents[1] / "examples" / "flask" / "app.py"
        spec = importlib.util.spec_from_file_location("apsecrets_flask_example", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # Flask finds root_path there
        spec.loader.exec_module(module)
        client = module.app.test_client()
        assert "<code>pk_flask_example_123</code>" in client.get("/").text
        assert client.get("/status").json == {"database_user": "app", "password_length": 28}
        get_resolver(module.app).close()


LEAKS = {
    "include.html": '{% include secret("local", "app:db_password") | upper %}',
    "key.html": '{{ {}[secret("local", "app:db_password")[2:]] + 1 }}',
}


#: A value with no 4-character piece in common with a traceback's own text.
LEAKED = "Zq8vXw3Kp"


def hidden(text: str, value: str = LEAKED) -> bool:
    """No 4-character piece of ``value`` (any case, or reversed) in ``text``."""
    low = text.lower()
    pieces = {value.lower()[i : i + 4] for i in range(len(value) - 3)}
    return not any(p in low or p[::-1] in low for p in pieces)


class TestRedaction:
    """Jinja2's own messages quote a value; the error page and the log show it redacted."""

    @pytest.fixture(autouse=True)
    def distinct_value(self, site: Path) -> None:
        (site / "secrets.yaml").write_text(f"app: {{db_password: {LEAKED}}}\n")

    @pytest.mark.parametrize("name", sorted(LEAKS))
    def test_logged_error_is_redacted(
        self, site: Path, name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        (site / "templates" / name).write_text(LEAKS[name])
        app = make_app(site, TESTING=False, PROPAGATE_EXCEPTIONS=False)
        SecretsJinja(app)
        with caplog.at_level(logging.ERROR):
            response = app.test_client().get(f"/{name}")
        get_resolver(app).close()
        assert response.status_code == 500
        logged = "\n".join(
            f"{r.getMessage()}\n{logging.Formatter().formatException(r.exc_info)}"
            for r in caplog.records
            if r.exc_info
        )
        assert "<redacted>" in logged
        assert hidden(logged)

    def test_werkzeug_debug_page_is_redacted(self, site: Path) -> None:
        from werkzeug.debug import DebuggedApplication

        (site / "templates" / "include.html").write_text(LEAKS["include.html"])
        app = make_app(site, TESTING=False, PROPAGATE_EXCEPTIONS=True)
        SecretsJinja(app)
        app.wsgi_app = DebuggedApplication(app.wsgi_app, evalex=False)  # type: ignore[method-assign]
        response = app.test_client().get("/include.html")
        get_resolver(app).close()
        assert response.status_code == 500
        assert "TemplateNotFound" in response.text
        assert "&lt;redacted&gt;" in response.text
        assert hidden(response.text)

    def test_messages_without_a_value_are_kept(self, site: Path) -> None:
        (site / "templates" / "add.html").write_text("{{ secret('local', 'app:db_password') + 1 }}")
        app = make_app(site)
        SecretsJinja(app)
        with pytest.raises(TypeError, match=r'can only concatenate str \(not "int"\) to str'):
            app.test_client().get("/add.html")
        get_resolver(app).close()


class TestMissingWarnings:
    def test_once_per_reference_per_ttl(self, site: Path, caplog: pytest.LogCaptureFixture) -> None:
        clock = FakeClock()
        resolver = Resolver.from_config(site / "apsecrets.yaml", ttl=60, timer=clock)
        app = make_app(site, APSECRETS_ON_MISSING="undefined")
        SecretsJinja(app, resolver=resolver)
        client = app.test_client()

        def warnings() -> int:
            return sum("app:nope missing" in r.getMessage() for r in caplog.records)

        with caplog.at_level(logging.WARNING, logger="jinja_apsecrets"):
            for _ in range(5):
                assert client.get("/missing.html").text == "line 1\nkey="
            assert warnings() == 1
            clock.advance(61)
            client.get("/missing.html")
            assert warnings() == 2
        resolver.close()
