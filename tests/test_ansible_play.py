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
from bench_ansible import N_TEMPLATES, Project, expected_output, run_play, seed, write_project
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
