# jinja_apsecrets: the apsecret Ansible lookup plugin, kept for compatibility (MIT licence).
# ruff: noqa: E402
"""Lookup ``apsecret``: the first release's name for ``apsecrets.core.secret``.

Playbooks that put this directory on ``ANSIBLE_LOOKUP_PLUGINS`` keep working:
the plugin is the collection's lookup (same terms, options and errors) under
its old name. New playbooks call ``lookup('apsecrets.core.secret', ...)``,
which needs no setting at all. Ansible reads the options below from this
file's text, so they repeat the collection's.
"""

from __future__ import annotations

DOCUMENTATION = r"""
    name: apsecret
    author: jinja_apsecrets developers
    short_description: former name of the apsecrets.core.secret lookup
    description:
      - Same as C(apsecrets.core.secret), which needs no C(ANSIBLE_LOOKUP_PLUGINS) setting.
    options:
      _terms:
        description: Secret references.
        required: true
        type: list
        elements: str
      config:
        description: The jinja_apsecrets configuration file.
        type: str
        env:
          - name: APSECRETS_CONFIG
        vars:
          - name: apsecrets_config
      on_missing:
        description: What a missing secret gives (error, undefined, keep).
        type: str
        default: error
        choices: [error, undefined, keep]
      default:
        description: The value of a missing secret under O(on_missing=undefined).
        type: raw
"""

from ansible_collections.apsecrets.core.plugins.lookup.secret import (  # type: ignore[import-not-found, unused-ignore]
    LookupModule as _SecretLookup,
)


class LookupModule(_SecretLookup):  # type: ignore[misc, valid-type, unused-ignore]
    """``lookup('apsecret', ...)``: see ``apsecrets.core.secret``."""
