"""Surviving ``fork()``: objects that rebuild their threads and locks in the child.

A process that forks (gunicorn ``--preload``, multiprocessing's ``fork``
start method, ``os.fork``) copies memory, not threads. A resolver used in the
parent carries into the child a thread pool whose workers do not exist there,
locks that may have been held by a thread that is gone, and SDK clients whose
connections are shared with the parent. Waiting on any of those hangs.

Objects that own such things register here with :func:`track`; after a fork,
in the child, each live one gets its ``_after_fork()`` called. They keep what
is plain data (cached values stay warm: the child needs no request for them)
and rebuild the rest lazily. The registry holds weak references only, so it
keeps nothing alive; :func:`os.register_at_fork` is called once, on import.

The hook runs in the child's only thread, before any other code of the child:
nothing can hold the new locks yet, and nothing may wait on the old ones.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "track"]

log = logging.getLogger("jinja_apsecrets")


class ForkAware(Protocol):
    def _after_fork(self) -> None:
        """Rebuild locks, pools and clients in a forked child; keep the data."""


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def track(obj: ForkAware) -> None:
    """Call ``obj._after_fork()`` in the child of every later fork while ``obj`` lives."""
    _live.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_live):
        try:
            obj._after_fork()
        except Exception:  # one broken object must not break the child's start
            log.exception("rebuilding %s after fork failed", type(obj).__name__)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
