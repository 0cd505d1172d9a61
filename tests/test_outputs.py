"""Outputs: paths checked before work (nothing created by the check), modes that honour the umask, one-line errors."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import pytest
import torch

import replknet
from replknet.checkpoint import atomic_torch_save, atomic_write, atomic_write_text
from replknet.outputs import OutputDir, check_output_dir, check_output_file


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------------------------- check_output_dir
def test_output_dir_checks_create_nothing(tmp_path):
    checked = check_output_dir(tmp_path / "a" / "b" / "run")
    assert checked == OutputDir(tmp_path / "a" / "b" / "run") and _tree(tmp_path) == []
    assert checked.create() == tmp_path / "a" / "b" / "run" and checked.path.is_dir()
    assert check_output_dir(checked.path).create() == checked.path  # an existing, unfinished folder is fine


def test_output_dir_refuses_files_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"^output folder {tmp_path / 'file'} is a file, not a folder$"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match=f"cannot be created: {tmp_path / 'file'} is a file"):
        check_output_dir(tmp_path / "file" / "deeper" / "run", what="--output")
    assert _tree(tmp_path) == ["file"]


def test_output_dir_refuses_a_finished_run_unless_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    finished = lambda folder: (folder / "summary.json").is_file()  # noqa: E731
    assert check_output_dir(run, finished=finished).path == run  # not finished yet
    (run / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match=f"{run} holds a finished run"):
        check_output_dir(run, finished=finished)
    assert check_output_dir(run, finished=finished, overwrite=True).path == run


def test_output_dir_refuses_an_unwritable_parent(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root may write anywhere: let os.access answer as it would for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(PermissionError, match=f"{locked} is not writable"):
        check_output_dir(locked / "run")
    with pytest.raises(PermissionError, match=f"{locked} is not writable"):
        check_output_file(locked / "out.json")


# ---------------------------------------------------------------------------------------------- check_output_file
def test_output_file_checks(tmp_path):
    checked = check_output_file(tmp_path / "new" / "deeper" / "p.json")
    assert _tree(tmp_path) == []  # the folder is made when the result is written
    assert checked.create_parent() == tmp_path / "new" / "deeper" / "p.json" and checked.path.parent.is_dir()
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match=f"output file {tmp_path / 'folder'} is a folder, not a file"):
        check_output_file(tmp_path / "folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        check_output_file(tmp_path / "file" / "p.json", what="--json")
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    assert check_output_file(existing).path == existing  # replaced when written, as a shell's > would


# ---------------------------------------------------------------------------------------------- umask
@contextlib.contextmanager
def _umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writers_honour_the_umask(tmp_path, mask):
    from replknet.deploy.loading import save_model_folder

    model = replknet.create_model("replknet_tiny", num_classes=3)
    with _umask(mask):
        with open(tmp_path / "plain.txt", "w") as handle:  # what any other program's file gets
            handle.write("x")
        written = [
            atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x")),
            atomic_write_text(tmp_path / "t.json", "{}"),
            atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "c.pt"),
            replknet.save_state_dict(model.state_dict(), tmp_path / "m.safetensors"),
        ]
        folder = save_model_folder(model, tmp_path / "folder")
        written += [folder / "model.safetensors", folder / "config.json"]
    expected = 0o666 & ~mask
    assert _mode(tmp_path / "plain.txt") == expected
    for path in written:
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))} instead of {oct(expected)}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_honours_the_umask(tmp_path):
    from replknet.deploy import export_model

    model = replknet.create_model("replknet_tiny", num_classes=3)
    with _umask(0o027):
        result = export_model(model, tmp_path / "m.pt", "torchscript", input_size=(32, 32), check=False)
    assert _mode(result.path) == 0o640


# ---------------------------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    ("error", "line"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out.json"), "Permission denied: /data/out.json"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), "No such file or directory: /x/y"),
        (IsADirectoryError("--output runs/x is a folder, not a file"), "--output runs/x is a folder, not a file"),
        (OSError(errno.ENOSPC, "No space left on device"), "[Errno 28] No space left on device"),
        (
            RuntimeError(
                "Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
                '  File "x.py", line 1, in f\nValueError: cannot read image /d/a.jpg: truncated\n'
            ),
            "ValueError: cannot read image /d/a.jpg: truncated",
        ),
    ],
)
def test_cli_prints_errors_as_one_line(monkeypatch, capsys, error, line):
    from replknet.cli import check, main

    def fail(args):
        raise error

    monkeypatch.setattr(check, "run", fail)
    assert main.main(["check"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"replknet check: error: {line}\n" and "Traceback" not in captured.err


def test_cli_image_error_and_version(monkeypatch, capsys, tmp_path):
    from replknet.cli import check, main
    from replknet.data.images import read_image

    (tmp_path / "bad.png").write_text("not an image")
    monkeypatch.setattr(check, "run", lambda args: read_image(tmp_path / "bad.png"))
    assert main.main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"replknet check: error: cannot read image {tmp_path / 'bad.png'}: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as done:
        main.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"replknet {replknet.__version__}\n"
