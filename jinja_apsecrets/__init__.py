"""Jinja2 templates that pull secrets from secret managers at render time."""
