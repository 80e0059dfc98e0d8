# apsecrets.core: the per-process resolver registry (MIT licence).
"""The collection's one piece of module-level state: resolvers by config file.

Every plugin of the collection (lookup, filter, template action, prefetch
callback) asks :func:`resolver_for` for the resolver of its configuration
file, so within one process they share one resolver and its cache.

Ansible runs each task of each host in a worker forked from the controller.
A fork copies memory, so a resolver the prefetch callback filled on the
controller at play start is in every worker with its cache warm; the
resolver rebuilds its locks, thread pool and clients in the child by itself
(``jinja_apsecrets.forksafe``). This module only renews its own lock there.

:func:`remember` keeps, per process, which reference each value handed to
Ansible came from, so that the template action's ``--diff`` can show the
reference where such a value was printed into a template. It lives as long as
the process, like the resolver's cache, and is never written anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from jinja_apsecrets import Resolver

_lock = threading.Lock()
_resolvers: dict[str, tuple[tuple[int, int], Resolver]] = {}
_known: dict[str, str] = {}
_KNOWN_MAX = 10_000


def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock)


def resolver_for(path: Path) -> Resolver:
    """This process's resolver for the config file ``path`` (absolute),
    reloaded when the file changes (connections that did not change keep
    their cache)."""
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    key = str(path)
    with _lock:
        cached = _resolvers.get(key)
        if cached is None:
            resolver = Resolver.from_config(path)
        else:
            resolver = cached[1]
            if cached[0] != stamp:
                resolver.reload()
        _resolvers[key] = (stamp, resolver)
        return resolver


def remember(pairs: Iterable[tuple[str, str]]) -> None:
    """Note ``(value, reference text)`` pairs handed to Ansible in this process."""
    with _lock:
        for value, ref in pairs:
            if len(_known) >= _KNOWN_MAX:
                _known.clear()
            _known.setdefault(value, ref)


def known_values() -> Mapping[str, str]:
    """Values handed to Ansible in this process, each with its reference text."""
    with _lock:
        return dict(_known)


def reset() -> None:
    """Close and forget every resolver (tests, long-lived controllers)."""
    with _lock:
        for _, resolver in _resolvers.values():
            resolver.close()
        _resolvers.clear()
        _known.clear()
