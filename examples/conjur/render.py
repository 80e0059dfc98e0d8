"""Render app.conf.j2 with secrets from CyberArk Conjur.

    python examples/conjur/render.py [-o OUT]

With ``CONJUR_APPLIANCE_URL`` set (and ``CONJUR_ACCOUNT``,
``CONJUR_AUTHN_LOGIN``, ``CONJUR_AUTHN_API_KEY``), the secrets come from that
Conjur. Without it the script starts fake_conjur.py, a local stand-in for
Conjur's REST API (NOT Conjur: it cannot run here), stores made-up values in
it, renders, and prints the requests the render cost.
Needs ``pip install 'jinja-apsecrets[conjur]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import jinja2
from fake_conjur import FakeConjur, running

import jinja_apsecrets

HERE = Path(__file__).resolve().parent
DEMO = {
    "CONJUR_ACCOUNT": "myorg",
    "CONJUR_AUTHN_LOGIN": "host/apps/example",
    "CONJUR_AUTHN_API_KEY": "demo-api-key-not-real",
}
DEMO_VARIABLES = {
    "prod/db/username": "app",
    "prod/db/password": "demo-db-password",
    "prod/payments/api key": "demo-payments-key",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, help="write here instead of printing")
    args = parser.parse_args()

    with ExitStack() as stack:
        fake = None
        if os.environ.get("CONJUR_APPLIANCE_URL"):
            print(f"Using Conjur at {os.environ['CONJUR_APPLIANCE_URL']}.", file=sys.stderr)
        else:
            server = FakeConjur(
                DEMO["CONJUR_ACCOUNT"],
                DEMO["CONJUR_AUTHN_LOGIN"],
                DEMO["CONJUR_AUTHN_API_KEY"],
                DEMO_VARIABLES,
            )
            fake = stack.enter_context(running(server))
            os.environ.update(DEMO, CONJUR_APPLIANCE_URL=fake.url)
            print(f"DEMO mode: a local fake of Conjur's API at {fake.url}.", file=sys.stderr)

        resolver = jinja_apsecrets.Resolver.from_config(HERE / "apsecrets.yaml")
        stack.callback(resolver.close)
        resolver.check("cyberark-conjur")  # the spec's "connect": logs in
        env = jinja2.Environment(  # noqa: S701 - a config file, not HTML
            loader=jinja2.FileSystemLoader(HERE),
            extensions=["jinja_apsecrets.SecretsExtension"],
            keep_trailing_newline=True,
        )
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        text = env.get_template("app.conf.j2").render(app="example", db_host="db.internal")
        env.get_template("app.conf.j2").render(app="again", db_host="db.internal")  # cached

        if args.out:
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        if fake is not None:
            print("\nRequests served by the fake Conjur:", file=sys.stderr)
            for line in fake.log:
                print(f"  {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
