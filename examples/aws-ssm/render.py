"""Render app.conf.j2 with AWS Systems Manager parameters, served by a local moto_server.

    .venv/bin/python examples/aws-ssm/render.py [-o OUT]

Starts ``moto_server`` on a free port of 127.0.0.1, stores the parameters with
boto3 (as ``aws ssm put-parameter`` would), loads ``apsecrets.yaml`` with the
environment pointing at that server, checks the connection, renders the
template, prints which AWS calls the render cost, and stops the server. Needs
``pip install 'jinja-apsecrets[aws]' 'moto[server]'`` (the ``test`` extra has both).
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


def store_parameters(url: str) -> None:
    """The parameters the template refers to: String, StringList, SecureString."""
    ssm: Any = boto3.client(
        "ssm",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ssm.put_parameter(Name="/prod/db/host", Value="db.internal", Type="String")
    config = {"user": "app", "port": 5432}
    ssm.put_parameter(Name="/prod/db/config", Value=json.dumps(config), Type="SecureString")
    ssm.put_parameter(Name="/prod/db/password", Value="first-password", Type="SecureString")
    # A rotation: version 2 is current; version 1 keeps the label "previous".
    ssm.put_parameter(
        Name="/prod/db/password", Value="second-password", Type="SecureString", Overwrite=True
    )
    ssm.label_parameter_version(Name="/prod/db/password", ParameterVersion=1, Labels=["previous"])
    ssm.put_parameter(Name="/prod/cache/hosts", Value="c1.internal,c2.internal", Type="StringList")
    ssm.put_parameter(Name="cache_token", Value="tok-example", Type="SecureString")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, help="write here instead of printing")
    args = parser.parse_args()

    with moto_server() as url:
        store_parameters(url)
        os.environ.update(
            APSECRETS_AWS_ENDPOINT=url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        resolver = jinja_apsecrets.Resolver.from_config(HERE / "apsecrets.yaml")
        resolver.check("aws-ssm")  # DescribeParameters with MaxResults=1

        calls: Counter[str] = Counter()
        ssm: Any = resolver.connections["aws-ssm"]
        ssm.client.meta.events.register(
            "before-call.ssm", lambda model, **_: calls.update([model.name])
        )

        env = jinja2.Environment(  # noqa: S701 - a config file, not HTML
            loader=jinja2.FileSystemLoader(HERE),
            extensions=["jinja_apsecrets.SecretsExtension"],
            keep_trailing_newline=True,
        )
        env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
        text = env.get_template("app.conf.j2").render(app="example")
        resolver.close()

    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    summary = ", ".join(f"{name} x{n}" for name, n in sorted(calls.items()))
    print(f"\nAWS calls for the render: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
