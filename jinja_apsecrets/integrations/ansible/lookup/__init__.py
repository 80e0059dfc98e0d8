"""The ``apsecret`` lookup plugin: this directory goes on ``ANSIBLE_LOOKUP_PLUGINS``."""
