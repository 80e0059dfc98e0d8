"""Ansible support without Ansible: config discovery, masking and diff views, discovery.

These are the typed functions the apsecrets.core plugins are built on
(jinja_apsecrets.integrations.ansible); real ansible-playbook runs are in
test_integration_ansible.py and test_ansible_play.py.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from jinja_apsecrets import SecretValidationError
from jinja_apsecrets.integrations.ansible.config import find_config
from jinja_apsecrets.integrations.ansible.discovery import refs_in_data, refs_in_template
from jinja_apsecrets.integrations.ansible.masking import before_view, mask_source, mask_values

REF = "<<aws|ap_sep_v1|prod/db:password>>"


class TestConfigDiscovery:
    @pytest.fixture
    def files(self, tmp_path: Path) -> Path:
        for name in ("opt.yaml", "var.yaml", "env.yaml", "apsecrets.yaml"):
            (tmp_path / name).write_text("connections: {}\n")
        return tmp_path

    def test_option_then_variable_then_env_then_beside_the_playbook(self, files: Path) -> None:
        env = {"APSECRETS_CONFIG": "env.yaml"}
        kw = {"playbook_dir": files, "cwd": files / "elsewhere"}
        assert find_config("opt.yaml", "var.yaml", environ=env, **kw) == files / "opt.yaml"
        assert find_config(None, "var.yaml", environ=env, **kw) == files / "var.yaml"
        assert find_config("", "", environ=env, **kw) == files / "env.yaml"
        assert find_config(None, None, environ={}, **kw) == files / "apsecrets.yaml"

    def test_relative_names_prefer_the_current_directory(self, files: Path, tmp_path: Path) -> None:
        here = tmp_path / "cwd"
        here.mkdir()
        (here / "opt.yaml").write_text("connections: {}\n")
        found = find_config("opt.yaml", playbook_dir=files, environ={}, cwd=here)
        assert found == here / "opt.yaml"

    def test_not_found_names_every_place(self, tmp_path: Path) -> None:
        with pytest.raises(SecretValidationError, match=r"not found \(looked for .*nope.yaml"):
            find_config("nope.yaml", playbook_dir=tmp_path, environ={}, cwd=tmp_path)


class TestMaskSource:
    def test_references_become_placeholders_and_come_back(self) -> None:
        src = (
            "a={{ x }} "
            + REF
            + "\n{# <<aws|ap_sep_v1|c:d>> #}{% raw %}<<aws|ap_sep_v1|r:s>>{% endraw %}"
        )
        masked = mask_source(src, jinja2.Environment(), nonce="n1")
        assert [r.text for r in masked.refs] == [REF]
        assert masked.text == "a={{ x }} __apsecret_n1_0__\n" + src[src.index("{#") :]
        rendered = jinja2.Environment().from_string(masked.text).render(x=1)
        assert masked.present(rendered) == [0]
        assert masked.fill(rendered, {0: "v{{1}}"}).startswith("a=1 v{{1}}\n")
        assert masked.view(rendered).startswith("a=1 " + REF)

    def test_brace_form_keeps_whitespace_control(self) -> None:
        masked = mask_source("a\n  {{- aws|ap_sep_v1|p:k -}}  \nb", jinja2.Environment(), nonce="n")
        rendered = jinja2.Environment().from_string(masked.text).render()
        assert masked.fill(rendered, {0: "V"}) == "aVb"

    def test_custom_delimiters(self) -> None:
        env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]")
        masked = mask_source("[[ x ]] <<aws|ap_sep_v1|p:k>>", env, nonce="n")
        assert masked.text == "[[ x ]] __apsecret_n_0__"

    def test_a_path_with_jinja_syntax_is_a_validation_error(self) -> None:
        with pytest.raises(SecretValidationError, match="static text"):
            mask_source("<<aws|ap_sep_v1|p:{{ k }}>>", jinja2.Environment())

    def test_mask_values_longest_first_in_one_pass(self) -> None:
        known = {"abc": "<<a>>", "abcdef": "<<b>>", "<<a>>": "<<c>>"}
        assert mask_values("x abcdef abc", known) == "x <<b>> <<a>>"


class TestBeforeView:
    def view(self, before: str, template: str, values: dict[int, str]) -> str:
        masked = mask_source(template, jinja2.Environment(), nonce="n")
        rendered = jinja2.Environment().from_string(masked.text).render()
        known = {v: masked.refs[i].text for i, v in values.items()}
        return before_view(before, masked, rendered, known)

    def test_unchanged_file_shows_references(self) -> None:
        view = self.view("user=u\npw=s3cret-1\n", f"user=u\npw={REF}\n", {0: "s3cret-1"})
        assert view == f"user=u\npw={REF}\n"

    def test_rotated_value_is_a_marker(self) -> None:
        view = self.view("user=u\npw=old-Secret\n", f"user=u\npw={REF}\n", {0: "new-Secret"})
        assert view == f"user=u\npw=[previous value of {REF}]\n"

    def test_lines_that_cannot_be_mapped_are_hidden(self) -> None:
        before = "user=u\nold-Secret-line\nmore old-Secret\npw=x\n"
        view = self.view(before, f"user=u\npw={REF}\n", {0: "new"})
        assert "old-Secret" not in view
        assert view == (
            "user=u\n[apsecrets: 2 line(s) hidden: not mapped back to a reference]\n"
            f"pw=[previous value of {REF}]\n"
        )

    def test_multiline_values_are_masked_whole(self) -> None:
        pem = "-----BEGIN-----\nAAAA\n-----END-----"
        view = self.view(f"cert={pem}\nend\n", f"cert={REF}\nend\n", {0: pem})
        assert view == f"cert={REF}\nend\n"
        old = self.view(
            "cert=-----BEGIN-----\nBBBB\n-----END-----\nend\n", f"cert={REF}\nend\n", {0: pem}
        )
        assert "BBBB" not in old
        assert old.endswith("end\n")


class TestDiscovery:
    def test_inline_references_and_literal_lookup_terms(self) -> None:
        data = {
            "a": [
                "<<aws|ap_sep_v1|x:y>>",
                {"b": "{{ lookup('apsecrets.core.secret', 'v|ap_sep_v1|p/q', config='c.yaml') }}"},
            ],
            "c": "{{ query(\"apsecret\", '<<f|ap_sep_v1|z>>', some_var) }}",
            "d": "{{ lookup('env', 'aws|ap_sep_v1|not:this') }}",
        }
        assert set(refs_in_data(data)) == {("aws", "x:y"), ("v", "p/q"), ("f", "z")}

    def test_templates_skip_comments_and_raw(self) -> None:
        src = "<<a|ap_sep_v1|p>> {# <<b|ap_sep_v1|q>> #} {{ lookup('apsecrets.core.secret', 'c|ap_sep_v1|r') }}"
        assert list(refs_in_template(src)) == [("a", "p"), ("c", "r")]
