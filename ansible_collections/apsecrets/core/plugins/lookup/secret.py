# apsecrets.core: the secret lookup (MIT licence).
"""Lookup ``apsecrets.core.secret``: secret values by reference, one round per call."""

from __future__ import annotations

DOCUMENTATION = r"""
    name: secret
    author: jinja_apsecrets developers
    short_description: read secrets from AWS, Vault/OpenBao, 1Password, Conjur, env or files
    description:
      - Resolves jinja_apsecrets secret references through the connections of a
        jinja_apsecrets configuration file, on the controller.
      - A term is a reference in any form - bare C(CONNECTION|ap_sep_v1|PATH), or delimited
        C(<<CONNECTION|ap_sep_v1|PATH>>) or C({{CONNECTION|ap_sep_v1|PATH}}) written as a string.
      - All terms of one call are resolved together in one round - deduplicated (many keys of
        one secret cost one fetch), batched where the backend can (AWS BatchGetSecretValue,
        1Password resolve_all, Conjur's batch endpoint), concurrent otherwise.
      - Resolvers and their caches are kept per configuration file and process. With the
        C(apsecrets.core.prefetch) callback enabled, the controller fetches a play's static
        references once at play start and every forked worker starts with them cached.
    options:
      _terms:
        description: Secret references.
        required: true
        type: list
        elements: str
      config:
        description:
          - The jinja_apsecrets configuration file (connections, cache, policy).
          - Without it, the C(apsecrets_config) variable, then C($APSECRETS_CONFIG), then
            C(apsecrets.yaml) beside the playbook. A relative path is looked up in the current
            directory, then beside the playbook.
        type: str
        env:
          - name: APSECRETS_CONFIG
        vars:
          - name: apsecrets_config
      on_missing:
        description:
          - What a missing secret or key (C(SECRET_MANAGER_GET_SECRET_FAILED)) gives.
          - C(error) fails the task; C(undefined) gives O(default); C(keep) gives the term itself.
          - A connection failure or a malformed reference always fails.
        type: str
        default: error
        choices: [error, undefined, keep]
      default:
        description: The value of a missing secret under O(on_missing=undefined).
        type: raw
    notes:
      - Values are returned marked unsafe, so Ansible never evaluates them as templates.
      - A lookup cannot hide what it returns; set C(no_log) on tasks whose arguments or
        results would show a secret.
      - Errors carry the jinja_apsecrets code (C(VALIDATION), C(SECRET_MANAGER_GET_SECRET_FAILED),
        C(SECRET_MANAGER_CONNECTION_FAILED)) and the reference, never a value.
    requirements:
      - jinja-apsecrets in the Python that runs Ansible, with the extra of each provider used.
"""

EXAMPLES = r"""
- name: Two secrets, one round
  ansible.builtin.set_fact:
    db: "{{ query('apsecrets.core.secret', 'aws|ap_sep_v1|prod/db:username',
                  '<<aws|ap_sep_v1|prod/db:password>>') }}"
  no_log: true

- name: A default for an optional secret
  ansible.builtin.debug:
    msg: "{{ lookup('apsecrets.core.secret', 'local|ap_sep_v1|app:optional',
                    on_missing='undefined', default='unset') }}"
"""

RETURN = r"""
  _raw:
    description: The secret values, one per term, in the order of the terms.
    type: list
    elements: str
"""

from typing import Any

from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.apsecrets.core.plugins.plugin_utils import common

display = Display()
PREFIX = "apsecrets.core.secret"


class LookupModule(LookupBase):
    def run(
        self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        on_missing = common.check_on_missing(PREFIX, self.get_option("on_missing"))
        default = self.get_option("default")
        refs = common.parse_terms(PREFIX, terms)
        config = self.get_option("config")
        if isinstance(config, str) and self._templar is not None:
            # Filled from the apsecrets_config variable as written (lookups get
            # variables untemplated): "{{ playbook_dir }}/x.yaml" as the
            # template action and the filter read it.
            config = self._templar.template(config)
        resolver = common.resolver_for(PREFIX, config, variables, variable="")
        keys = [ref.key for ref in refs]
        display.vvv(f"{PREFIX}: resolving {len(keys)} reference(s) ({len(set(keys))} distinct)")
        values = common.settle(PREFIX, resolver.get_many(keys), on_missing, default)
        return [common.unsafe(values.get(ref.key, ref.text)) for ref in refs]
