"""Ansible support: the parts of the ``apsecrets.core`` collection that need no Ansible.

The collection itself ships at ``ansible_collections/apsecrets/core`` (beside
this package in a wheel, at the repository root in a checkout), where
ansible-core finds it on ``sys.path``. Its plugins are thin: they adapt
Ansible's calling conventions to the typed, tested functions here:

- :mod:`.config`: where the jinja_apsecrets configuration file is found;
- :mod:`.masking`: inline references in a template replaced by placeholders,
  and the ``--diff`` views that show references instead of values;
- :mod:`.discovery`: references found statically in play data (vars, lookup
  terms, templates), for the prefetch callback.

``lookup/apsecret.py`` is the lookup of the first release, kept as a shim over
the collection's ``apsecrets.core.secret`` for playbooks that still put this
directory on ``ANSIBLE_LOOKUP_PLUGINS``.
"""
