"""Ansible: the apsecrets.core collection in real ansible-playbook runs (local providers).

Nothing is configured for Ansible to find the collection: it is found on
sys.path (the repository root, for this editable install). Secrets come from
the ``file`` provider; the hosts are ``ansible_connection=local``. Runs with
servers and request counts are in test_ansible_play.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import jinja_apsecrets.integrations.ansible.lookup as legacy_lookup

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
ANSIBLE_GALAXY = Path(sys.executable).with_name("ansible-galaxy")
ROOT = Path(__file__).resolve().parent.parent
COLLECTION = ROOT / "ansible_collections" / "apsecrets" / "core"
VALUES = ("pw-Secret-1", "tok-Secret-2", "admin-Secret-3")

TEMPLATE = """\
# {{ ansible_managed | default('managed') }}
user={{ user }}
password=<<local|ap_sep_v1|app:db_password>>
token={{local|ap_sep_v1|app:api_token}}
{# <<local|ap_sep_v1|app:in_a_comment>> #}
host={{ inventory_hostname }}
"""

PLAY = """\
- hosts: all
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    settings:
      db: {password: "<<local|ap_sep_v1|app:db_password>>", port: 5432}
      names: ["<<local|ap_sep_v1|app:user>>", "plain"]
    brace_term: !unsafe "{{local|ap_sep_v1|app:api_token}}"
  tasks:
    - name: render
      apsecrets.core.template:
        src: app.conf.j2
        dest: "out/{{ inventory_hostname }}.conf"
        mode: "0640"
        validate: grep -q ^password= %s
      vars:
        user: "{{ lookup('apsecrets.core.secret', 'local|ap_sep_v1|app:user') }}"
    - name: a file that is already up to date
      apsecrets.core.template:
        src: same.j2
        dest: "out/{{ inventory_hostname }}.same"
    - name: no reference, so no config is looked up
      apsecrets.core.template:
        src: plain.j2
        dest: "out/{{ inventory_hostname }}.plain"
        config: /nonexistent/apsecrets.yaml
    - name: filter, lookup policies and the legacy name
      ansible.builtin.copy:
        dest: "out/{{ inventory_hostname }}.json"
        content: "{{ {'resolved': settings | apsecrets.core.resolve,
                      'undefined': lookup('apsecrets.core.secret', 'local|ap_sep_v1|app:nope',
                                          on_missing='undefined', default='dflt'),
                      'keep': lookup('apsecrets.core.secret', '<<local|ap_sep_v1|app:nope>>',
                                     on_missing='keep'),
                      'many': query('apsecrets.core.secret', 'local|ap_sep_v1|app:user',
                                    brace_term),
                      'legacy': lookup('apsecret', 'local|ap_sep_v1|app:user')} | to_json }}"
      no_log: true
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text(
        "app:\n  db_password: pw-Secret-1\n  api_token: tok-Secret-2\n  user: admin-Secret-3\n"
    )
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "app.conf.j2").write_text(TEMPLATE)
    (tmp_path / "plain.j2").write_text("host={{ inventory_hostname }}\n")
    (tmp_path / "same.j2").write_text("pw=<<local|ap_sep_v1|app:db_password>>\n")
    (tmp_path / "site.yml").write_text(PLAY)
    (tmp_path / "hosts").write_text("".join(f"h{n} ansible_connection=local\n" for n in (1, 2, 3)))
    (tmp_path / "out").mkdir()
    return tmp_path


def play(
    project: Path, *args: str, playbook: str = "site.yml", inventory: str = "hosts", **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "APSECRETS_"))}
    environ.update(
        HOME=str(project),
        ANSIBLE_CONFIG=str(project / "none.cfg"),
        ANSIBLE_LOCAL_TEMP=str(project / ".ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(project / ".ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORKS="2",
        ANSIBLE_LOOKUP_PLUGINS=str(Path(legacy_lookup.__path__[0])),
    )
    environ.update(env)
    argv = [str(ANSIBLE_PLAYBOOK), "-i", inventory, playbook, *args]
    return subprocess.run(
        argv, cwd=project, env=environ, capture_output=True, text=True, timeout=300, check=False
    )


def assert_no_values(output: str, *values: str) -> None:
    for value in values or VALUES:
        assert value not in output


class TestPlay:
    def test_template_lookup_and_filter(self, project: Path) -> None:
        result = play(project, "--diff")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        for host in ("h1", "h2", "h3"):
            conf = project / "out" / f"{host}.conf"
            assert conf.read_text().splitlines()[1:] == [
                "user=admin-Secret-3",
                "password=pw-Secret-1",
                "token=tok-Secret-2",
                f"host={host}",
            ]
            assert stat.S_IMODE(conf.stat().st_mode) == 0o640
        assert (project / "out" / "h2.plain").read_text() == "host=h2\n"
        data = (project / "out" / "h1.json").read_text()
        assert '"resolved": {"db": {"password": "pw-Secret-1", "port": 5432}' in data
        assert '"names": ["admin-Secret-3", "plain"]' in data
        assert '"undefined": "dflt"' in data
        assert '"keep": "<<local|ap_sep_v1|app:nope>>"' in data
        assert '"many": ["admin-Secret-3", "tok-Secret-2"]' in data
        assert '"legacy": "admin-Secret-3"' in data
        # --diff shows references where values are, the lookup's value included.
        assert "+password=<<local|ap_sep_v1|app:db_password>>" in output
        assert "+token={{local|ap_sep_v1|app:api_token}}" in output
        assert "+user=<<local|ap_sep_v1|app:user>>" in output
        assert_no_values(output)

    def test_check_mode_and_diff_after_rotation(self, project: Path) -> None:
        conf = project / "out" / "h1.conf"
        old = "# managed\nuser=admin-Secret-3\npassword=pw-Old-9\ntoken=tok-Secret-2\nhost=h1\nold-Line-Secret\n"
        conf.write_text(old)
        (project / "out" / "h1.same").write_text("pw=pw-Secret-1\n")
        # The config found through the apsecrets_config variable, nothing beside the playbook.
        (project / "conf").mkdir()
        for name in ("apsecrets.yaml", "secrets.yaml"):
            (project / name).rename(project / "conf" / name)
        args = ("-e", "apsecrets_config=conf/apsecrets.yaml")
        result = play(project, "--check", "--diff", "--limit", "h1", *args)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert conf.read_text() == old  # check mode writes nothing
        tasks = {t.split("]", 1)[0]: t for t in output.split("TASK [")[1:]}
        assert "changed: [h1]" in tasks["render"]
        assert "ok: [h1]" in tasks["a file that is already up to date"]
        assert "-password=[previous value of <<local|ap_sep_v1|app:db_password>>]" in output
        assert "+password=<<local|ap_sep_v1|app:db_password>>" in output
        assert " token={{local|ap_sep_v1|app:api_token}}" in output  # unchanged line
        assert "-[apsecrets: 1 line(s) hidden: not mapped back to a reference]" in output
        assert_no_values(output, *VALUES, "pw-Old-9", "old-Line-Secret")

    def test_backup_and_failed_validation(self, project: Path) -> None:
        (project / "site.yml").write_text(
            PLAY.replace("        validate: grep -q ^password= %s\n", "        backup: true\n")
        )
        conf = project / "out" / "h1.conf"
        conf.write_text("old\n")
        result = play(project, "--limit", "h1")
        assert result.returncode == 0, result.stdout + result.stderr
        backups = [p for p in (project / "out").iterdir() if p.name.startswith("h1.conf.")]
        assert [p.read_text() for p in backups] == ["old\n"]

        (project / "site.yml").write_text(PLAY.replace("^password=", "^nothing-like-this"))
        conf.write_text("old\n")
        result = play(project, "--limit", "h1")
        assert result.returncode != 0
        assert conf.read_text() == "old\n"
        assert_no_values(result.stdout + result.stderr)

    def test_unresolvable_references_fail_with_code_and_reference(self, project: Path) -> None:
        (project / "app.conf.j2").write_text(
            TEMPLATE + "missing=<<local|ap_sep_v1|app:nope>>\nx=<<nowhere|ap_sep_v1|a:b>>\n"
        )
        result = play(project, "-vvv", "--diff", "--limit", "h1")
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert (
            "SECRET_MANAGER_GET_SECRET_FAILED: <<local|ap_sep_v1|app:nope>>: "
            "Secret value for key nope not found (in app.conf.j2:7)"
        ) in output
        assert "VALIDATION: <<nowhere|ap_sep_v1|a:b>>: Unknown connection 'nowhere'" in output
        assert not (project / "out" / "h1.conf").exists()
        assert_no_values(output)


def test_the_example_runs(tmp_path: Path) -> None:
    example = tmp_path / "example"
    shutil.copytree(ROOT / "examples" / "ansible", example, ignore=shutil.ignore_patterns("out"))
    cfg = str(example / "ansible.cfg")
    result = play(example, inventory="inventory.ini", ANSIBLE_CONFIG=cfg)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "password = example-db-Password-1" in (example / "out" / "web2-app.conf").read_text()
    assert '"password": "example-db-Password-1"' in (example / "out" / "web3-db.json").read_text()
    assert "example-" not in output


class TestCollectionPackaging:
    def test_galaxy_build(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [
                str(ANSIBLE_GALAXY),
                "collection",
                "build",
                str(COLLECTION),
                "--output-path",
                str(tmp_path),
            ],
            env={**os.environ, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        with tarfile.open(tmp_path / "apsecrets-core-0.1.0.tar.gz") as tar:
            names = set(tar.getnames())
        assert {
            "MANIFEST.json",
            "meta/runtime.yml",
            "plugins/lookup/secret.py",
            "plugins/filter/resolve.py",
            "plugins/action/template.py",
            "plugins/callback/prefetch.py",
            "plugins/plugin_utils/registry.py",
        } <= names
        assert not [n for n in names if "__pycache__" in n]
