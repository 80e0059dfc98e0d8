# apsecrets.core: the prefetch callback (MIT licence).
"""Callback ``apsecrets.core.prefetch``: one fetch round per play, on the controller.

Ansible runs every task of every host in a worker process forked from the
controller. A cache filled in a worker dies with it, so without help each
task pays its own round. This callback runs on the controller at play start,
finds every reference it can see statically in the play, and resolves them
all in one round; the workers forked afterwards inherit the warm cache and
make no request for those references (the resolver survives ``fork()``).

Found statically: references in the ``src`` templates of
``apsecrets.core.template`` tasks and in the ``templates/`` folders of the
play's roles; inline references and literal ``apsecrets.core.secret`` lookup
terms in play, role, inventory and extra vars and in task arguments and vars.
A reference computed at run time is fetched when met, as without the
callback. Failures found here are kept for when (and if) the reference is
used, so a missing secret fails only the task that needs it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
    name: prefetch
    type: aggregate
    author: jinja_apsecrets developers
    short_description: fetch a play's secret references once, at play start, on the controller
    description:
      - At the start of each play, resolves every secret reference found statically in the
        play (templates of apsecrets.core.template tasks, role templates/, vars, lookup terms)
        in one round, so that the forked workers start with a warm cache.
      - Enable it in ansible.cfg with C(callbacks_enabled = apsecrets.core.prefetch), or with
        C(ANSIBLE_CALLBACKS_ENABLED=apsecrets.core.prefetch).
      - Uses the play's configuration file, found as the lookup finds it (the
        C(apsecrets_config) variable, then C($APSECRETS_CONFIG), then C(apsecrets.yaml)
        beside the playbook). References under another C(config=) are fetched when used.
    requirements:
      - jinja-apsecrets in the Python that runs Ansible.
"""

import os
import time
from collections.abc import Iterator
from typing import Any

import jinja2
from ansible.errors import AnsibleError
from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

from ansible_collections.apsecrets.core.plugins.plugin_utils import registry
from jinja_apsecrets import SecretsError
from jinja_apsecrets.integrations.ansible.config import CONFIG_VARIABLE, find_config
from jinja_apsecrets.integrations.ansible.discovery import (
    TEMPLATE_DELIMITERS,
    refs_in_data,
    refs_in_template,
)

display = Display()
NAME = "apsecrets.core.prefetch"
TEMPLATE_ACTIONS = ("apsecrets.core.template",)
MAX_TEMPLATE_BYTES = 1 << 20


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = NAME
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._playbook_dir: str | None = None

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbook_dir = getattr(playbook, "_basedir", None)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        started = time.monotonic()
        try:
            count = self._prefetch(play)
        except (SecretsError, AnsibleError) as err:
            display.warning(f"{NAME}: nothing prefetched: {err}")
            return
        except Exception as err:  # a callback must never break the play
            display.warning(f"{NAME}: nothing prefetched ({type(err).__name__})")
            return
        if count:
            display.v(f"{NAME}: {count} reference(s) resolved in {time.monotonic() - started:.2f}s")

    # -- the play's references ---------------------------------------------------

    def _prefetch(self, play: Any) -> int:
        loader = play._loader
        manager = play._variable_manager
        play_vars = manager.get_vars(play=play, include_hostvars=False)
        hosts = self._hosts(play, manager)
        variable = play_vars.get(CONFIG_VARIABLE)
        if isinstance(variable, str) and "{{" in variable:
            from ansible.template import Templar

            variable = Templar(loader=loader, variables=play_vars).template(variable)
        playbook_dir = self._playbook_dir or loader.get_basedir()
        try:
            path = find_config(None, variable, playbook_dir=playbook_dir)
        except SecretsError:
            display.vv(f"{NAME}: no jinja_apsecrets config file found; nothing prefetched")
            return 0
        refs: dict[tuple[str, str], None] = {}
        refs.update(dict.fromkeys(refs_in_data(_plain(play_vars))))
        for host in hosts:
            host_vars = manager.get_vars(play=play, host=host, include_hostvars=False)
            refs.update(dict.fromkeys(refs_in_data(_plain(host_vars))))
        for task in _tasks(play):
            refs.update(dict.fromkeys(self._task_refs(task, loader)))
        for role in _roles(play):
            refs.update(dict.fromkeys(_role_template_refs(role)))
        if not refs:
            return 0
        resolver = registry.resolver_for(path)
        display.vvv(f"{NAME}: resolving {len(refs)} reference(s) with {path}")
        resolver.prefetch(list(refs))
        return len(refs)

    @staticmethod
    def _hosts(play: Any, manager: Any) -> list[Any]:
        inventory = getattr(manager, "_inventory", None)
        if inventory is None:
            return []
        try:
            return list(inventory.get_hosts(play.hosts))
        except Exception:  # a pattern only the strategy can evaluate
            return []

    def _task_refs(self, task: Any, loader: Any) -> Iterator[tuple[str, str]]:
        args = dict(getattr(task, "args", None) or {})
        yield from refs_in_data(_plain(args))
        yield from refs_in_data(_plain(getattr(task, "vars", None) or {}))
        yield from refs_in_data(_plain(getattr(task, "loop", None)))
        action = getattr(task, "action", None)
        if action not in TEMPLATE_ACTIONS:
            return
        src = args.get("src")
        if not isinstance(src, str) or "{{" in src or "{%" in src:
            return  # computed at run time
        try:
            path = loader.path_dwim_relative_stack(task.get_search_path(), "templates", src)
        except Exception:
            return  # the task will say why
        env = jinja2.Environment(
            **{k: str(args[k]) for k in TEMPLATE_DELIMITERS if isinstance(args.get(k), str)}  # type: ignore[arg-type]
        )
        source = _read(path)
        if source is not None:
            yield from refs_in_template(source, env)


def _plain(obj: Any) -> Any:
    """Plain containers and strings only (no lazy or magic mappings)."""
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, dict):
        return {
            k: _plain(v)
            for k, v in obj.items()
            if k not in ("hostvars", "vars", "groups", "ansible_facts")
        }
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return None


def _read(path: str) -> str | None:
    try:
        if os.path.getsize(path) > MAX_TEMPLATE_BYTES:
            return None
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeError):
        return None


def _blocks(blocks: Any) -> Iterator[Any]:
    for block in blocks or ():
        for attr in ("block", "rescue", "always"):
            for item in getattr(block, attr, None) or ():
                if hasattr(item, "block"):
                    yield from _blocks([item])
                else:
                    yield item


def _roles(play: Any) -> list[Any]:
    roles: dict[int, Any] = {}
    for role in play.get_roles():
        roles[id(role)] = role
        for dep in role.get_all_dependencies():
            roles[id(dep)] = dep
    return list(roles.values())


def _tasks(play: Any) -> Iterator[Any]:
    for attr in ("pre_tasks", "tasks", "post_tasks", "handlers"):
        yield from _blocks(getattr(play, attr, None))
    for role in _roles(play):
        yield from _blocks(role.get_task_blocks())
        yield from _blocks(role.get_handler_blocks(play=play))


def _role_template_refs(role: Any) -> Iterator[tuple[str, str]]:
    folder = os.path.join(role.get_role_path(), "templates")
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            source = _read(os.path.join(root, name))
            if source is not None:
                yield from refs_in_template(source)
