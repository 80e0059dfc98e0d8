"""Ansible at scale: one fetch round per play, against moto_server and OpenBao.

A real ``ansible-playbook`` runs a play of several ``ansible_connection=local``
hosts, three ``apsecrets.core.template`` tasks each, at forks > 1. Its
templates read 20 AWS secrets (moto_server) and 20 KV v2 paths (``bao server
-dev``), 50 values per template. Each server sits behind the counting proxy of
benchmarks/delay_proxy.py (no delay), which counts every request the play
makes, on the controller and in every forked worker. The play, the secrets
and the expected outputs are those of benchmarks/bench_ansible.py.

No doubles: real servers, real Ansible, real forks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server, start_bao, start_moto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_ansible import (
    N_TEMPLATES,
    Project,
    expected_output,
    run_play,
    seed,
    write_common,
    write_project,
)
from delay_proxy import DelayProxy

pytestmark = pytest.mark.server

#: One round of the whole play: 1 BatchGetSecretValue + 20 KV reads + 1 mount lookup.
ROUND = 22


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DelayProxy, DelayProxy]]:
    tmp = tmp_path_factory.mktemp("ansible-servers")
    moto: Server = start_moto(tmp / "moto.log")
    try:
        bao: Server = start_bao(tmp)
        try:
            seed(moto.url, bao.url)
            with (
                DelayProxy("127.0.0.1", moto.port, 0.0, name="aws") as aws,
                DelayProxy("127.0.0.1", bao.port, 0.0, name="vault") as vault,
            ):
                yield aws, vault
        finally:
            bao.stop()
    finally:
        moto.stop()


def run(
    tmp_path: Path,
    backends: tuple[DelayProxy, DelayProxy],
    *,
    hosts: int,
    forks: int,
    callback: bool,
) -> tuple[Project, int, int]:
    aws, vault = backends
    project = write_project(
        tmp_path, hosts=hosts, forks=forks, aws_url=aws.url, vault_url=vault.url, callback=callback
    )
    aws.reset()
    vault.reset()
    result = run_play(project.root)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for host in project.host_names():
        for n in range(1, N_TEMPLATES + 1):
            assert project.output(host, n).read_text() == expected_output(n, host)
    assert "Secret-" not in output
    return project, aws.requests, vault.requests


def test_prefetch_callback_one_round_for_the_whole_play(
    tmp_path: Path, backends: tuple[DelayProxy, DelayProxy]
) -> None:
    # The scale case: 20 hosts x 3 template tasks at forks 5 (60
    # forked workers) may cost at most 2 rounds; the callback makes it one.
    _, aws, vault = run(tmp_path, backends, hosts=20, forks=5, callback=True)
    assert aws + vault <= 2 * ROUND
    assert (aws, vault) == (1, ROUND - 1)


def test_without_the_callback_one_round_per_task(
    tmp_path: Path, backends: tuple[DelayProxy, DelayProxy]
) -> None:
    hosts = 3
    _, aws, vault = run(tmp_path, backends, hosts=hosts, forks=3, callback=False)
    tasks = hosts * N_TEMPLATES
    assert (aws, vault) == (tasks, tasks * (ROUND - 1))


ROLE_PLAY = """\
- hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    db:
      - "<<hashicorp|ap_sep_v1|secret/data/app/v00/token>>"
      - "<<hashicorp|ap_sep_v1|secret/data/app/v01/token>>"
  roles: [app]
  tasks:
    - name: vars with references, through the filter
      ansible.builtin.copy:
        dest: "out/{{ inventory_hostname }}.json"
        content: "{{ {'db': db, 'inv': inv_ref} | apsecrets.core.resolve | to_json }}"
      no_log: true
    - name: a literal lookup term
      ansible.builtin.copy:
        dest: "out/{{ inventory_hostname }}.txt"
        content: "{{ lookup('apsecrets.core.secret', 'aws|ap_sep_v1|app/s05:password') }}"
      no_log: true
"""


def test_prefetch_finds_role_templates_vars_and_lookup_terms(
    tmp_path: Path, backends: tuple[DelayProxy, DelayProxy]
) -> None:
    aws, vault = backends
    project = write_project(
        tmp_path, hosts=4, forks=4, aws_url=aws.url, vault_url=vault.url, callback=False
    )
    write_common(project, forks=4, callback=False)  # enabled by the environment below
    with (tmp_path / "hosts").open("a") as hosts:
        hosts.write("[all:vars]\ninv_ref=<<hashicorp|ap_sep_v1|secret/data/app/v02/token>>\n")
    role = tmp_path / "roles" / "app"
    (role / "templates").mkdir(parents=True)
    (role / "tasks").mkdir()
    (role / "templates" / "app.j2").write_text(
        "".join(f"s{i}=<<aws|ap_sep_v1|app/s{i:02d}:password>>\n" for i in range(5))
    )
    (role / "tasks" / "main.yml").write_text(
        "- apsecrets.core.template:\n    src: app.j2\n"
        '    dest: "out/{{ inventory_hostname }}.conf"\n'
    )
    (tmp_path / "site.yml").write_text(ROLE_PLAY)
    aws.reset()
    vault.reset()
    result = run_play(tmp_path, ANSIBLE_CALLBACKS_ENABLED="apsecrets.core.prefetch")
    assert result.returncode == 0, result.stdout + result.stderr
    for host in project.host_names():
        assert (tmp_path / "out" / f"{host}.conf").read_text().splitlines()[4] == (
            "s4=aws-Secret-04"
        )
        assert (tmp_path / "out" / f"{host}.txt").read_text() == "aws-Secret-05"
        assert (tmp_path / "out" / f"{host}.json").read_text() == (
            '{"db": ["vault-Secret-00", "vault-Secret-01"], "inv": "vault-Secret-02"}'
        )
    # One round on the controller: 6 AWS secrets in one batch, 3 KV reads + 1
    # mount lookup; the 4 forked workers of each of the 3 tasks ask for nothing.
    assert (aws.requests, vault.requests) == (1, 4)
