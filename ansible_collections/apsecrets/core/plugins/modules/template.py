# apsecrets.core: documentation of the template action (MIT licence).
# The work is done on the controller by plugins/action/template.py; this file
# only documents it, as ansible-core's own action-only modules do.

from __future__ import annotations

DOCUMENTATION = r"""
module: template
author: jinja_apsecrets developers
short_description: ansible.builtin.template with inline secret references resolved
description:
  - Renders a template exactly as M(ansible.builtin.template) does (same options, check mode,
    diff, backup, validate, mode, owner) and replaces each inline secret reference
    (C(<<CONNECTION|ap_sep_v1|PATH>>), or C({{CONNECTION|ap_sep_v1|PATH}})) by its value.
  - All references of the template are fetched in one round, or none at all when the
    C(apsecrets.core.prefetch) callback fetched them at play start.
  - With C(--diff), both sides show references instead of values; lines of the old file that
    cannot be mapped back to a reference are hidden. Check mode reports whether the file would
    change.
  - A reference that cannot be resolved fails the task with its code and the reference, never a
    value; nothing is written then.
options:
  src:
    description: The template, as for M(ansible.builtin.template).
    type: path
    required: true
  dest:
    description: Where to write the result, as for M(ansible.builtin.template).
    type: path
    required: true
  config:
    description:
      - The jinja_apsecrets config file. Without it, the C(apsecrets_config) variable, then
        C($APSECRETS_CONFIG), then C(apsecrets.yaml) beside the playbook.
    type: str
notes:
  - Every other option of M(ansible.builtin.template) is accepted and means the same.
  - References in included templates or in variables' values are not resolved (a warning names
    them); use the apsecrets.core.resolve filter on variables.
"""

EXAMPLES = r"""
- name: Config file whose template holds password = <<aws|ap_sep_v1|prod/db:password>>
  apsecrets.core.template:
    src: app.conf.j2
    dest: /etc/app/app.conf
    mode: "0600"
    backup: true
"""

RETURN = r"""
# The same as ansible.builtin.template.
"""
