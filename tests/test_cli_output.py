"""Writing outputs (``cli/_output.py``, through ``render``): links are refused
before anything is written, folders are 0700, unchanged files are not
rewritten, ``--dry-run`` writes nothing and shows no value, ``render -``."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from test_cli import SECRET, run, run_process
from test_cli_render import snapshot

from jinja_apsecrets.cli import _output
from jinja_apsecrets.cli._output import OutputError, OutputSet, folder_mode

PW = "<<local|ap_sep_v1|app:db_password>>"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``src/``: a template at the top and one in ``sub/``; config beside."""
    monkeypatch.delenv("APSECRETS_CONFIG", raising=False)
    (tmp_path / "secrets.yaml").write_text(f"app: {{db_password: {SECRET}, user: app}}\n")
    (tmp_path / "apsecrets.yaml").write_text(
        "connections:\n  local: {provider: file, path: secrets.yaml}\n"
    )
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "app.conf.j2").write_text(f"pw={PW}\n")
    (tmp_path / "src" / "sub" / "db.ini.j2").write_text("user=<<local|ap_sep_v1|app:user>>\n")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def render_tree(tree: Path, *args: str) -> tuple[int, str, str]:
    return run("render", "src", "-o", "out", *args, cwd=tree)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class TestLinksAreRefused:
    def test_a_link_at_an_output_file(self, tree: Path) -> None:
        (tree / "out").mkdir()
        (tree / "out" / "app.conf").symlink_to(tree / "elsewhere" / "victim")
        code, _, err = render_tree(tree)
        assert code == 2
        assert "out/app.conf: is a symbolic link; refusing to write through it" in err
        assert not (tree / "elsewhere" / "victim").exists()
        assert not (tree / "out" / "sub").exists()  # the whole tree stays unwritten

    def test_a_linked_subfolder(self, tree: Path) -> None:
        (tree / "out").mkdir()
        (tree / "out" / "sub").symlink_to(tree / "elsewhere")
        code, _, err = render_tree(tree)
        assert code == 2
        assert "out/sub: is a symbolic link" in err
        assert list((tree / "elsewhere").iterdir()) == []
        assert not (tree / "out" / "app.conf").exists()

    def test_a_link_to_an_existing_file_is_not_followed_for_one_output(self, tree: Path) -> None:
        victim = tree / "elsewhere" / "victim"
        victim.write_text("keep me\n")
        (tree / "app.conf").symlink_to(victim)
        code, _, err = run("render", "src/app.conf.j2", "-o", "app.conf", cwd=tree)
        assert code == 2
        assert "app.conf: is a symbolic link" in err
        assert victim.read_text() == "keep me\n"

    def test_refused_before_any_lookup(self, tree: Path) -> None:
        (tree / "out").mkdir()
        (tree / "out" / "sub").symlink_to(tree / "elsewhere")
        code, _, _ = render_tree(tree, "--audit-log", "audit.jsonl")
        assert code == 2
        assert not (tree / "audit.jsonl").exists() or (tree / "audit.jsonl").read_text() == ""

    def test_a_link_made_after_the_inspection_is_not_followed(self, tmp_path: Path) -> None:
        """The writes open folders with O_NOFOLLOW, whatever the inspection saw."""
        (tmp_path / "out").mkdir()
        (tmp_path / "elsewhere").mkdir()
        outputs = OutputSet(tmp_path / "out")
        outputs.add(tmp_path / "out" / "sub" / "f", "data")
        outputs.add(tmp_path / "out" / "g", "data")
        assert [c.status for c in outputs.changes()] == ["create", "create"]
        (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
        racy = OutputSet(tmp_path / "out")
        racy.changes = outputs.changes  # type: ignore[method-assign]  # the stale inspection
        racy.add(tmp_path / "out" / "sub" / "f", "data")
        racy.add(tmp_path / "out" / "g", "data")
        with pytest.raises(OutputError, match="sub: is a symbolic link"):
            racy.commit()
        assert list((tmp_path / "elsewhere").iterdir()) == []
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sub"]

    def test_a_link_at_the_output_folder_itself_is_followed(self, tree: Path) -> None:
        """The folder the user named may be reached through a link (/etc/app -> /srv/app)."""
        (tree / "out").symlink_to(tree / "elsewhere")
        assert render_tree(tree)[0] == 0
        assert (tree / "elsewhere" / "app.conf").read_text() == f"pw={SECRET}\n"

    def test_outside_the_output_folder_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(OutputError, match="not inside the output folder"):
            OutputSet(tmp_path / "out").add(tmp_path / "x", "data")


class TestFolders:
    def test_folders_are_0700_by_default(self, tree: Path) -> None:
        old = os.umask(0o022)
        try:
            assert render_tree(tree)[0] == 0
        finally:
            os.umask(old)
        assert mode_of(tree / "out") == 0o700
        assert mode_of(tree / "out" / "sub") == 0o700
        assert mode_of(tree / "out" / "sub" / "db.ini") == 0o600

    def test_mode_gives_the_folders_search_where_reading_is_allowed(self, tree: Path) -> None:
        assert render_tree(tree, "--mode", "0640")[0] == 0
        assert mode_of(tree / "out" / "sub") == 0o750
        assert (folder_mode(0o644), folder_mode(0o600), folder_mode(0o400)) == (0o755, 0o700, 0o500)

    def test_existing_folders_keep_their_mode(self, tree: Path) -> None:
        (tree / "out" / "sub").mkdir(parents=True)
        (tree / "out" / "sub").chmod(0o755)
        assert render_tree(tree)[0] == 0
        assert mode_of(tree / "out" / "sub") == 0o755

    def test_a_failed_staging_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = _output._stage
        calls = []

        def full_disk(folder: int, out: object) -> str:
            calls.append(out)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(folder, out)  # type: ignore[arg-type]

        monkeypatch.setattr(_output, "_stage", full_disk)
        outputs = OutputSet(tmp_path / "out" / "deep")
        outputs.add(tmp_path / "out" / "deep" / "a" / "f", "1")
        outputs.add(tmp_path / "out" / "deep" / "b" / "g", "2")
        with pytest.raises(OutputError, match="No space left"):
            outputs.commit()
        assert not (tmp_path / "out").exists()


class TestOnlyIfChanged:
    def test_unchanged_outputs_keep_inode_and_mtime(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        files = [tree / "out" / "app.conf", tree / "out" / "sub" / "db.ini"]
        before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}
        os.utime(files[0], ns=(1, 1))  # so that any rewrite would show
        before[files[0]] = (files[0].stat().st_ino, 1)
        code, _, err = render_tree(tree, "-v")
        assert code == 0
        assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files} == before
        assert "unchanged out/app.conf" in err

    def test_a_changed_output_is_replaced(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        target = tree / "out" / "sub" / "db.ini"
        inode = target.stat().st_ino
        (tree / "src" / "sub" / "db.ini.j2").write_text("user=changed\n")
        code, _, err = render_tree(tree, "-v")
        assert code == 0
        assert target.read_text() == "user=changed\n"
        assert target.stat().st_ino != inode
        assert "wrote out/sub/db.ini" in err
        assert "unchanged out/app.conf" in err

    def test_a_changed_mode_is_rewritten(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        (tree / "out" / "app.conf").chmod(0o644)
        assert render_tree(tree)[0] == 0
        assert mode_of(tree / "out" / "app.conf") == 0o600


class TestDryRun:
    def test_lists_and_writes_nothing(self, tree: Path) -> None:
        assert render_tree(tree)[0] == 0
        (tree / "src" / "sub" / "db.ini.j2").write_text("user=changed\n")
        (tree / "src" / "new.j2").write_text(f"{PW}\n")
        before = snapshot(tree / "out")
        code, out, err = render_tree(tree, "--dry-run")
        assert code == 0
        assert snapshot(tree / "out") == before
        assert out.splitlines() == [
            "unchanged  out/app.conf",
            "create     out/new",
            "change     out/sub/db.ini",
        ]
        assert "dry run: 1 to create, 1 to change, 1 unchanged; nothing was written" in err
        assert SECRET not in out + err

    def test_a_new_tree_is_not_created(self, tree: Path) -> None:
        code, out, _ = render_tree(tree, "--dry-run")
        assert code == 0
        assert not (tree / "out").exists()
        assert "create     out/app.conf" in out

    def test_to_stdout_prints_no_value(self, tree: Path) -> None:
        code, out, _ = run("render", "src/app.conf.j2", "--dry-run", cwd=tree)
        assert (code, out) == (0, "print      <stdout> (src/app.conf.j2)\n")

    def test_a_failing_template_fails_the_dry_run(self, tree: Path) -> None:
        (tree / "src" / "bad.j2").write_text("<<local|ap_sep_v1|app:nope>>")
        code, out, _ = render_tree(tree, "--dry-run")
        assert (code, out) == (1, "")


class TestStdin:
    def test_template_from_stdin_to_stdout(self, tree: Path) -> None:
        code, out, _ = run("render", "-", "--set", "x=1", cwd=tree, input=f"{{{{ x }}}} {PW}\n")
        assert (code, out) == (0, f"1 {SECRET}\n")

    def test_template_from_stdin_to_a_file(self, tree: Path) -> None:
        code, _, _ = run("render", "-", "-o", "out/f.conf", cwd=tree, input=f"{PW}\n")
        assert code == 0
        assert (tree / "out" / "f.conf").read_text() == f"{SECRET}\n"
        assert mode_of(tree / "out") == 0o700

    def test_includes_are_found_from_the_working_folder(self, tree: Path) -> None:
        code, out, _ = run("render", "-", cwd=tree, input="{% include 'src/app.conf.j2' %}")
        assert (code, out) == (0, f"pw={SECRET}\n")

    def test_errors_name_stdin(self, tree: Path) -> None:
        code, _, err = run("render", "-", cwd=tree, input="a\n<<local|ap_sep_v1|app:nope>>\n")
        assert code == 1
        assert "<stdin>:2" in err

    def test_as_a_real_process(self, tree: Path) -> None:
        done = run_process("render", "-", cwd=tree, input=f"pw={PW}\n")
        assert (done.returncode, done.stdout) == (0, f"pw={SECRET}\n"), done.stderr
