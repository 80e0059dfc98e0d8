# apsecrets.core: the resolve filter (MIT licence).
"""Filter ``apsecrets.core.resolve``: references inside data resolved, one round."""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context

from ansible_collections.apsecrets.core.plugins.plugin_utils import common
from jinja_apsecrets.walk import collect, rebuild

PREFIX = "apsecrets.core.resolve"


@pass_context
def resolve(
    context: Any,
    data: Any,
    config: str | None = None,
    on_missing: str = "error",
    default: Any = None,
) -> Any:
    """``data`` (a string, list or dict, nested) with every reference resolved.

    Whole-string and embedded references are both replaced; strings without
    references come back unchanged. All references are fetched in one round.
    ``on_missing`` as for the lookup: ``undefined`` puts ``default`` (text)
    where a missing secret was, ``keep`` leaves its reference.
    """
    on_missing = common.check_on_missing(PREFIX, on_missing)
    refs = collect(data)
    if not refs:
        return data
    variables = {name: context.get(name) for name in ("apsecrets_config", "playbook_dir")}
    resolver = common.resolver_for(PREFIX, config, variables)
    keys = list(dict.fromkeys(ref.key for ref in refs))
    found = resolver.get_many(keys)
    values: dict[tuple[str, str], Any] = common.settle(PREFIX, found, on_missing, default)
    if on_missing == "undefined":
        values = {k: "" if v is None else str(v) for k, v in values.items()}
    # Under "keep", a missing key is left out of values: its (not found)
    # error goes back in and rebuild's "keep" leaves the reference's text.
    merged = {key: values.get(key, found[key]) for key in keys}
    return common.unsafe(rebuild(data, merged, "keep"))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"resolve": resolve}
