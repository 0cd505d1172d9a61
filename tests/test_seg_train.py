"""Segmentation training: the paper's schedule and optimiser, a short synthetic run that learns, exact resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from replknet.cli.main import main
from replknet.seg.data import SyntheticSegmentation
from replknet.seg.engine import TrainConfig, build_optimizer, load_segmentor, poly_lr, train
from replknet.seg.model import build_segmentor


def test_poly_schedule_with_linear_warmup():
    base, total, warmup, ratio = 2e-4, 1000, 100, 1e-6
    # mmcv: poly value, scaled by 1 - (1 - it / warmup) * (1 - ratio) during warm-up.
    assert poly_lr(0, base, total, warmup_iters=warmup, warmup_ratio=ratio) == pytest.approx(base * ratio)
    assert poly_lr(50, base, total, warmup_iters=warmup, warmup_ratio=ratio) == pytest.approx(
        base * 0.95 * (1 - 0.5 * (1 - ratio))
    )
    assert poly_lr(100, base, total, warmup_iters=warmup) == pytest.approx(base * 0.9)
    assert poly_lr(500, base, total) == pytest.approx(base / 2)
    assert poly_lr(500, base, total, power=2.0, min_lr=1e-6) == pytest.approx((base - 1e-6) / 4 + 1e-6)
    assert poly_lr(total, base, total) == 0.0


def test_no_weight_decay_on_norm_layers():
    model = build_segmentor("replknet_tiny", 3, channels=16, aux_channels=8)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    bn_params = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in no_decay["params"]} == bn_params
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["betas"] == (0.9, 0.999)


_SMALL = [
    "--image-size", "64", "--train-samples", "64", "--val-samples", "16", "--channels", "32", "--aux-channels", "16",
    "--threads", "1", "--no-progress",
]  # fmt: skip


def test_short_synthetic_run_improves_miou_and_evaluates(tmp_path):
    out = tmp_path / "run"
    args = ["seg-train", "--backbone", "replknet_tiny", "--iterations", "40", "--batch-size", "8", "--warmup-iters",
            "5", "--eval-interval", "40", "--eval-at-start", "--output", str(out), *_SMALL]  # fmt: skip
    assert main(args) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["iteration"] for row in history] == [0, 40]
    before, after = history[0]["mIoU"], history[-1]["mIoU"]
    # A constant prediction of class c has mIoU = (share of c) / K; the trained model must beat the best of them.
    labels = SyntheticSegmentation("val", num_samples=16, image_size=64).labels
    best_constant = max((labels == c).mean() for c in range(4)) / 4
    assert after > before and after > best_constant + 0.05, (before, after, best_constant)
    assert len(list((out / "predictions").glob("*.png"))) == 4
    # The checkpoint reads back with weights_only=True and rebuilds the model from its own config.
    checkpoint = torch.load(out / "last.pth", weights_only=True)
    assert checkpoint["iteration"] == 40 and checkpoint["segmentor"]["backbone"] == "replknet_tiny"
    model = load_segmentor(out / "last.pth")
    assert model.config.channels == 32

    # seg-eval: the whole-image and the covering-window sliding test agree; multi-scale + flip runs.
    common = ["--image-size", "64", "--val-samples", "16", "--threads", "1", "--json", "-", "--save-png", "0"]
    results = {}
    for name, extra in {"whole": [], "slide": ["--mode", "slide", "--crop", "64", "--stride", "32"],
                        "ms": ["--ms", "--ratios", "1.0", "1.5"]}.items():  # fmt: skip
        assert (
            main(["seg-eval", "--checkpoint", str(out / "last.pth"), "--output", str(tmp_path / name), *common, *extra])
            == 0
        )
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert results["whole"]["mIoU"] == pytest.approx(after, abs=1e-9)
    assert results["slide"]["mIoU"] == results["whole"]["mIoU"]
    assert 0.0 < results["ms"]["mIoU"] <= 1.0


def test_resume_continues_exactly(tmp_path):
    def config(out, iterations, resume=None, stop_after=None):
        return TrainConfig(
            backbone="replknet_tiny_k3", iterations=iterations, batch_size=4, image_size=64, train_samples=12,
            val_samples=2, channels=16, aux_channels=8, warmup_iters=2, eval_every=100, save_every=2,
            output=str(out), resume=resume, stop_after=stop_after, progress=False, save_png=0,
        )  # fmt: skip

    straight = train(config(tmp_path / "a", 5))
    interrupted = train(config(tmp_path / "b", 5, stop_after=4))  # past the end of the first epoch (3 batches)
    assert interrupted["final"] is None
    resumed = train(config(tmp_path / "b", 5, resume="auto"))
    a = torch.load(tmp_path / "a" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 5
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert resumed["final"]["mIoU"] == straight["final"]["mIoU"]
    # A different model cannot resume from it.
    with pytest.raises(ValueError, match="model settings differ"):
        train(config(tmp_path / "c", 6, resume=str(tmp_path / "b" / "last.pth")).replace(channels=8))
    assert not (tmp_path / "c").exists()  # a refused run leaves nothing behind


def test_memory_formats_train_the_same_model(tmp_path, monkeypatch):
    """``memory_format`` (auto = channels_last on a CPU) feeds the segmentor channels_last batches and computes
    the same losses as contiguous (NCHW) training."""
    from replknet.seg import engine

    layouts = []
    original = engine._LossModule.forward

    def spy(self, images, targets):
        layouts.append(images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous())
        return original(self, images, targets)

    monkeypatch.setattr(engine._LossModule, "forward", spy)

    def losses(name):
        layouts.clear()
        config = TrainConfig(
            backbone="replknet_tiny", iterations=3, batch_size=4, image_size=64, train_samples=8, val_samples=2,
            channels=16, aux_channels=8, warmup_iters=1, log_every=1, eval_every=100, save_every=100,
            output=str(tmp_path / name), memory_format=name, progress=False, save_png=0,
        )  # fmt: skip
        train(config)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [row["loss"] for row in rows if row["kind"] == "step"], list(layouts)

    nchw, nchw_layouts = losses("contiguous")
    cl, cl_layouts = losses("channels_last")
    auto, auto_layouts = losses("auto")
    assert nchw_layouts == [False] * 3 and cl_layouts == [True] * 3 and auto_layouts == [True] * 3  # CPU
    assert len(nchw) == 3 and cl == pytest.approx(nchw, rel=1e-4) and auto == cl
    with pytest.raises(ValueError, match="memory format"):
        train(TrainConfig(memory_format="nhwc", output=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        train(TrainConfig(dataset="voc"))
    with pytest.raises(ValueError, match="needs --data-root"):
        train(TrainConfig(dataset="ade20k", output=str(tmp_path)))
    assert main(["seg-eval", "--checkpoint", str(tmp_path / "missing.pth")]) == 2


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "replknet", "seg-train", "--backbone", "replknet_tiny_k3", "--iterations", "3",
               "--batch-size", "2", "--warmup-iters", "1", "--output", str(out), "--save-png", "1", *_SMALL]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(out / "last.pth", weights_only=True)
    assert checkpoint["iteration"] == 3
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    result = json.loads((out / "metrics.json").read_text())
    assert result["final"]["mIoU"] > 0 and (out / "predictions" / "pred_000.png").is_file()


def test_amp_training_step_on_cpu(tmp_path):
    # bf16 autocast on CPU: the loss is computed in fp32 and the weights stay fp32.
    result = train(
        TrainConfig(
            backbone="replknet_tiny_k3",
            iterations=2,
            batch_size=2,
            image_size=64,
            train_samples=4,
            val_samples=2,
            channels=16,
            aux_channels=8,
            warmup_iters=1,
            amp=True,
            output=str(tmp_path),
            progress=False,
            save_png=0,
        )  # fmt: skip
    )
    assert 0.0 <= result["final"]["mIoU"] <= 1.0
    state = torch.load(tmp_path / "last.pth", weights_only=True)["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_resume_from_a_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"stem.0.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a seg-train checkpoint"):
        train(TrainConfig(resume=str(path), output=str(tmp_path), train_samples=8, val_samples=2, progress=False))
