"""Flask: secret references in ``app.jinja_env`` templates.

::

    from flask import Flask, render_template
    from jinja_apsecrets.integrations.flask import SecretsJinja

    app = Flask(__name__)
    app.config["APSECRETS_CONFIG"] = "apsecrets.yaml"    # relative to app.root_path
    SecretsJinja(app)

    # or, with an application factory:
    secrets = SecretsJinja()
    def create_app():
        app = Flask(__name__)
        app.config.from_prefixed_env()                    # FLASK_APSECRETS_CONFIG=...
        secrets.init_app(app)
        return app

Configuration, in order of precedence: the ``resolver`` argument, the
``config`` argument (a path or a mapping), then ``app.config["APSECRETS_CONFIG"]``.
A relative config path is taken relative to ``app.root_path``, as Flask's own
``app.config.from_file`` does.
``on_missing`` (``error``, ``undefined`` or ``keep``) comes from the argument,
else ``app.config["APSECRETS_ON_MISSING"]``, else the resolver's own policy.

Templates see what plain Jinja2 templates see with the extension: inline
references, ``secret("conn", "path")`` and the ``resolve_secrets`` filter.
Flask's autoescape (on for ``.html``, ``.htm``, ``.xml``, ``.xhtml``, ``.svg``)
escapes secret values like any other string. Variables passed to
``render_template`` are data: references in them are printed literally.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from ..errors import SecretValidationError
from ..resolver import OnMissing, Resolver
from ._common import add_secrets, as_on_missing, load_resolver

__all__ = ["EXTENSION_KEY", "SecretsJinja", "get_resolver"]

#: The key of the resolver in ``app.extensions``.
EXTENSION_KEY = "jinja_apsecrets"


class SecretsJinja:
    """The Flask extension: installs a secret resolver on ``app.jinja_env``.

    With ``app``, initializes it at once; otherwise call :meth:`init_app` for
    each application (the factory pattern). A ``resolver`` passed here is
    shared by every application initialized; without one, each application
    builds its own from ``config`` or from its ``APSECRETS_CONFIG`` setting.
    """

    def __init__(
        self,
        app: Flask | None = None,
        resolver: Resolver | None = None,
        *,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        on_missing: OnMissing | None = None,
    ) -> None:
        self.resolver = resolver
        self.config = config
        self.on_missing = as_on_missing(on_missing, "SecretsJinja")
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Add the extension to ``app.jinja_env`` and install the resolver.

        The resolver is stored in ``app.extensions["jinja_apsecrets"]``.
        Templates compiled before are dropped from the template cache.
        """
        resolver = self.resolver
        if resolver is None:
            source = self.config if self.config is not None else app.config.get("APSECRETS_CONFIG")
            if source is None:
                raise SecretValidationError(
                    "No secrets configuration for this Flask app: pass SecretsJinja(resolver=...) "
                    "or config=..., or set app.config['APSECRETS_CONFIG'] to a file or a mapping"
                )
            resolver = load_resolver(source, base=app.root_path)
        on_missing = self.on_missing
        if on_missing is None:
            setting = app.config.get("APSECRETS_ON_MISSING")
            on_missing = as_on_missing(setting, "app.config['APSECRETS_ON_MISSING']")
        add_secrets(app.jinja_env, resolver, on_missing)
        app.extensions[EXTENSION_KEY] = resolver


def get_resolver(app: Flask | None = None) -> Resolver:
    """The resolver of ``app`` (default: the current app), e.g. for
    ``get_resolver().resolve(settings)`` in a view."""
    target = current_app if app is None else app
    try:
        resolver: Resolver = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise SecretValidationError(
            "SecretsJinja was not initialized on this Flask app: call SecretsJinja(app)"
        ) from None
    return resolver
