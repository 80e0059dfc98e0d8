"""Django: a Jinja2 template backend that resolves secret references.

In ``settings.py``::

    TEMPLATES = [
        {
            "BACKEND": "jinja_apsecrets.integrations.django.Jinja2",
            "NAME": "jinja2",
            "DIRS": [BASE_DIR / "jinja2"],
            "APP_DIRS": True,
            "OPTIONS": {
                "apsecrets_config": BASE_DIR / "apsecrets.yaml",  # or a dict, or a Resolver
                "on_missing": "error",                            # optional
            },
        },
    ]

Give it a ``NAME``: Django names an engine after its module by default, and
this module's name, ``django``, is also the default name of Django's own
``DjangoTemplates`` engine (which the admin needs), so the two would clash.

It is Django's own :class:`django.template.backends.jinja2.Jinja2` backend
with the extension added and a resolver installed; every other option
(``environment``, ``extensions``, ``context_processors``, ...) means what it
means there. A relative ``apsecrets_config`` path is taken relative to the
current directory: prefer an absolute one. Django's backend turns on
autoescape by default, which applies to secret values too. Variables passed to
``render()`` are data: references in them are printed literally.

A reference that fails validation when a template is compiled (an unknown
connection, a malformed path) raises Django's ``TemplateSyntaxError``, with
the template's debug information, from a ``SecretReferenceSyntaxError``
carrying the code ``VALIDATION``. A missing secret raises the library's
:class:`~jinja_apsecrets.SecretNotFoundError` naming template and line.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped, unused-ignore]
from django.template.backends.jinja2 import (  # type: ignore[import-untyped, unused-ignore]
    Jinja2 as DjangoJinja2,
)

from ..resolver import Resolver
from ._common import EXTENSION, add_secrets, as_on_missing, load_resolver

__all__ = ["Jinja2"]


class Jinja2(DjangoJinja2):  # type: ignore[misc]
    """Django's Jinja2 backend with secret references.

    OPTIONS it reads itself: ``apsecrets_config`` (required: a config file
    path, a mapping of the config file's shape, or a :class:`Resolver`) and
    ``on_missing`` (``error``, ``undefined`` or ``keep``; default: the
    resolver's policy). The resolver is :attr:`resolver`.
    """

    resolver: Resolver

    def __init__(self, params: dict[str, Any]) -> None:
        params = params.copy()
        options = dict(params.get("OPTIONS") or {})
        name = params.get("NAME") or "jinja_apsecrets"
        if "apsecrets_config" not in options:
            raise ImproperlyConfigured(
                f"TEMPLATES backend {name!r}: set OPTIONS['apsecrets_config'] to the secrets "
                "configuration (a file path, a dict, or a jinja_apsecrets.Resolver)"
            )
        source = options.pop("apsecrets_config")
        on_missing = as_on_missing(options.pop("on_missing", None), f"TEMPLATES {name!r} OPTIONS")
        extensions = list(options.get("extensions", ()))
        if EXTENSION not in extensions:
            extensions.append(EXTENSION)
        options["extensions"] = extensions
        params["OPTIONS"] = options
        super().__init__(params)
        self.resolver = load_resolver(source)
        # add_secrets adds the extension itself if a custom ``environment``
        # callable did not pass the extensions on.
        add_secrets(self.env, self.resolver, on_missing)
