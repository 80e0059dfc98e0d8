"""Render app.conf.j2 with secrets from 1Password.

    python examples/onepassword/render.py [-o OUT]

With ``OP_SERVICE_ACCOUNT_TOKEN`` set, the secrets come from your 1Password
account (create the items first; see README.md). Without it the script runs
in DEMO mode: no 1Password server can run locally, so it installs an
in-process test double of the SDK's native core at
``onepassword.core.UniffiCore`` (the same technique as
tests/test_provider_onepassword.py) and serves made-up values. The SDK itself,
the provider, the resolver and the template engine all run for real.
Needs ``pip install 'jinja-apsecrets[onepassword]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import onepassword.core

import jinja_apsecrets

HERE = Path(__file__).resolve().parent
DEMO_TOKEN = "ops_demo-not-a-real-token"


class DemoCore:
    """DEMO ONLY: answers the SDK's native-core calls from a dict, no network."""

    items = {
        "op://Production/API Keys/token": "demo-api-token",
        "op://Production/API Keys/Admin/password": "demo-admin-password",
        "op://Production/Database/username": "app",
        "op://Production/Database/password": "demo-db-password",
    }

    def __init__(self, native: Any) -> None:
        self.native = native  # the real core, for the offline reference validator
        self.calls: Counter[str] = Counter()

    async def init_client(self, config: str) -> str:
        self.calls["authenticate"] += 1
        return "1"

    async def invoke(self, invocation: str) -> str:
        params = json.loads(invocation)["invocation"]["parameters"]
        self.calls[params["name"]] += 1
        refs = params["parameters"]["secret_references"]
        answers = {
            ref: {"content": {"secret": self.items[ref], "itemId": "demo", "vaultId": "demo"}}
            if ref in self.items
            else {"error": {"type": "itemNotFound"}}
            for ref in refs
        }
        return json.dumps({"individualResponses": answers})

    def invoke_sync(self, invocation: str) -> str:
        return str(self.native.invoke_sync(invocation))

    def release_client(self, client_id: str) -> None:
        pass


def install_demo_core() -> DemoCore:
    demo = DemoCore(onepassword.core.UniffiCore().core)

    def use_demo(core: Any) -> None:
        core.core = demo

    onepassword.core.UniffiCore.__init__ = use_demo
    os.environ["OP_SERVICE_ACCOUNT_TOKEN"] = DEMO_TOKEN
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, help="write here instead of printing")
    args = parser.parse_args()

    demo = None
    if os.environ.get("OP_SERVICE_ACCOUNT_TOKEN"):
        print("Using your 1Password account (OP_SERVICE_ACCOUNT_TOKEN is set).", file=sys.stderr)
    else:
        demo = install_demo_core()
        print("DEMO mode: made-up values from an in-process test double.", file=sys.stderr)

    resolver = jinja_apsecrets.Resolver.from_config(HERE / "apsecrets.yaml")
    env = jinja2.Environment(  # noqa: S701 - a config file, not HTML
        loader=jinja2.FileSystemLoader(HERE),
        extensions=["jinja_apsecrets.SecretsExtension"],
        keep_trailing_newline=True,
    )
    env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
    text = env.get_template("app.conf.j2").render(app="example", db_host="db.internal")
    resolver.close()

    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if demo is not None:
        summary = ", ".join(f"{name} x{n}" for name, n in sorted(demo.calls.items()))
        print(f"\n1Password core calls for the render: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
