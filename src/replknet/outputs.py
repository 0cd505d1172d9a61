"""Output paths checked before any work starts, created only when the work does.

Every command that writes calls ``check_output_dir`` (a run folder, a folder of figures) or ``check_output_file``
(a JSON report, an exported model) first: a file where a folder is expected, a folder where a file is expected, a
folder that cannot be written, or a finished run that would be overwritten, is refused at once with an ``OSError``
naming the path (the command line prints it as one line). Nothing is created by the check itself, so a refused
command leaves no trace; the caller creates the folder (``OutputDir.create``) when its work begins.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutputDir", "OutputFile", "check_output_dir", "check_output_file"]


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_creatable(folder: Path, what: str) -> None:
    """``folder`` is, or can be made, a writable folder; else raise an ``OSError`` naming the path in the way."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} cannot be written: {existing} is not writable")


@dataclass(frozen=True)
class OutputDir:
    """A checked output folder; ``create()`` makes it (and its parents) when the work starts."""

    path: Path

    def create(self) -> Path:
        """Make the folder (parents too; nothing if it exists) and return its path."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path


@dataclass(frozen=True)
class OutputFile:
    """A checked output file; ``create_parent()`` makes its folder when the result is about to be written."""

    path: Path

    def create_parent(self) -> Path:
        """Make the file's folder (parents too) and return the file's path."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path


def check_output_dir(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    finished: Callable[[Path], bool] | None = None,
    what: str = "output folder",
) -> OutputDir:
    """Check that ``path`` can hold a command's output folder; create nothing.

    Args:
        path: the folder; it need not exist (missing parents are fine where they can be created).
        overwrite: allow a folder that ``finished`` says holds a finished run.
        finished: ``finished(folder) -> bool`` for an existing folder, e.g. "holds ``summary.json``".
        what: how messages name the folder (``"--output"``, ``"run folder"``).

    Raises:
        NotADirectoryError: ``path``, or a parent of it, is a file.
        PermissionError: the folder, or the parent it would be created in, cannot be written.
        FileExistsError: the folder holds a finished run and ``overwrite`` is False.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file, not a folder")
    _check_creatable(folder, f"{what} {folder}")
    if folder.is_dir() and finished is not None and finished(folder) and not overwrite:
        raise FileExistsError(f"{what} {folder} holds a finished run; choose another folder or overwrite it")
    return OutputDir(folder)


def check_output_file(path: str | os.PathLike, *, what: str = "output file") -> OutputFile:
    """Check that ``path`` can be written as a file (its folder existing or creatable); create nothing.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a parent of ``path`` is a file.
        PermissionError: the file's folder (or the one it would be created in) cannot be written.

    The file itself may exist: it is replaced (as a shell's ``>`` would).
    """
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(f"{what} {file} is a folder, not a file")
    _check_creatable(file.parent, f"{what} {file}")
    return OutputFile(file)
