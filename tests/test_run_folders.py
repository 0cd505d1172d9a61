"""Run folders of train and seg-train: checked before any work, never overwritten unless asked, no trace when
refused, files that honour the umask."""

from __future__ import annotations

import json
import os
import stat

import pytest

from replknet.seg.engine import TrainConfig as SegConfig
from replknet.seg.engine import train as seg_train
from replknet.train import get_preset, train

TINY = dict(
    model="replknet_tiny", image_size=32, synthetic_train_size=32, synthetic_val_size=16, batch_size=16,
    recipe_batch=16, epochs=1, warmup_epochs=0, fuse=False, log_every=1, device="cpu",
)  # fmt: skip


def _train_config(output, **changes):
    return get_preset("demo", **{**TINY, "output": str(output), **changes})


def _seg_config(output, **changes):
    values = dict(
        backbone="replknet_tiny_k3", iterations=2, batch_size=2, image_size=64, train_samples=4, val_samples=2,
        channels=16, aux_channels=8, warmup_iters=1, save_png=0, progress=False, device="cpu", output=str(output),
    )  # fmt: skip
    return SegConfig(**{**values, **changes})


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------- train
def test_train_refuses_a_file_for_its_folder_before_any_work(tmp_path, monkeypatch):
    import replknet.train.engine as engine

    (tmp_path / "taken").write_text("x")
    monkeypatch.setattr(engine, "_build_model", lambda *a: pytest.fail("work started"))
    with pytest.raises(NotADirectoryError, match=f"run folder {tmp_path / 'taken'} is a file, not a folder"):
        train(_train_config(tmp_path / "taken"), progress=False)
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'taken'} is a file, not a folder"):
        train(_train_config(tmp_path / "taken" / "run"), progress=False)
    assert (tmp_path / "taken").read_text() == "x"


def test_train_finished_unfinished_and_refused_runs(tmp_path):
    run = tmp_path / "run"
    previous = os.umask(0o022)
    try:
        train(_train_config(run), progress=False)
    finally:
        os.umask(previous)
    summary = (run / "summary.json").read_text()
    for name in ("checkpoint.pt", "model.safetensors", "config.json", "metrics.jsonl", "summary.json"):
        assert _mode(run / name) == 0o644, name  # as open() gives them under umask 022 (was 0600)
    # A finished run is refused before any work, and left as it was.
    with pytest.raises(FileExistsError, match=f"run folder {run} holds a finished run"):
        train(_train_config(run, epochs=2), progress=False)
    assert (run / "summary.json").read_text() == summary
    # overwrite: a new run, whose log holds only its own records.
    result = train(_train_config(run, overwrite=True, seed=1), progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["step", "step", "epoch"]  # 32 images / 16 = 2 updates, then the epoch
    assert json.loads((run / "summary.json").read_text())["config"]["seed"] == 1 == result.config.seed

    # An unfinished run (stopped after epoch 1 of 2) is resumed or overwritten, not silently started over.
    unfinished = tmp_path / "unfinished"
    train(_train_config(unfinished, epochs=2), progress=False, stop_after_epochs=1)
    assert not (unfinished / "summary.json").exists()
    with pytest.raises(FileExistsError, match=f"holds an unfinished run.*--resume {unfinished}"):
        train(_train_config(unfinished, epochs=2), progress=False)
    assert train(_train_config(unfinished, epochs=2), resume=unfinished, progress=False).epochs_completed == 2

    # A refused resume creates no folder.
    fresh = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        train(_train_config(fresh), resume=tmp_path / "missing", progress=False)
    with pytest.raises(ValueError, match="different settings"):
        train(_train_config(fresh, epochs=2, batch_size=8), resume=unfinished, progress=False)
    assert not fresh.exists()


# ---------------------------------------------------------------------------------------------- seg-train
def test_seg_train_refuses_a_file_for_its_folder_before_any_work(tmp_path, monkeypatch):
    import replknet.seg.engine as engine

    (tmp_path / "taken").write_text("x")
    monkeypatch.setattr(engine, "build_dataset", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(NotADirectoryError, match=f"output folder {tmp_path / 'taken'} is a file, not a folder"):
        seg_train(_seg_config(tmp_path / "taken"))
    assert (tmp_path / "taken").read_text() == "x"


def test_seg_train_finished_unfinished_and_refused_runs(tmp_path):
    run = tmp_path / "run"
    seg_train(_seg_config(run))
    finished = (run / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match=f"output folder {run} holds a finished run"):
        seg_train(_seg_config(run, iterations=3))
    with pytest.raises(FileExistsError, match="holds a finished run"):
        seg_train(_seg_config(run, resume="auto"))
    assert (run / "metrics.json").read_text() == finished
    seg_train(_seg_config(run, overwrite=True, iterations=3))
    assert json.loads((run / "metrics.json").read_text())["iterations"] == 3
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3]  # log_every 10: only the final evaluation's record, none of the earlier run's

    unfinished = tmp_path / "unfinished"
    seg_train(_seg_config(unfinished, iterations=3, stop_after=1))
    assert (unfinished / "last.pth").is_file() and not (unfinished / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="holds an unfinished run.*resume='auto'"):
        seg_train(_seg_config(unfinished, iterations=3))
    assert seg_train(_seg_config(unfinished, iterations=3, resume="auto"))["final"] is not None

    fresh = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        seg_train(_seg_config(fresh, resume=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="model settings differ"):
        seg_train(_seg_config(fresh, iterations=3, channels=8, resume=str(unfinished)))
    assert not fresh.exists()
