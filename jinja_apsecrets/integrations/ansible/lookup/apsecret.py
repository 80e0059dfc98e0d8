# jinja_apsecrets: the apsecret Ansible lookup plugin (MIT licence).
#
# Ansible loads this file by itself, outside the jinja_apsecrets package, so
# every import of the library below is absolute. The layout (documentation
# blocks before the imports) is Ansible's convention for plugins.
# ruff: noqa: E402
"""Ansible lookup plugin ``apsecret``: secrets through jinja_apsecrets connections.

Use it by putting this file's directory on ``ANSIBLE_LOOKUP_PLUGINS`` (or
``lookup_plugins`` in ``ansible.cfg``); ``python -c "import
jinja_apsecrets.integrations.ansible.lookup as m; print(m.__path__[0])"`` prints it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
    name: apsecret
    author: jinja_apsecrets developers
    short_description: read secrets from AWS, Vault/OpenBao, 1Password, Conjur, env or files
    description:
      - Resolves jinja_apsecrets secret references through the connections of a
        jinja_apsecrets configuration file, on the controller.
      - A term is a reference, bare (C(CONNECTION|ap_sep_v1|PATH), the natural form in a
        playbook) or delimited (C(<<CONNECTION|ap_sep_v1|PATH>>)).
      - All terms of one call are resolved together, in one round - deduplicated (many keys of
        one secret cost one fetch), batched where the backend can batch (AWS
        BatchGetSecretValue, 1Password resolve_all, Conjur's batch endpoint) and concurrent
        otherwise. Ask for the secrets a task needs in one call.
      - A resolver, with its cache, is kept per configuration file and process. Ansible runs
        each task in a fresh worker process, so the cache mostly serves one task's lookups.
    options:
      _terms:
        description: Secret references, bare or delimited.
        required: true
        type: list
        elements: str
      config:
        description:
          - The jinja_apsecrets configuration file (connections, cache, policy).
          - A relative path is looked up in the current directory, then in the role's
            or the playbook's directory.
        type: str
        default: apsecrets.yaml
        env:
          - name: APSECRETS_CONFIG
        vars:
          - name: apsecrets_config
    notes:
      - Values are returned marked unsafe, so Ansible never evaluates them as templates.
      - A lookup cannot hide what it returns; set C(no_log) on tasks whose arguments or
        results would show a secret, and avoid C(--diff) on templates that contain secrets.
      - Errors carry the jinja_apsecrets code (C(VALIDATION), C(SECRET_MANAGER_GET_SECRET_FAILED),
        C(SECRET_MANAGER_CONNECTION_FAILED)) and the reference, never a value.
    requirements:
      - jinja-apsecrets, in the Python that runs Ansible, with the extra of each provider used
        (for example C(pip install 'jinja-apsecrets[aws]')).
"""

EXAMPLES = r"""
- name: Render a config file from secrets kept in AWS and Vault
  ansible.builtin.template:
    src: app.conf.j2
    dest: /etc/app/app.conf
    mode: "0600"
  vars:
    db_password: "{{ lookup('apsecret', 'aws|ap_sep_v1|prod/db:password') }}"
    api_token: "{{ lookup('apsecret', 'hashicorp|ap_sep_v1|secret/data/app/api/token') }}"
  no_log: true

- name: Several secrets in one round, as a list
  ansible.builtin.set_fact:
    creds: >-
      {{ query('apsecret', 'aws|ap_sep_v1|prod/db:username',
                           'aws|ap_sep_v1|prod/db:password') }}
  no_log: true

- name: Another configuration file
  ansible.builtin.debug:
    msg: >-
      {{ lookup('apsecret', 'local|ap_sep_v1|app:db_password',
                config='/etc/apsecrets.yaml') | length }}

- name: A default for a secret that may be missing
  ansible.builtin.debug:
    msg: >-
      {{ lookup('apsecret', 'local|ap_sep_v1|app:optional', errors='ignore')
         | default('unset', true) }}
"""

RETURN = r"""
  _raw:
    description:
      - The secret values, one per term, in the order of the terms.
    type: list
    elements: str
"""

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleError  # type: ignore[import-untyped, unused-ignore]
from ansible.plugins.lookup import LookupBase  # type: ignore[import-untyped, unused-ignore]
from ansible.utils.display import Display  # type: ignore[import-untyped, unused-ignore]

try:
    from ansible.utils.unsafe_proxy import wrap_var  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # removed in a later Ansible, where lookup results are never trusted

    def wrap_var(v: Any) -> Any:
        return v


_IMPORT_ERROR: ImportError | None = None
try:
    from jinja_apsecrets import Resolver, SecretsError
    from jinja_apsecrets.reference import parse_bare
except ImportError as exc:
    _IMPORT_ERROR = exc

display = Display()

PREFIX = "apsecret"

# Resolvers by (process id, config file): the cache lives as long as the
# process. A worker forked from a process holding a resolver builds its own,
# since thread pools and locks do not survive a fork.
_resolvers: dict[tuple[int, str], tuple[tuple[int, int], Resolver]] = {}
_lock = threading.Lock()


def _error(code: str, message: str) -> AnsibleError:
    return AnsibleError(f"{PREFIX}: {code}: {message}")


def find_config(name: str, basedir: str | None) -> Path:
    """The config file ``name``: as given if absolute, else in the current
    directory, else in ``basedir`` (the role's or the playbook's directory)."""
    path = Path(os.path.expandvars(name)).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if not path.is_absolute() and basedir:
        candidates.append(Path(basedir) / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise _error(
        "VALIDATION",
        f"jinja_apsecrets config file not found (looked for {looked}); pass config=..., "
        "set apsecrets_config or $APSECRETS_CONFIG, or add apsecrets.yaml",
    )


def resolver_for(path: Path) -> Resolver:
    """This process's resolver for the config file ``path``, reloaded when the file changes."""
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    key = (os.getpid(), str(path))
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


def resolve_terms(resolver: Resolver, terms: Sequence[Any]) -> list[str]:
    """The values of ``terms``, in order, fetched in one resolver round.

    Raises :class:`AnsibleError` naming every failed reference with its code,
    never a value.
    """
    keys: list[tuple[str, str]] = []
    for i, term in enumerate(terms, 1):
        ref = parse_bare(term) if isinstance(term, str) else None
        if ref is None:
            # Echo the term only if it looks like a reference: anything else
            # might be a value passed by mistake.
            shown = repr(term) if isinstance(term, str) and "|ap_sep_v1|" in term else f"#{i}"
            raise _error(
                "VALIDATION",
                f"term {shown} is not a secret reference; expected CONNECTION|ap_sep_v1|PATH "
                "or <<CONNECTION|ap_sep_v1|PATH>>",
            )
        keys.append(ref.key)
    display.vvv(f"{PREFIX}: resolving {len(keys)} reference(s) ({len(set(keys))} distinct)")
    found = resolver.get_many(keys)
    failures = {k: v for k, v in found.items() if isinstance(v, SecretsError)}
    if failures:
        raise AnsibleError(f"{PREFIX}: " + "; ".join(f"{e.code}: {e}" for e in failures.values()))
    return [str(found[key]) for key in keys]


class LookupModule(LookupBase):  # type: ignore[misc]
    """``lookup('apsecret', 'conn|ap_sep_v1|path', ..., config='apsecrets.yaml')``."""

    def run(
        self, terms: list[Any], variables: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Any]:
        if _IMPORT_ERROR is not None:
            raise AnsibleError(
                f"{PREFIX}: the jinja-apsecrets package is not importable by the Python that "
                f"runs Ansible ({_IMPORT_ERROR}); pip install jinja-apsecrets there"
            )
        self.set_options(var_options=variables, direct=kwargs)
        basedir = None
        if self._loader is not None:
            basedir = self.get_basedir(variables or {})
        try:
            path = find_config(str(self.get_option("config")), basedir)
            display.vvv(f"{PREFIX}: config {path}")
            values = resolve_terms(resolver_for(path), terms)
        except SecretsError as err:  # configuration errors
            raise _error(err.code, str(err)) from None
        return [wrap_var(v) for v in values]
