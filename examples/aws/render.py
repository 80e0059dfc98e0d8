"""Render app.conf.j2 with secrets from AWS Secrets Manager, served by a local moto_server.

    python examples/aws/render.py [-o OUT]

Starts ``moto_server`` on a free port of 127.0.0.1, stores three secrets with
boto3 (as ``aws secretsmanager create-secret`` would), loads ``apsecrets.yaml``
with the environment pointing at that server, renders the template, prints
which AWS calls the render cost, and stops the server. Needs
``pip install 'jinja-apsecrets[aws]' 'moto[server]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import jinja2

import jinja_apsecrets

HERE = Path(__file__).resolve().parent


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto_server on a free loopback port; yield its URL; stop it by PID."""
    binary = Path(sys.executable).with_name("moto_server")
    command = str(binary) if binary.exists() else shutil.which("moto_server")
    if command is None:
        sys.exit("moto_server is not installed: pip install 'moto[server]'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310 - loopback
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("moto_server did not start")
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def store_secrets(url: str) -> None:
    """The secrets the template refers to, stored as JSON objects."""
    sm: Any = boto3.client(
        "secretsmanager",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sm.create_secret(
        Name="prod/api-keys",
        SecretString=json.dumps({"slack_token": "xoxb-example", "github_token": "ghp_example"}),
    )
    db = {"username": "app", "password": "first-password", "port": 5432}
    sm.create_secret(Name="prod/db", SecretString=json.dumps(db))
    # A rotation: the first password becomes AWSPREVIOUS.
    sm.put_secret_value(
        SecretId="prod/db", SecretString=json.dumps({**db, "password": "second-password"})
    )
    cert = "-----BEGIN CERTIFICATE-----\nMIIBexample\n-----END CERTIFICATE-----"
    sm.create_secret(Name="prod/tls", SecretString=json.dumps({"cert": cert}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, help="write here instead of printing")
    args = parser.parse_args()

    with moto_server() as url:
        store_secrets(url)
        os.environ.update(
            APSECRETS_AWS_ENDPOINT=url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        resolver = jinja_apsecrets.Resolver.from_config(HERE / "apsecrets.yaml")
        resolver.check("aws")  # the spec's "connect": ListSecrets with MaxResults=1

        calls: Counter[str] = Counter()
        aws: Any = resolver.connections["aws"]
        aws.client.meta.events.register(
            "before-call.secretsmanager", lambda model, **_: calls.update([model.name])
        )

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
    summary = ", ".join(f"{name} x{n}" for name, n in sorted(calls.items()))
    print(f"\nAWS calls for the render: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
