"""Output files of the CLI: inside their folder, atomic, all or none, only if changed.

An :class:`OutputSet` holds the files one command writes under one output
folder (the ``-o`` folder of a tree, or the folder of a single ``-o`` file).
Writing is split in three phases:

1. **Inspect** every target, before anything is created: a symbolic link at
   a target or at any folder between the output folder and a target is
   refused (an :class:`OutputError` naming the path), as is a target that is a
   folder or not a regular file. Each target is classified as to be
   ``create``-d, ``change``-d, or ``unchanged`` (same bytes and same mode: it
   is not rewritten, so it keeps its inode and mtime). ``--dry-run`` stops
   here.
2. **Stage** each created or changed file: its bytes go to a new temporary
   file beside its target, with the final mode, synced to disk. Missing
   folders are made with the folder mode (0700 for the default file mode
   0600: see :func:`folder_mode`). If staging fails (a full disk, a file where
   a folder goes) no target is touched, and the temporary files and the
   folders made for them are removed.
3. **Rename** each staged file over its target, one ``rename`` each.

Links are never followed below the output folder, even if one appears
between the inspection and the writes: folders are opened one component at a
time with ``O_NOFOLLOW`` relative to their parent's descriptor (``openat``),
temporary files are created with ``O_EXCL | O_NOFOLLOW``, and the final
``rename`` replaces whatever entry is at the target, a link included, instead
of writing through it. The output folder itself is opened as named, so a
folder the user reached through a link (``/etc/app`` -> ``/srv/app``) works.

A rename can still fail halfway in theory; it never leaves a partly written
file, only some files new and some old.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_MODE",
    "Change",
    "OutputError",
    "OutputSet",
    "folder_mode",
    "parse_mode",
    "refuse_links",
    "write_atomic",
]

DEFAULT_MODE = 0o600

Status = Literal["create", "change", "unchanged"]

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutputError(Exception):
    """An output cannot be written (not a secrets error: a usage error)."""


def parse_mode(text: str) -> int:
    """An octal file mode such as ``600``, ``0640`` or ``0o640``; ``ValueError`` otherwise."""
    digits = text.strip().lower().removeprefix("0o")
    if not digits or any(c not in "01234567" for c in digits):
        raise ValueError(f"{text!r} is not an octal file mode such as 0600")
    mode = int(digits, 8)
    if mode > 0o7777:
        raise ValueError(f"{text!r} is not a file mode: it is above 07777")
    return mode


def folder_mode(file_mode: int) -> int:
    """The mode of folders made for files of ``file_mode``: its permission
    bits, plus search (``x``) wherever reading is allowed. 0600 -> 0700,
    0640 -> 0750, 0644 -> 0755."""
    bits = file_mode & 0o777
    return bits | ((bits & 0o444) >> 2)


def write_atomic(path: Path, data: str | bytes, mode: int = DEFAULT_MODE) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename).

    The file has exactly ``mode`` (the umask does not apply). Readers see the
    old file or the new one, never a part. A link at ``path`` is refused.
    """
    outputs = OutputSet(path.parent, mode)
    outputs.add(path, data, mode)
    outputs.commit()


@dataclass(frozen=True)
class Change:
    """What writing would do to one target."""

    path: Path
    status: Status


@dataclass
class _Output:
    path: Path  # as the user will see it (the output folder joined with parts)
    parts: tuple[str, ...]  # below the output folder
    data: bytes
    mode: int


class OutputSet:
    """Files to write together under the folder ``root``.

    Every target is inspected before anything is written and staged before
    any is renamed (see the module docstring). ``mode`` is the file mode the
    folders made under ``root`` (and ``root`` itself, if missing) derive from
    (:func:`folder_mode`). Adding a target twice is an :class:`OutputError`
    (two templates mapped to one output).
    """

    def __init__(self, root: Path, mode: int = DEFAULT_MODE) -> None:
        self.root = root
        self.folder_mode = folder_mode(mode)
        self._outputs: dict[tuple[str, ...], _Output] = {}
        self._roots_made: list[Path] = []  # the output folder and parents made, outermost first

    def __len__(self) -> int:
        return len(self._outputs)

    def add(self, path: Path, data: str | bytes, mode: int = DEFAULT_MODE) -> None:
        """Queue ``data`` (text is written as UTF-8, newlines as they are) for ``path``,
        which must lie in the output folder (compared by name: links are not followed)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        parts = tuple(Path(rel).parts)
        if not parts or rel == "." or parts[0] == os.pardir:
            raise OutputError(f"{path}: is not inside the output folder {self.root}")
        if parts in self._outputs:
            raise OutputError(f"{path}: two sources would write this output")
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self._outputs[parts] = _Output(path, parts, raw, mode)

    def paths(self) -> list[Path]:
        """The targets, in the order they were added."""
        return [out.path for out in self._outputs.values()]

    # -- phase 1: inspect ----------------------------------------------------------

    def changes(self) -> list[Change]:
        """What :meth:`commit` would do to each target, in the order added.

        Writes nothing. Raises :class:`OutputError` for a link (or a folder, or
        a special file) where a target or a folder on its way should be.
        """
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            root_fd = None  # nothing exists yet: everything is created
        except OSError as exc:
            raise _error(self.root, exc) from None
        try:
            return [Change(out.path, self._inspect(root_fd, out)) for out in self._outputs.values()]
        finally:
            if root_fd is not None:
                os.close(root_fd)

    def _inspect(self, root_fd: int | None, out: _Output) -> Status:
        if root_fd is None:
            return "create"
        with _folders() as opened:
            fd = root_fd
            for depth, name in enumerate(out.parts[:-1]):
                where = self.root.joinpath(*out.parts[: depth + 1])
                st = _lstat(name, fd, where)
                if st is None:
                    return "create"
                _refuse_link(st, where)
                if not stat.S_ISDIR(st.st_mode):
                    raise OutputError(f"{where}: cannot write into it: it is not a folder")
                fd = opened.open(name, fd, where)
            return _compare(fd, out)

    # -- phases 2 and 3: stage, rename ----------------------------------------------

    def commit(self) -> list[Path]:
        """Write every created or changed target; the paths written.

        Unchanged targets are left alone (same inode, same mtime). Raises
        :class:`OutputError` if a target is refused or staging fails; then
        nothing was replaced and nothing is left behind.
        """
        pending = [
            out
            for out, change in zip(self._outputs.values(), self.changes(), strict=True)
            if change.status != "unchanged"
        ]
        if not pending:
            return []
        made: list[tuple[int, str]] = []  # folders made: (parent fd, name), outermost first
        staged: list[tuple[int, str, _Output]] = []  # (folder fd, temporary name, output)
        with _folders() as opened:
            try:
                root_fd = self._open_root(opened)
                for out in pending:
                    fd = root_fd
                    for depth, name in enumerate(out.parts[:-1]):
                        where = self.root.joinpath(*out.parts[: depth + 1])
                        fd = opened.open_or_make(name, fd, where, self.folder_mode, made)
                    staged.append((fd, _stage(fd, out), out))
            except (OSError, OutputError) as exc:
                for fd, tmp, _ in staged:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=fd)
                for parent, name in reversed(made):
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=parent)
                for folder in reversed(self._roots_made):
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)
                if isinstance(exc, OutputError):
                    raise
                raise _error(Path(exc.filename or self.root), exc) from None
            for fd, tmp, out in staged:
                # rename() replaces the entry at the target, a link included:
                # it never writes through one.
                os.replace(tmp, out.parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
            for fd in {fd for fd, _, _ in staged}:
                with contextlib.suppress(OSError):
                    os.fsync(fd)  # the renames themselves survive a crash
        return [out.path for out in pending]

    def _open_root(self, opened: _Opened) -> int:
        """The output folder, made (with its missing parents) if needed."""
        if not self.root.exists():
            missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
            self._roots_made = []
            for folder in reversed(missing):
                os.mkdir(folder, self.folder_mode)
                self._roots_made.append(folder)
                os.chmod(folder, self.folder_mode)  # the umask does not apply
        return opened.track(os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))


class _Opened:
    """Folder descriptors opened during one walk, closed together."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.cache: dict[tuple[int, str], int] = {}

    def track(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def open(self, name: str, parent: int, where: Path) -> int:
        """``name`` under ``parent`` as a folder, never through a link."""
        key = (parent, name)
        if key not in self.cache:
            try:
                self.cache[key] = self.track(os.open(name, _NOFOLLOW_DIR, dir_fd=parent))
            except OSError as exc:
                raise _error(where, exc) from None
        return self.cache[key]

    def open_or_make(
        self, name: str, parent: int, where: Path, mode: int, made: list[tuple[int, str]]
    ) -> int:
        try:
            os.mkdir(name, mode, dir_fd=parent)
        except FileExistsError:
            return self.open(name, parent, where)
        made.append((parent, name))
        fd = self.open(name, parent, where)
        os.fchmod(fd, mode)  # the umask does not apply
        return fd


@contextlib.contextmanager
def _folders() -> Iterator[_Opened]:
    opened = _Opened()
    try:
        yield opened
    finally:
        for fd in opened.fds:
            os.close(fd)


def _lstat(name: str, folder: int, where: Path) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(where, exc) from None


def _refuse_link(st: os.stat_result, where: Path) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{where}: is a symbolic link; refusing to write through it (nothing was written)"
        )


def _compare(folder: int, out: _Output) -> Status:
    """``create``, ``change`` or ``unchanged`` for ``out`` in the open ``folder``."""
    name = out.parts[-1]
    st = _lstat(name, folder, out.path)
    if st is None:
        return "create"
    _refuse_link(st, out.path)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{out.path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{out.path}: is not a regular file")
    if stat.S_IMODE(st.st_mode) != out.mode or st.st_size != len(out.data):
        return "change"
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "change"  # not readable to us: rewrite it
        raise _error(out.path, exc) from None
    with os.fdopen(fd, "rb") as handle:
        return "unchanged" if handle.read() == out.data else "change"


def _stage(folder: int, out: _Output) -> str:
    """Write ``out`` to a new synced temporary file in ``folder``; its name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = f".{out.parts[-1]}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=folder)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), out.mode)
            handle.write(out.data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return tmp


def _error(where: Path, exc: OSError) -> OutputError:
    """An :class:`OutputError` for ``exc`` met at ``where``."""
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        # O_NOFOLLOW met a link (one that appeared after the inspection)
        return OutputError(f"{where}: is a symbolic link; refusing to write through it")
    if exc.errno == errno.ENOTDIR:
        return OutputError(f"{where}: cannot write into it: it is not a folder")
    return OutputError(f"{where}: cannot write: {exc.strerror or exc}")


def refuse_links(root: Path, targets: list[Path]) -> None:
    """Raise :class:`OutputError` if a target under ``root`` (or a folder on
    its way) is a symbolic link, a folder or a special file; writes nothing.
    For a check before anything is rendered (the data are not known yet)."""
    outputs = OutputSet(root)
    for target in targets:
        outputs.add(target, b"")  # two sources for one target are refused here too
    outputs.changes()
