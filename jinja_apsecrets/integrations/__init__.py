"""Integrations with web frameworks and tools, one module each.

Nothing here is imported by the core, and this package imports no framework:
each module imports its own framework, and only when you import that module.

- :mod:`jinja_apsecrets.integrations.flask`: the ``SecretsJinja`` Flask extension.
- :mod:`jinja_apsecrets.integrations.starlette`: ``install`` for Starlette's and
  FastAPI's ``Jinja2Templates``, async prefetch and rendering, a dependency helper.
- :mod:`jinja_apsecrets.integrations.django`: the ``Jinja2`` Django template backend.
- ``jinja_apsecrets/integrations/ansible/lookup/``: the ``apsecret`` Ansible lookup
  plugin (put that directory on ``ANSIBLE_LOOKUP_PLUGINS``).
"""
