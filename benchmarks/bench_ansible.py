"""Ansible benchmark (issue 11): backend requests of one play, side by side.

The play: N hosts (``ansible_connection=local``), each running three template
tasks at forks 5. Together the templates read 20 AWS secrets (moto_server)
and 20 OpenBao KV v2 paths (``bao server -dev``): 50 values per template (the
20 AWS passwords, 10 AWS user names, the 20 Vault tokens). Each backend sits
behind a counting proxy (``delay_proxy.py``, no delay), which counts every
HTTP request the play makes.

Compared, on the same servers and templates:

- ``apsecrets.core.template`` with the ``apsecrets.core.prefetch`` callback
  (one round on the controller at play start, inherited by the forked workers);
- the same without the callback (one round per task);
- the two Ansible idioms, when the ``ansible`` package's collections are
  installed (it brings amazon.aws and community.hashi_vault; they need boto3
  and hvac, which the test extras have): one ``amazon.aws.secretsmanager_secret`` /
  ``community.hashi_vault.vault_kv2_get`` lookup per value in the template
  tasks' vars, and the read-once ``set_fact`` (each host reads every secret
  once, then renders from facts).

    # the collections only, beside this venv's ansible-core (about 50 MB):
    pip install --no-deps --target .ansible-pkg ansible
    ANSIBLE_COLLECTIONS_PATH=.ansible-pkg python benchmarks/bench_ansible.py [--hosts 20] [--forks 5]

(``pip install ansible`` into the venv works too, but brings the ansible-core
it was released with.) Without those collections, only the first two rows run.

Results are printed and written to benchmarks/results/ansible.md. The
scenario builders are also used by tests/test_ansible_play.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from delay_proxy import DelayProxy

RESULTS = Path(__file__).resolve().parent / "results" / "ansible.md"
REGION = "us-east-1"
N_SECRETS = 20  # per backend
N_USERS = 10  # AWS secrets whose second key is read too
N_TEMPLATES = 3
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def aws_name(i: int) -> str:
    return f"app/s{i:02d}"


def vault_path(i: int) -> str:
    return f"app/v{i:02d}"


def aws_password(i: int) -> str:
    return f"aws-Secret-{i:02d}"


def vault_token(i: int) -> str:
    return f"vault-Secret-{i:02d}"


def seed(moto_url: str, bao_url: str) -> None:
    """Create the 20 AWS secrets and the 20 OpenBao paths (root token ``root``)."""
    import boto3

    sm = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("secretsmanager", endpoint_url=moto_url)
    for i in range(N_SECRETS):
        text = json.dumps({"user": f"user-{i:02d}", "password": aws_password(i)})
        try:
            sm.create_secret(Name=aws_name(i), SecretString=text)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=aws_name(i), SecretString=text)
        body = json.dumps({"data": {"token": vault_token(i)}}).encode()
        request = urllib.request.Request(
            f"{bao_url}/v1/secret/data/{vault_path(i)}",
            data=body,
            headers={"X-Vault-Token": "root", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


def slots() -> list[tuple[str, str, str]]:
    """(name, inline reference, expected value) of the 50 values of a template."""
    out = []
    for i in range(N_SECRETS):
        out.append((f"aws_pw_{i}", f"<<aws|ap_sep_v1|{aws_name(i)}:password>>", aws_password(i)))
    for i in range(N_USERS):
        out.append((f"aws_user_{i}", f"<<aws|ap_sep_v1|{aws_name(i)}:user>>", f"user-{i:02d}"))
    for i in range(N_SECRETS):
        ref = f"<<hashicorp|ap_sep_v1|secret/data/{vault_path(i)}/token>>"
        out.append((f"vault_token_{i}", ref, vault_token(i)))
    return out


def expected_output(n: int, host: str) -> str:
    lines = [f"# template {n} for {host}"]
    lines += [f"{name} = {value}" for name, _, value in slots()]
    return "\n".join(lines) + "\n"


@dataclass
class Project:
    """A playbook directory: inventory, ansible.cfg, templates, config."""

    root: Path
    hosts: int

    def host_names(self) -> list[str]:
        return [f"h{n:02d}" for n in range(1, self.hosts + 1)]

    def output(self, host: str, n: int) -> Path:
        return self.root / "out" / f"{host}-{n}.conf"


def write_project(
    root: Path, *, hosts: int, forks: int, aws_url: str, vault_url: str, callback: bool
) -> Project:
    """The play of this benchmark in ``root``: apsecrets.core.template tasks."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    project = Project(root, hosts)
    write_common(project, forks=forks, callback=callback)
    (root / "apsecrets.yaml").write_text(
        "connections:\n"
        f"  aws: {{provider: aws, region: {REGION}, endpointUrl: '{aws_url}',"
        " accessKeyId: testing, secretAccessKey: testing}\n"
        f"  hashicorp: {{provider: hashicorp, url: '{vault_url}', token: root}}\n"
    )
    for n in range(1, N_TEMPLATES + 1):
        body = [f"# template {n} for {{{{ inventory_hostname }}}}"]
        body += [f"{name} = {ref}" for name, ref, _ in slots()]
        (root / f"t{n}.conf.j2").write_text("\n".join(body) + "\n")
    tasks = [
        f"    - name: template {n}\n"
        "      apsecrets.core.template:\n"
        f"        src: t{n}.conf.j2\n"
        f'        dest: "out/{{{{ inventory_hostname }}}}-{n}.conf"\n'
        '        mode: "0600"\n'
        for n in range(1, N_TEMPLATES + 1)
    ]
    (root / "site.yml").write_text(PLAY_HEAD + "".join(tasks))
    return project


PLAY_HEAD = """\
- hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
"""


def write_common(project: Project, *, forks: int, callback: bool) -> None:
    lines = [f"h{n:02d} ansible_connection=local" for n in range(1, project.hosts + 1)]
    (project.root / "hosts").write_text("\n".join(lines) + "\n")
    cfg = ["[defaults]", f"forks = {forks}", "inventory = hosts", "host_key_checking = False"]
    if callback:
        cfg.append("callbacks_enabled = apsecrets.core.prefetch")
    (project.root / "ansible.cfg").write_text("\n".join(cfg) + "\n")


def ansible_env(root: Path, **extra: str) -> dict[str, str]:
    # The caller's Ansible settings are left out, except where to find more
    # collections (the idioms' amazon.aws and community.hashi_vault).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "APSECRETS_")) or k.startswith("ANSIBLE_COLLECTIONS_PATH")
    }
    env.update(
        {
            "HOME": str(root),
            "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(root / ".ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(root / ".ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
    )
    env.update(extra)
    return env


def run_play(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "site.yml", *args],
        cwd=root,
        env=ansible_env(root, **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# -- the Ansible idioms (need the ansible package's collections) -------------------


def idioms_available(root: Path) -> bool:
    """Whether amazon.aws and community.hashi_vault are installed for ansible-core."""
    probe = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.with_name("ansible-doc")), "-t", "lookup", "-l"],
        env=ansible_env(root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = probe.stdout
    return (
        "amazon.aws.secretsmanager_secret" in out and "community.hashi_vault.vault_kv2_get" in out
    )


def _aws_lookup(i: int, key: str, aws_url: str) -> str:
    return (
        f"lookup('amazon.aws.secretsmanager_secret', '{aws_name(i)}.{key}', nested=true, "
        f"endpoint_url='{aws_url}', region='{REGION}')"
    )


def _vault_lookup(i: int, vault_url: str) -> str:
    return (
        f"lookup('community.hashi_vault.vault_kv2_get', '{vault_path(i)}', "
        f"url='{vault_url}', token='root', auth_method='token', engine_mount_point='secret')"
        ".secret.token"
    )


def write_idiom(
    root: Path, idiom: str, *, hosts: int, forks: int, aws_url: str, vault_url: str
) -> Project:
    """The same play the Ansible way: ``per-value`` lookups or ``set_fact`` once."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    project = Project(root, hosts)
    write_common(project, forks=forks, callback=False)
    names = [name for name, _, _ in slots()]
    for n in range(1, N_TEMPLATES + 1):
        body = [f"# template {n} for {{{{ inventory_hostname }}}}"]
        body += [f"{name} = {{{{ {name} }}}}" for name in names]
        (root / f"t{n}.conf.j2").write_text("\n".join(body) + "\n")
    exprs = {}
    for i in range(N_SECRETS):
        exprs[f"aws_pw_{i}"] = _aws_lookup(i, "password", aws_url)
        exprs[f"vault_token_{i}"] = _vault_lookup(i, vault_url)
    for i in range(N_USERS):
        exprs[f"aws_user_{i}"] = _aws_lookup(i, "user", aws_url)
    tasks = []
    if idiom == "set_fact":
        # Read once per host: one lookup per secret (the whole JSON), keys taken after.
        facts = {
            f"aws_{i}": f"lookup('amazon.aws.secretsmanager_secret', '{aws_name(i)}', endpoint_url='{aws_url}', region='{REGION}') | from_json"
            for i in range(N_SECRETS)
        }
        facts.update(
            {
                f"vault_{i}": _vault_lookup(i, vault_url).removesuffix(".token")
                for i in range(N_SECRETS)
            }
        )
        tasks.append(
            "    - name: read every secret once\n      ansible.builtin.set_fact:\n"
            + "".join(f'        {k}: "{{{{ {v} }}}}"\n' for k, v in facts.items())
            + "      no_log: true\n"
        )
        exprs = {f"aws_pw_{i}": f"aws_{i}.password" for i in range(N_SECRETS)}
        exprs.update({f"aws_user_{i}": f"aws_{i}.user" for i in range(N_USERS)})
        exprs.update({f"vault_token_{i}": f"vault_{i}.token" for i in range(N_SECRETS)})
    var_block = "".join(f'        {k}: "{{{{ {v} }}}}"\n' for k, v in exprs.items())
    for n in range(1, N_TEMPLATES + 1):
        tasks.append(
            f"    - name: template {n}\n"
            "      ansible.builtin.template:\n"
            f"        src: t{n}.conf.j2\n"
            f'        dest: "out/{{{{ inventory_hostname }}}}-{n}.conf"\n'
            '        mode: "0600"\n'
            "      vars:\n" + var_block
        )
    (root / "site.yml").write_text(PLAY_HEAD + "".join(tasks))
    return project


# -- the benchmark ------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    requests: int
    aws: int
    vault: int
    seconds: float
    ok: bool
    note: str = ""


@contextlib.contextmanager
def backends(tmp: Path) -> Iterator[tuple[DelayProxy, DelayProxy]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from servers import start_bao, start_moto

    moto = start_moto(tmp / "moto.log")
    (tmp / "bao").mkdir(exist_ok=True)
    bao = start_bao(tmp / "bao")
    try:
        seed(moto.url, bao.url)
        with (
            DelayProxy("127.0.0.1", moto.port, 0.0, name="aws") as aws,
            DelayProxy("127.0.0.1", bao.port, 0.0, name="vault") as vault,
        ):
            yield aws, vault
    finally:
        moto.stop()
        bao.stop()


def measure(
    name: str, project: Project, aws: DelayProxy, vault: DelayProxy, note: str = ""
) -> Outcome:
    aws.reset()
    vault.reset()
    start = time.monotonic()
    result = run_play(project.root)
    seconds = time.monotonic() - start
    ok = result.returncode == 0 and all(
        project.output(h, n).read_text() == expected_output(n, h)
        for h in project.host_names()
        for n in range(1, N_TEMPLATES + 1)
    )
    if not ok:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
    return Outcome(
        name, aws.requests + vault.requests, aws.requests, vault.requests, seconds, ok, note
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--forks", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not write results/ansible.md")
    args = parser.parse_args(argv)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-ansible-") as tmpdir:
        tmp = Path(tmpdir)
        with backends(tmp) as (aws, vault):
            common: dict[str, Any] = {
                "hosts": args.hosts,
                "forks": args.forks,
                "aws_url": aws.url,
                "vault_url": vault.url,
            }
            for callback in (True, False):
                name = (
                    "apsecrets.core.template + prefetch callback"
                    if callback
                    else ("apsecrets.core.template, no callback")
                )
                project = write_project(tmp / f"ours-{callback}", callback=callback, **common)
                outcomes.append(measure(name, project, aws, vault))
            if idioms_available(tmp):
                for idiom, name in (
                    ("per-value", "per-value lookups (amazon.aws / community.hashi_vault)"),
                    ("set_fact", "read-once set_fact, then ansible.builtin.template"),
                ):
                    project = write_idiom(tmp / idiom, idiom, **common)
                    outcomes.append(measure(name, project, aws, vault))
            else:
                print("amazon.aws / community.hashi_vault not installed: pip install ansible")
    report = render(outcomes, args.hosts, args.forks)
    print(report)
    if not args.no_write:
        RESULTS.write_text(report)
    return 0 if all(o.ok for o in outcomes) else 1


EXPLANATION = """\
How the counts arise (at 20 hosts): with the callback, the controller makes the one round at play start and
the 60 forked workers inherit the cache; without it, each task's worker makes its own round
(60 x 22). One lookup per value makes one request per value per task (60 x (30 AWS + 20 Vault));
the read-once `set_fact` makes one request per secret per host (20 x (20 + 20)), then renders from
facts, which Ansible keeps per host and cannot share across hosts.
"""


def render(outcomes: list[Outcome], hosts: int, forks: int) -> str:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    lines = [
        "# Ansible: backend requests of one play",
        "",
        f"{hosts} hosts x {N_TEMPLATES} template tasks at forks {forks}; the templates read "
        f"{N_SECRETS} AWS secrets and {N_SECRETS} OpenBao paths (50 values per template). "
        "Requests counted by a proxy in front of moto_server and `bao server -dev`. "
        "One round of the whole play is 22 requests (1 BatchGetSecretValue + 20 KV reads "
        "+ 1 mount lookup).",
        "",
        f"Generated by `python benchmarks/bench_ansible.py --hosts {hosts} --forks {forks}` on "
        f"{datetime.date.today().isoformat()}, ansible-core {version('ansible-core')}, "
        f"amazon.aws {collection_version('amazon', 'aws')}, "
        f"community.hashi_vault {collection_version('community', 'hashi_vault')}.",
        "",
        "| play | requests | AWS | Vault | wall time | output correct |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.name} | {o.requests} | {o.aws} | {o.vault} | {o.seconds:.1f} s | "
            f"{'yes' if o.ok else 'NO'} |"
        )
    lines += [
        "",
        *EXPLANATION.splitlines(),
        "",
        "Wall times are of a shared 2-core machine and no proxy delay: only the request "
        "counts are the point here.",
        "",
    ]
    return "\n".join(lines)


def collection_version(namespace: str, name: str) -> str:
    """The version of an installed collection, as ansible-core would find it."""
    roots = [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
    for root in [*roots, *sys.path]:
        manifest = Path(root) / "ansible_collections" / namespace / name / "MANIFEST.json"
        if manifest.is_file():
            return str(json.loads(manifest.read_text())["collection_info"]["version"])
    return "not installed"


if __name__ == "__main__":
    sys.exit(main())
