"""Ansible: the apsecret lookup plugin, in a real ansible-playbook run and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import lookup_loader
from support import MemoryProvider

import jinja_apsecrets.integrations.ansible.lookup as plugin_package
from jinja_apsecrets import Resolver

PLUGIN_DIR = Path(plugin_package.__path__[0])
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
SECRETS = "app:\n  db_password: ans-Secret-1\n  user: admin\n"

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: render the config file
      ansible.builtin.template:
        src: app.conf.j2
        dest: "{{ out }}"
        mode: "0600"
      vars:
        creds: "{{ query('apsecret', %s, config='apsecrets.yaml') }}"
        user: "{{ lookup('apsecret', '<<local|ap_sep_v1|app:user>>') }}"
      no_log: %s
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "secrets.yaml").write_text(SECRETS)
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "app.conf.j2").write_text("user={{ user }}\npassword={{ creds[0] }}\n")
    return tmp_path


def play(project: Path, terms: str, *, no_log: bool = True) -> subprocess.CompletedProcess[str]:
    (project / "site.yml").write_text(PLAYBOOK % (terms, "true" if no_log else "false"))
    env = {
        **os.environ,
        "HOME": str(project),
        "ANSIBLE_LOOKUP_PLUGINS": str(PLUGIN_DIR),
        "ANSIBLE_LOCAL_TEMP": str(project / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(project / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_CONFIG": str(project / "none.cfg"),
        "APSECRETS_CONFIG": str(project / "apsecrets.yaml"),
    }
    args = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "site.yml", "-e", "out=app.conf"]
    return subprocess.run(
        args, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )


class TestPlaybook:
    def test_template_task_renders_secrets(self, project: Path) -> None:
        result = play(project, "'local|ap_sep_v1|app:db_password'")
        assert result.returncode == 0, result.stdout + result.stderr
        assert (project / "app.conf").read_text() == "user=admin\npassword=ans-Secret-1\n"
        assert "ans-Secret-1" not in result.stdout + result.stderr

    def test_missing_secret_fails_the_play_without_values(self, project: Path) -> None:
        # Without no_log, so that the error is shown (ansible-core 2.17 hides it
        # otherwise): it must name the reference and still hold no value.
        terms = "'local|ap_sep_v1|app:db_password', 'local|ap_sep_v1|app:nope'"
        result = play(project, terms, no_log=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "SECRET_MANAGER_GET_SECRET_FAILED" in output
        assert "app:nope" in output
        assert "ans-Secret-1" not in output
        assert not (project / "app.conf").exists()


@pytest.fixture
def lookup() -> Any:
    lookup_loader.add_directory(str(PLUGIN_DIR))
    return lookup_loader.get("apsecret", loader=DataLoader())


@pytest.fixture
def mem_config(tmp_path: Path, store: Mapping[str, Any], lookup: Any) -> Iterator[Path]:
    path = tmp_path / "apsecrets.yaml"
    path.write_text("connections:\n  mem: {provider: memory}\n")
    yield path
    plugin = sys.modules[type(lookup).__module__]
    for _, resolver in plugin._resolvers.values():
        resolver.close()
    plugin._resolvers.clear()


def resolver_of(lookup: Any, config: Path) -> Resolver:
    plugin = sys.modules[type(lookup).__module__]
    return plugin._resolvers[(os.getpid(), str(config.resolve()))][1]  # type: ignore[no-any-return]


class TestLookup:
    def test_all_terms_in_one_round(self, lookup: Any, mem_config: Path) -> None:
        terms = [
            "mem|ap_sep_v1|prod/db:username",
            "<<mem|ap_sep_v1|prod/db:password>>",
            "{{mem|ap_sep_v1|prod/api:token}}",
            "mem|ap_sep_v1|prod/db:username",
        ]
        values = lookup.run(terms, {}, config=str(mem_config))
        assert values == ["admin", "pw-Secret-1", "tok-Secret-2", "admin"]
        provider = resolver_of(lookup, mem_config).connections["mem"]
        assert isinstance(provider, MemoryProvider)
        assert [sorted(s.name for s in batch) for batch in provider.calls] == [
            ["prod/api", "prod/db"]
        ]

    def test_every_failure_is_named_without_values(self, lookup: Any, mem_config: Path) -> None:
        terms = [
            "mem|ap_sep_v1|prod/db:password",
            "mem|ap_sep_v1|gone:x",
            "mem|ap_sep_v1|prod/db:x",
        ]
        with pytest.raises(AnsibleError) as info:
            lookup.run(terms, {}, config=str(mem_config))
        message = str(info.value)
        assert message.startswith("apsecret: SECRET_MANAGER_GET_SECRET_FAILED: ")
        assert "mem|gone:x" in message
        assert "mem|prod/db:x" in message
        assert "pw-Secret-1" not in message

    def test_a_term_that_is_not_a_reference_is_not_echoed(
        self, lookup: Any, mem_config: Path
    ) -> None:
        with pytest.raises(AnsibleError, match=r"VALIDATION: term #2 is not a secret reference"):
            lookup.run(["mem|ap_sep_v1|prod/db:password", "hunter2"], {}, config=str(mem_config))

    def test_relative_config_falls_back_to_the_role_dir(
        self, lookup: Any, mem_config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path.parent)
        values = lookup.run(["mem|ap_sep_v1|plain"], {"role_path": str(tmp_path)})
        assert values == ["plain-Secret-3"]

    def test_missing_config_file(self, lookup: Any, tmp_path: Path) -> None:
        with pytest.raises(AnsibleError, match="VALIDATION: jinja_apsecrets config file not found"):
            lookup.run(["mem|ap_sep_v1|plain"], {}, config=str(tmp_path / "nope.yaml"))

    def test_unknown_connection(self, lookup: Any, mem_config: Path) -> None:
        with pytest.raises(AnsibleError, match=r"apsecret: VALIDATION: .*Unknown connection"):
            lookup.run(["aws|ap_sep_v1|a:b"], {}, config=str(mem_config))
