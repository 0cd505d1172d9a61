"""Both engines under 2-process DDP (gloo on CPU, torchrun): a NaN on one rank stops both ranks, and a run stopped
and resumed matches the uninterrupted run exactly (weights and logged losses).

One torchrun launch per engine runs the straight run, the stopped-and-resumed run and the NaN run in one process
group; each stage writes its outcome to a file, so a stage that hangs shows as the one missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    engine, out = sys.argv[1], Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")  # one group for every run below (the engines use it and leave it)

    def outcome(stage, **values):
        (out / f"{stage}.rank{rank}.json").write_text(json.dumps(values))

    if engine == "train":
        from replknet.train import NonFiniteLossError, get_preset, train
        from replknet.train.data import SyntheticBatches

        small = dict(model="replknet_tiny", image_size=32, synthetic_train_size=64, synthetic_val_size=16,
                     batch_size=8, recipe_batch=16, epochs=2, warmup_epochs=0.25, log_every=1, fuse=False,
                     drop_path=0.1, mixup=0.8, cutmix=1.0, device="cpu")  # per-rank torch and numpy draws
        train(get_preset("demo", **small, output=str(out / "straight")), progress=False)
        split = get_preset("demo", **small, output=str(out / "split"))
        train(split, progress=False, stop_after_epochs=1)
        train(split, resume=out / "split", progress=False)
        outcome("resume", done=True)
        if rank == 1:  # NaN images on rank 1 only, from the second epoch on; rank 0's losses stay finite
            batches = SyntheticBatches.__iter__

            def poisoned(self):
                for x, y in batches(self):
                    yield (x * float("nan") if self.train and self.epoch >= 1 else x), y

            SyntheticBatches.__iter__ = poisoned
        try:
            train(get_preset("demo", **small, output=str(out / "nan")), progress=False)
            outcome("nan", error=None)
        except NonFiniteLossError as error:
            outcome("nan", error=str(error))
    else:
        from replknet.seg.data import SyntheticSegmentation
        from replknet.seg.engine import TrainConfig, train
        from replknet.train import NonFiniteLossError

        def config(name, **changes):
            return TrainConfig(backbone="replknet_tiny_k3", iterations=5, batch_size=2, image_size=64,
                               train_samples=12, val_samples=4, channels=16, aux_channels=8, warmup_iters=2,
                               drop_path_rate=0.1, eval_every=100, save_every=2, log_every=1, progress=False,
                               save_png=0, device="cpu", output=str(out / name), **changes)

        train(config("straight"))
        train(config("split", stop_after=4))  # past the first epoch (3 batches per rank)
        train(config("split", resume="auto"))
        outcome("resume", done=True)
        if rank == 1:  # NaN images on rank 1 only, from the second epoch (iteration 4) on
            item = SyntheticSegmentation.__getitem__

            def poisoned(self, index):
                image, label = item(self, index)
                return (image * float("nan") if self.epoch >= 1 else image), label

            SyntheticSegmentation.__getitem__ = poisoned
        try:
            train(config("nan"))
            outcome("nan", error=None)
        except NonFiniteLossError as error:
            outcome("nan", error=str(error))
    dist.destroy_process_group()
    """
)


def _launch(engine: str, out: Path, timeout: float = 900) -> subprocess.CompletedProcess | None:
    """torchrun with 2 CPU processes; None when it ran past ``timeout`` (its whole process group is killed)."""
    script = out / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    process = subprocess.Popen(
        [*command, engine, str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and the workers it started
        process.communicate()
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _outcome(out: Path, stage: str) -> list[dict]:
    files = [out / f"{stage}.rank{rank}.json" for rank in (0, 1)]
    missing = [f.name for f in files if not f.is_file()]
    assert not missing, f"stage {stage!r} did not finish on every rank (a hang?): {missing} missing"
    return [json.loads(f.read_text()) for f in files]


def _losses(path: Path) -> list[dict]:
    """The logged records without their timings."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_seconds")} for r in records]


def _launched(tmp_path_factory, engine: str) -> Path:
    out = tmp_path_factory.mktemp(f"ddp_{engine}")
    done = _launch(engine, out)
    assert done is not None or (out / "resume.rank0.json").is_file(), f"the 2-process {engine} launch timed out"
    if done is not None:
        assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def train_launch(tmp_path_factory) -> Path:
    return _launched(tmp_path_factory, "train")


@pytest.fixture(scope="module")
def seg_launch(tmp_path_factory) -> Path:
    return _launched(tmp_path_factory, "seg")


def test_train_resumed_on_two_processes_matches_the_straight_run(train_launch):
    _outcome(train_launch, "resume")
    straight, split = train_launch / "straight", train_launch / "split"
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after a 2-process resume"
    records = _losses(straight / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 9))  # 2 epochs of 64 / (2 x 8)
    assert records == _losses(split / "metrics.jsonl")
    states = [torch.load(folder / "checkpoint.pt", weights_only=True) for folder in (straight, split)]
    assert len(states[1]["rng"]) == 2  # each process's random state
    assert not torch.equal(states[1]["rng"][0]["torch"], states[1]["rng"][1]["torch"])


def test_train_nan_on_one_rank_stops_both(train_launch):
    outcomes = _outcome(train_launch, "nan")
    assert outcomes[1]["error"].startswith("the loss became nan at epoch 2")
    assert outcomes[0]["error"].startswith("the loss became non-finite on another process at epoch 2")
    assert all("last good checkpoint is" in o["error"] for o in outcomes)
    assert torch.load(train_launch / "nan" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (train_launch / "nan" / "summary.json").exists()


def test_seg_train_resumed_on_two_processes_matches_the_straight_run(seg_launch):
    _outcome(seg_launch, "resume")
    a = torch.load(seg_launch / "straight" / "last.pth", weights_only=True)
    b = torch.load(seg_launch / "split" / "last.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 5
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), f"{key} differs after a 2-process resume"
    records = _losses(seg_launch / "straight" / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5]
    assert records == _losses(seg_launch / "split" / "metrics.jsonl")
    assert len(b["rng"]) == 2 and not torch.equal(b["rng"][0]["torch"], b["rng"][1]["torch"])
    for folder in ("straight", "split"):
        assert json.loads((seg_launch / folder / "metrics.json").read_text())["final"]["mIoU"] >= 0


def test_seg_train_nan_on_one_rank_stops_both(seg_launch):
    outcomes = _outcome(seg_launch, "nan")
    assert outcomes[1]["error"].startswith("the loss became nan at iteration 4")
    assert outcomes[0]["error"].startswith("the loss became non-finite on another process at iteration 4")
    assert all("last good checkpoint is" in o["error"] and "(iteration 2)" in o["error"] for o in outcomes)
    assert torch.load(seg_launch / "nan" / "last.pth", weights_only=True)["iteration"] == 2
    assert not (seg_launch / "nan" / "metrics.json").exists()  # not a finished run
