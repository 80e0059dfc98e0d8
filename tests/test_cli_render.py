"""``render`` of trees: mirroring, all-or-nothing writes, modes, variables,
progress, the audit log and -v (never a value)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from test_cli import SECRET, run, run_process

from jinja_apsecrets.cli import _rendering as cli_render

PW = "<<local|ap_sep_v1|app:db_password>>"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every path under ``folder``: bytes (files), mode and mtime."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.stat()
        data = path.read_bytes() if path.is_file() else b""
        out[path.relative_to(folder).as_posix()] = (data, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``src/``: two templates (one nested), a partial, a plain file; config beside."""
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "secrets.yaml").write_text(f"app: {{db_password: {SECRET}, user: app}}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "app.conf.j2").write_text(f"pw={PW}\n{{% include '_head.j2' %}}")
    (src / "_head.j2").write_text("env={{ env }}\n")
    (src / "sub" / "db.ini.j2").write_text("[db]\nuser=<<local|ap_sep_v1|app:user>>\n")
    (src / "README.md").write_text("docs\n")
    return tmp_path


def render_tree(tree: Path, *args: str) -> tuple[int, str, str]:
    return run("render", "src", "-o", "out", "--set", "env=prod", *args, cwd=tree)


class TestTree:
    def test_mirrors_matching_files_and_drops_the_suffix(self, tree: Path) -> None:
        code, out, _ = render_tree(tree, "--exclude", "_*")
        assert (code, out) == (0, "")
        files = {p.relative_to(tree / "out").as_posix() for p in (tree / "out").rglob("*.*")}
        assert files == {"app.conf", "sub/db.ini"}
        assert (tree / "out" / "app.conf").read_text() == f"pw={SECRET}\nenv=prod\n"
        assert (tree / "out" / "sub" / "db.ini").read_text() == "[db]\nuser=app\n"

    def test_files_are_0600_unless_mode_is_given(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        assert stat.S_IMODE((tree / "out" / "sub" / "db.ini").stat().st_mode) == 0o600
        assert render_tree(tree, "--mode", "0640")[0] == 0
        assert stat.S_IMODE((tree / "out" / "sub" / "db.ini").stat().st_mode) == 0o640

    def test_copies_only_what_is_asked(self, tree: Path) -> None:
        (tree / "src" / "README.md").chmod(0o644)
        assert render_tree(tree, "--copy", "*.md")[0] == 0
        copied = tree / "out" / "README.md"
        assert copied.read_text() == "docs\n"
        assert stat.S_IMODE(copied.stat().st_mode) == 0o644

    def test_an_output_folder_inside_the_tree_is_not_searched(self, tree: Path) -> None:
        args = ["render", "src", "-o", "src/out", "--set", "env=x", "--copy", "*"]
        assert run(*args, cwd=tree)[0] == 0
        assert run(*args, cwd=tree)[0] == 0
        assert not (tree / "src" / "out" / "out").exists()
        assert (tree / "src" / "out" / "app.conf").exists()

    def test_other_patterns(self, tree: Path) -> None:
        (tree / "src" / "x.tmpl").write_text("<<local|ap_sep_v1|app:user>>")
        code, _, _ = render_tree(tree, "--pattern", "*.tmpl")
        assert code == 0
        assert [p.name for p in (tree / "out").rglob("*") if p.is_file()] == ["x"]

    def test_no_match_warns(self, tree: Path) -> None:
        code, _, err = render_tree(tree, "--pattern", "*.nothing")
        assert code == 0
        assert "warning: no file under src matches *.nothing" in err


class TestAllOrNothing:
    def test_a_failing_template_leaves_the_output_folder_untouched(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        (tree / "out" / "extra.txt").write_text("mine")
        before = snapshot(tree / "out")
        (tree / "src" / "sub" / "db.ini.j2").write_text("a\n<<local|ap_sep_v1|app:db_password>>\n")
        (tree / "src" / "zz.j2").write_text("ok\n\n<<local|ap_sep_v1|app:nope>>\n")
        code, _, err = render_tree(tree)
        assert code == 1
        assert snapshot(tree / "out") == before
        assert "zz.j2:3" in err
        assert "nothing was written" in err

    def test_a_new_output_folder_is_not_created(self, tree: Path) -> None:
        (tree / "src" / "sub" / "bad.j2").write_text("{{ nope }}")
        code, _, err = render_tree(tree)
        assert code == 1
        assert not (tree / "out").exists()
        assert "'nope' is undefined (src/sub/bad.j2:1)" in err

    def test_every_failure_is_reported(self, tree: Path) -> None:
        (tree / "src" / "a.j2").write_text("{% if %}")
        (tree / "src" / "b.j2").write_text("<<local|ap_sep_v1|app:>>")
        (tree / "src" / "c.j2").write_text("{% include 'gone.j2' %}")
        code, _, err = render_tree(tree)
        assert code == 1
        assert "template syntax" in err
        assert "src/a.j2:1" in err
        assert "VALIDATION" in err
        assert "src/b.j2:1" in err
        assert "template not found: gone.j2 (loaded by src/c.j2)" in err
        assert "3 of 6 templates failed" in err

    def test_a_failed_write_replaces_nothing(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        shutil.rmtree(tree / "out" / "sub")
        (tree / "out" / "sub").write_text("a file where a folder goes")
        (tree / "src" / "new" / "deeper").mkdir(parents=True)
        (tree / "src" / "new" / "deeper" / "n.j2").write_text("x")
        before = snapshot(tree / "out")
        code, _, err = render_tree(tree)
        assert code == 2
        assert "cannot write" in err
        assert snapshot(tree / "out") == before

    def test_a_connection_failure_is_exit_3(self, tree: Path) -> None:
        (tree / "secrets.yaml").unlink()
        code, _, err = render_tree(tree)
        assert code == 3
        assert "SECRET_MANAGER_CONNECTION_FAILED" in err
        assert not (tree / "out").exists()


class TestVariables:
    def test_nested_references_in_vars_are_resolved(self, tree: Path) -> None:
        (tree / "vars.yaml").write_text(
            f"db:\n  users: [{{name: '<<local|ap_sep_v1|app:user>>', pw: '{PW}'}}]\n"
            f"dsn: 'postgres://app:{PW}@db'\n"
        )
        (tree / "t.j2").write_text(
            "{% for u in db.users %}{{ u.name }}:{{ u.pw }}{% endfor %} {{ dsn }}"
        )
        code, out, _ = run("render", "t.j2", "--vars", "vars.yaml", cwd=tree)
        assert code == 0
        assert out == f"app:{SECRET} postgres://app:{SECRET}@db"

    def test_vars_files_merge_and_set_wins(self, tree: Path) -> None:
        (tree / "a.json").write_text('{"db": {"host": "a", "port": 1}, "x": "a"}')
        (tree / "b.yaml").write_text("db: {port: 2}\n")
        (tree / "t.j2").write_text("{{ db.host }}:{{ db.port }} {{ x }} {{ y.z }}")
        args = ["--vars", "a.json", "--vars", "b.yaml", "--set", "x=s", "--set", f"y.z={PW}"]
        code, out, _ = run("render", "t.j2", *args, cwd=tree)
        assert (code, out) == (0, f"a:2 s {SECRET}")

    def test_a_missing_secret_in_vars_names_the_file(self, tree: Path) -> None:
        (tree / "vars.yaml").write_text("a: {b: '<<local|ap_sep_v1|app:gone>>'}\n")
        (tree / "t.j2").write_text("x")
        code, _, err = run("render", "t.j2", "--vars", "vars.yaml", cwd=tree)
        assert code == 1
        assert "[local|app:gone] (vars.yaml)" in err

    def test_unparsable_vars_is_exit_2(self, tree: Path) -> None:
        (tree / "vars.yaml").write_text(f"a: [{SECRET}\n")
        (tree / "t.j2").write_text("x")
        code, _, err = run("render", "t.j2", "--vars", "vars.yaml", cwd=tree)
        assert code == 2
        assert "cannot parse vars file" in err
        assert SECRET not in err


class TestOnMissing:
    @pytest.mark.parametrize(
        ("policy", "expected"),
        [("keep", "a=<<local|ap_sep_v1|app:nope>>\n"), ("undefined", "a=\n")],
    )
    def test_lenient_policies(self, tree: Path, policy: str, expected: str) -> None:
        (tree / "t.j2").write_text("a=<<local|ap_sep_v1|app:nope>>\n")
        code, out, err = run("render", "t.j2", "--on-missing", policy, cwd=tree)
        assert (code, out) == (0, expected)
        assert "missing" in err  # the library's warning is shown


class TestProgress:
    def test_a_bar_only_on_a_terminal(self, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for i in range(cli_render.PROGRESS_MIN):
            (tree / "src" / f"f{i}.j2").write_text("x")
        assert "Rendering" not in render_tree(tree)[2]
        monkeypatch.setattr(cli_render, "on_terminal", lambda: True)
        assert "Rendering" in render_tree(tree)[2]


class TestNoValueIsShown:
    def test_audit_log_records_each_lookup_and_no_value(self, tree: Path) -> None:
        code, _, _ = render_tree(tree, "--audit-log", "audit.jsonl", "--exclude", "_*")
        assert code == 0
        log = tree / "audit.jsonl"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        text = log.read_text()
        assert SECRET not in text
        records = [json.loads(line) for line in text.splitlines()]
        assert all(
            list(r) == ["time", "template", "connection", "path", "cache", "outcome"]
            for r in records
        )
        seen = {(r["template"], r["path"], r["outcome"]) for r in records}
        assert ("app.conf.j2", "app:db_password", "ok") in seen
        assert ("sub/db.ini.j2", "app:user", "ok") in seen
        assert records[0]["time"].endswith("Z")
        assert {r["cache"] for r in records} <= {"hit", "miss"}

    def test_audit_log_appends_and_records_failures(self, tree: Path) -> None:
        (tree / "t.j2").write_text(f"{PW}<<local|ap_sep_v1|app:nope>>")
        run("render", "t.j2", "--audit-log", "a.jsonl", cwd=tree)
        run("render", "t.j2", "--audit-log", "a.jsonl", cwd=tree)
        records = [json.loads(x) for x in (tree / "a.jsonl").read_text().splitlines()]
        outcomes = {(r["path"], r["outcome"]) for r in records}
        assert ("app:nope", "SECRET_MANAGER_GET_SECRET_FAILED") in outcomes
        assert len([r for r in records if r["path"] == "app:nope"]) >= 2

    def test_verbose_output_has_no_value(self, tree: Path) -> None:
        (tree / "t.j2").write_text(f"{PW}\n{{{{ undefined }}}}")
        code, out, err = run("render", "t.j2", "-vv", "--set", f"x={PW}", cwd=tree)
        assert code == 1
        assert "lookup local|app:db_password in t.j2: cache miss, ok" in err
        assert "config: apsecrets.yaml" in err
        assert SECRET not in out + err

    def test_verbose_names_written_files(self, tree: Path) -> None:
        code, _, err = render_tree(tree, "-v")
        assert code == 0
        assert "wrote " in err
        assert SECRET not in err


def test_tree_as_a_real_process(tree: Path) -> None:
    (tree / "src" / "bad.j2").write_text("<<local|ap_sep_v1|app:nope>>")
    done = run_process("render", "src", "-o", "out", "--set", "env=p", cwd=tree)
    assert done.returncode == 1
    assert not (tree / "out").exists()
    (tree / "src" / "bad.j2").unlink()
    done = run_process("render", "src", "-o", "out", "--set", "env=p", cwd=tree)
    assert done.returncode == 0, done.stderr
    assert (tree / "out" / "app.conf").read_text() == f"pw={SECRET}\nenv=p\n"
