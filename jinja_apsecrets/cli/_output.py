"""Output files of the CLI: written atomically, with a chosen mode, all or none.

A set of outputs is written in two phases. First every file is *staged*: its
bytes are written to a temporary file beside its target, with the final mode,
and synced to disk. Only when every file is staged are they renamed into place,
one rename each. If staging fails (a full disk, a directory that cannot be
created) no target is touched, and the temporary files and the directories
made for them are removed. A rename can still fail halfway in theory (the
targets are on several file systems, say); it never leaves a partly written
file, only some files new and some old.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MODE", "OutputError", "OutputSet", "parse_mode", "write_atomic"]

DEFAULT_MODE = 0o600


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


def write_atomic(path: Path, data: str | bytes, mode: int = DEFAULT_MODE) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename).

    The file has exactly ``mode`` (the umask does not apply). Readers see the
    old file or the new one, never a part.
    """
    outputs = OutputSet()
    outputs.add(path, data, mode)
    outputs.commit()


@dataclass
class _Output:
    path: Path
    data: bytes
    mode: int


class OutputSet:
    """Files to write together: every one is staged before any is renamed.

    Targets are compared by resolved path; adding one twice is an
    :class:`OutputError` (two templates mapped to one output).
    """

    def __init__(self) -> None:
        self._outputs: dict[Path, _Output] = {}

    def __len__(self) -> int:
        return len(self._outputs)

    def add(self, path: Path, data: str | bytes, mode: int = DEFAULT_MODE) -> None:
        """Queue ``data`` (text is written as UTF-8, newlines as they are) for ``path``."""
        target = path.resolve()
        if target in self._outputs:
            raise OutputError(f"{path}: two sources would write this output")
        if target.is_dir():
            raise OutputError(f"{path}: is a directory, not a file")
        raw = data.encode("utf-8") if isinstance(data, str) else data
        self._outputs[target] = _Output(target, raw, mode)

    def paths(self) -> list[Path]:
        """The targets, in the order they were added."""
        return list(self._outputs)

    def commit(self) -> list[Path]:
        """Stage every output, then rename each into place. Returns the targets.

        Raises :class:`OutputError` if staging fails; then nothing was replaced
        and nothing is left behind.
        """
        created: list[Path] = []
        staged: list[tuple[str, Path]] = []
        try:
            for out in self._outputs.values():
                _make_parents(out.path.parent, created)
                staged.append((_stage(out), out.path))
        except OSError as exc:
            for tmp, _ in staged:
                Path(tmp).unlink(missing_ok=True)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            where = exc.filename or "output"
            raise OutputError(f"{where}: cannot write: {exc.strerror or exc}") from None
        for tmp, target in staged:
            os.replace(tmp, target)
        return [target for _, target in staged]


def _make_parents(folder: Path, created: list[Path]) -> None:
    """``mkdir -p folder``, remembering each directory made (outermost first)."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir()
        created.append(new)


def _stage(out: _Output) -> str:
    """Write ``out`` to a synced temporary file beside its target; its name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.path.name}.", suffix=".tmp", dir=out.path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), out.mode)
            handle.write(out.data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp
