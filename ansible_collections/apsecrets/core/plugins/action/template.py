# apsecrets.core: the template action (MIT licence).
"""Action ``apsecrets.core.template``: ``ansible.builtin.template`` with inline references.

It *is* the builtin template action (a subclass that runs the builtin's own
``run``), so options, check mode, ``--diff``, ``backup``, ``validate``,
``mode``/``owner`` and the copy to the host behave exactly as there. It adds
three things, at two narrow points of the builtin's run:

1. When the builtin asks for the templar that renders the file, the source
   it renders gets each inline reference replaced by a placeholder
   (:mod:`jinja_apsecrets.integrations.ansible.masking`); Ansible renders
   that, and the placeholders that survive rendering get their values. All
   references of the template are fetched in one round first; one that fails
   and is printed fails the task with its code and reference, before
   anything is written.
2. The result's ``diff`` (computed by the builtin's copy step, with values) is
   rewritten before the task returns: the after side shows references where
   values are, the before side only what maps back to a reference.
3. Option ``config`` (the jinja_apsecrets config file) is taken out of the
   arguments before the builtin sees them.

Values exist only in the rendered text the builtin writes to its private
temporary file and copies to the host, as with any template.
"""

from __future__ import annotations

from typing import Any

import jinja2
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action.template import ActionModule as BuiltinTemplate
from ansible.utils.display import Display

from ansible_collections.apsecrets.core.plugins.plugin_utils import common, registry
from jinja_apsecrets import SecretsError, find_references
from jinja_apsecrets.integrations.ansible.discovery import TEMPLATE_DELIMITERS
from jinja_apsecrets.integrations.ansible.masking import (
    MaskedSource,
    before_view,
    mask_source,
    mask_values,
)

try:  # ansible-core 2.19+: only trusted strings are templates
    from ansible.template import trust_as_template as _trust
except ImportError:  # earlier: every string is

    def _trust(value: Any) -> Any:
        return value


display = Display()
PREFIX = "apsecrets.core.template"


class _Render:
    """What one run rendered: kept for the diff."""

    def __init__(self) -> None:
        self.done = False
        self.masked: MaskedSource | None = None
        self.rendered = ""
        self.values: dict[int, str] = {}


class _Hook:
    """A templar's stand-in: everything but the methods a subclass defines
    goes to the real templar, attribute writes included."""

    def __init__(self, action: ActionModule, real: Any) -> None:
        object.__setattr__(self, "_action", action)
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)


class _TemplarHook(_Hook):
    """Stands in for the action's templar until the builtin asks it for the
    templar that renders the file; from then on the real one is back."""

    def copy_with_new_env(self, *args: Any, **kwargs: Any) -> Any:
        self._action._templar = self._real
        return _RenderHook(self._action, self._real.copy_with_new_env(*args, **kwargs))


class _RenderHook(_Hook):
    """The render templar; its first template call is the file's source."""

    def template(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # ansible-core 2.19+
        return self._action._render_source(self._real.template, data, args, kwargs)

    def do_template(self, data: Any, *args: Any, **kwargs: Any) -> Any:  # up to 2.18
        return self._action._render_source(self._real.do_template, data, args, kwargs)


class ActionModule(BuiltinTemplate):
    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars if task_vars is not None else {}
        self._apsecrets_config = self._task.args.pop("config", None)
        self._apsecrets_vars = task_vars
        self._apsecrets = _Render()
        real = self._templar
        self._templar = _TemplarHook(self, real)
        try:
            result: dict[str, Any] = super().run(tmp, task_vars)
        finally:
            self._templar = real
        if not self._apsecrets.done and not result.get("failed"):
            # An ansible-core whose template action no longer renders through
            # the two calls hooked above: never report "ok" for a file whose
            # references were not looked at.
            raise AnsibleActionFail(
                f"{PREFIX}: this ansible-core renders templates in a way this action does not "
                "know; references were not resolved"
            )
        if not self._task.no_log:
            self._rewrite_diff(result)
        return result

    # -- rendering -------------------------------------------------------------

    def _resolver(self) -> Any:
        """The resolver of the config file (looked up only for templates that
        hold references: others render without any config)."""
        variable = self._apsecrets_vars.get("apsecrets_config")
        if isinstance(variable, str) and variable:
            variable = self._templar.template(variable)
        try:
            return common.resolver_for(
                PREFIX, self._apsecrets_config, self._apsecrets_vars, variable
            )
        except AnsibleError as err:  # the builtin would prefix it with the class name
            raise AnsibleActionFail(str(err)) from None

    def _render_source(self, render: Any, data: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        state = self._apsecrets
        if state.done or not isinstance(data, str):
            return render(data, *args, **kwargs)
        state.done = True
        overrides = kwargs.get("overrides") or {}
        env = jinja2.Environment(
            **{k: overrides[k] for k in TEMPLATE_DELIMITERS if overrides.get(k)}  # type: ignore[arg-type]
        )
        src = self._task.args.get("src")
        try:
            masked = mask_source(str(data), env)
        except SecretsError as err:
            raise AnsibleActionFail(common.error_text(PREFIX, [err.locate(src, None)])) from None
        if not masked.refs:
            return render(data, *args, **kwargs)
        keys = list(dict.fromkeys(ref.key for ref in masked.refs))
        display.vvv(f"{PREFIX}: {len(masked.refs)} reference(s) in {src}, {len(keys)} distinct")
        found = self._resolver().get_many(keys)
        rendered = render(_trust(masked.text), *args, **kwargs)
        if rendered is None:
            rendered = ""
        rendered = str(rendered)
        present = masked.present(rendered)
        failures = [
            found[masked.refs[i].key].locate(src, masked.refs[i].lineno)  # type: ignore[union-attr]
            for i in present
            if isinstance(found[masked.refs[i].key], SecretsError)
        ]
        if failures:
            unique = {(e.code, e.provider, e.path): e for e in failures}
            raise AnsibleActionFail(common.error_text(PREFIX, unique.values()))
        values = {i: str(found[masked.refs[i].key]) for i in present}
        registry.remember((values[i], common.canonical(*masked.refs[i].key)) for i in present)
        stray = find_references(rendered)
        if stray:
            display.warning(
                f"{PREFIX}: {src}: {len(stray)} reference(s) in the output did not come from "
                "the template source (an included template or a variable's value) and are "
                "written as text: "
                + ", ".join(sorted({r.text for r in stray}))
                + ". Resolve variables with the apsecrets.core.resolve filter."
            )
        state.masked, state.rendered, state.values = masked, rendered, values
        return masked.fill(rendered, values)

    # -- diff ------------------------------------------------------------------

    def _rewrite_diff(self, result: dict[str, Any]) -> None:
        diff = result.get("diff")
        entries = diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []
        if not entries:
            return
        state = self._apsecrets
        known = dict(registry.known_values())
        masked = state.masked or mask_source("", jinja2.Environment())
        rendered = state.rendered
        known.update({v: masked.refs[i].text for i, v in state.values.items()})
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            after = entry.get("after")
            if state.masked is None:
                # No inline reference: only values of lookups or filters printed
                # into the template can be there. None: leave the diff alone.
                if not isinstance(after, str) or after == mask_values(after, known):
                    continue
                rendered = after
            if "after" in entry:
                entry["after"] = masked.view(mask_values(rendered, known))
            before = entry.get("before")
            if isinstance(before, str) and before:
                entry["before"] = before_view(before, masked, rendered, known)
