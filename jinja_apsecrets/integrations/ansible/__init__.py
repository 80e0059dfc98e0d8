"""Ansible plugins. Put ``lookup/`` on ``ANSIBLE_LOOKUP_PLUGINS`` (see its ``apsecret.py``)."""
