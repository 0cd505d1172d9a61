"""Training engine: loss falls, exact resume, NaN stop, presets, lr scaling, official layer-decay groups, eval."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from safetensors.torch import load_file

from replknet.train import (
    PRESETS,
    NonFiniteLossError,
    TrainConfig,
    accumulation_steps,
    build_optimizer,
    build_scheduler,
    evaluate,
    get_preset,
    replknet_layer_id,
    scaled_lr,
    train,
)
from replknet.train.data import SyntheticBatches

# A run small enough for a test: the tiny RepLKNet at its smallest input, a few batches per epoch.
SMALL = dict(
    model="replknet_tiny",
    image_size=32,
    synthetic_train_size=64,
    synthetic_val_size=40,
    batch_size=16,
    recipe_batch=16,
    epochs=2,
    warmup_epochs=0.25,
    log_every=1,
)


def _config(tmp_path, name: str, **changes) -> TrainConfig:
    return get_preset("demo", **{**SMALL, "output": str(tmp_path / name), **changes})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # CI runs two test processes on two cores: one intra-op thread each avoids oversubscription.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, one_thread):
    """Six short epochs on the same 32 images: the training loss must fall far (the model can fit them)."""
    out = tmp_path_factory.mktemp("short")
    config = get_preset("demo", **{**SMALL, "synthetic_train_size": 32, "epochs": 6, "output": str(out / "run")})
    return train(config, progress=False)


def test_short_run_loss_falls_and_fuses(short_run):
    losses = [record["train_loss"] for record in short_run.history]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.4, losses
    # The fused model scores exactly what the trained model scores, and its logits agree.
    assert short_run.val_fused["top1"] == short_run.val["top1"]
    assert short_run.val_fused["top5"] == short_run.val["top5"]
    assert short_run.fused_max_abs_diff < 1e-4
    assert short_run.params_fused < short_run.params
    files = short_run.files
    trained, fused = load_file(files["model"]), load_file(files["model_fused"])
    assert any("small_conv" in k for k in trained) and not any("small_conv" in k for k in fused)
    assert any("lkb_reparam" in k for k in fused)
    lines = (short_run.output_dir / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in line for line in lines) == 6 and any('"kind": "step"' in line for line in lines)
    assert 0.0 <= short_run.shape_bias["shape_bias"] <= 1.0


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_resume_is_exact(tmp_path):
    # Mixup/CutMix (numpy RNG), drop path (torch RNG), EMA and the lr schedule all cross the resume point.
    extra = dict(mixup=0.8, cutmix=1.0, drop_path=0.1, ema_decay=0.9, fuse=False)
    straight = _config(tmp_path, "straight", **extra)
    train(straight, progress=False)
    split = _config(tmp_path, "split", **extra)
    first = train(split, progress=False, stop_after_epochs=1)
    assert first.epochs_completed == 1 and not (tmp_path / "split" / "model.safetensors").exists()
    resumed = train(split, resume=tmp_path / "split", progress=False)
    assert resumed.epochs_completed == 2 and resumed.num_updates == 8
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "split" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs after resume"
    state_a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    state_b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert state_a["step"] == state_b["step"] == 8 and state_b["epoch"] == 2
    for group_a, group_b in zip(state_a["optimizer"]["state"].values(), state_b["optimizer"]["state"].values()):
        assert torch.equal(group_a["exp_avg"], group_b["exp_avg"])


def test_resume_rejects_other_settings(tmp_path):
    config = _config(tmp_path, "run", epochs=2, fuse=False)
    train(config, progress=False, stop_after_epochs=1)
    with pytest.raises(ValueError, match="different settings.*batch_size"):
        train(config.replace(batch_size=8), resume=tmp_path / "run", progress=False)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        train(config, resume=tmp_path / "missing", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    config = _config(tmp_path, "nan", epochs=2)
    checkpoint = tmp_path / "nan" / "checkpoint.pt"
    seen = {}
    original = SyntheticBatches.__iter__

    def poisoned(self):
        for x, y in original(self):
            if self.train and self.epoch == 1:
                seen.setdefault("before", hashlib.sha256(checkpoint.read_bytes()).hexdigest())
                x = x * float("nan")
            yield x, y

    monkeypatch.setattr(SyntheticBatches, "__iter__", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2.*last good checkpoint is .*epoch 1"):
        train(config, progress=False)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == seen["before"]
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
    )
    assert not (tmp_path / "nan" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------- recipes
def test_in1k_preset_is_the_paper_recipe():
    c = PRESETS["in1k_31b"]
    assert (c.model, c.lr, c.recipe_batch, c.epochs, c.warmup_epochs, c.min_lr) == (
        "replknet_31b",
        4e-3,
        2048,
        300,
        10,
        1e-6,
    )
    assert (c.weight_decay, c.drop_path, c.opt, c.opt_eps) == (0.05, 0.5, "adamw", 1e-8)
    assert (c.auto_augment, c.mixup, c.cutmix, c.smoothing, c.reprob, c.ema_decay) == (
        "rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1, 0.25, 0.9999)  # fmt: skip
    assert c.layer_decay is None and c.image_size == 224
    ft = PRESETS["in1k_384_ft"]
    assert (ft.image_size, ft.lr, ft.recipe_batch, ft.drop_path, ft.weight_decay, ft.layer_decay) == (
        384, 4e-4, 1024, 0.8, 1e-8, 0.7)  # fmt: skip
    assert ft.mixup == 0 and ft.cutmix == 0 and ft.epochs == 30 and ft.warmup_epochs == 1
    pre = PRESETS["in22k_31b"]
    assert (pre.num_classes, pre.recipe_batch, pre.lr, pre.drop_path, pre.epochs, pre.warmup_epochs) == (
        21841, 4096, 4e-3, 0.1, 90, 5)  # fmt: skip
    assert PRESETS["in22k_in1k_ft"].layer_decay == 0.7 and PRESETS["in22k_in1k_384_ft"].min_lr == 3e-4
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("in2k")


def test_lr_scaling_and_accumulation():
    c = PRESETS["in1k_31b"]  # batch 64 per GPU, recipe 2048
    assert accumulation_steps(c, world_size=8) == 4 and scaled_lr(c, 8, 4) == pytest.approx(4e-3)
    assert accumulation_steps(c, world_size=2) == 16 and scaled_lr(c, 2, 16) == pytest.approx(4e-3)
    no_accum = c.replace(accum_steps=1)
    assert scaled_lr(no_accum, 8, accumulation_steps(no_accum, 8)) == pytest.approx(4e-3 * 512 / 2048)
    assert scaled_lr(c.replace(scale_lr=False), 1, 1) == 4e-3


def test_bad_options():
    for changes, message in [
        (dict(epochs=0), "epochs"),
        (dict(amp="fp8"), "amp"),
        (dict(layer_decay=1.5), "layer_decay"),
        (dict(warmup_epochs=7), "warmup_epochs"),
        (dict(lr=-1.0), "lr"),
    ]:
        with pytest.raises(ValueError, match=message):
            get_preset("demo", **changes)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig().replace(learning_rate=1.0)


# ---------------------------------------------------------------------------------------------- layer decay
OFFICIAL_GROUPS = {  # name -> group in the official get_num_layer_for_replknet (RepLKNet-31B, layers 2/2/18/2)
    "stem.0.conv.weight": 0,
    "stem.3.bn.bias": 0,
    "stages.0.blocks.0.pw1.conv.weight": 1,
    "stages.0.blocks.3.pw2.bn.weight": 1,
    "transitions.0.0.conv.weight": 1,
    "stages.1.blocks.2.large_kernel.lkb_origin.conv.weight": 2,
    "transitions.1.1.bn.weight": 2,
    "stages.2.blocks.0.prelkb_bn.weight": 3,
    "stages.2.blocks.3.pw1.conv.weight": 3,
    "stages.2.blocks.4.pw1.conv.weight": 4,
    "stages.2.blocks.17.preffn_bn.bias": 7,
    "stages.2.blocks.35.pw2.conv.weight": 11,
    "transitions.2.0.conv.weight": 11,
    "stages.3.blocks.0.large_kernel.small_conv.conv.weight": 12,
    "stages.3.blocks.3.pw2.bn.bias": 12,
    "norm.weight": 13,
    "head.weight": 13,
    "head.bias": 13,
}


def test_layer_ids_match_the_official_14_groups():
    from replknet.models import RepLKNet

    for name, group in OFFICIAL_GROUPS.items():
        assert replknet_layer_id(name) == group, name
    with torch.device("meta"):
        model = RepLKNet(num_classes=1000)  # RepLKNet-31B shape, no memory
    ids = {replknet_layer_id(name) for name, _ in model.named_parameters()}
    assert ids == set(range(14))
    # The official rule for 31B's stage 2: 3 + block // 4, for every block entry.
    for block in range(36):
        assert replknet_layer_id(f"stages.2.blocks.{block}.pw1.conv.weight") == 3 + block // 4


def test_optimizer_layer_decay_and_no_decay_on_1d():
    import replknet

    model = replknet.create_model("replknet_tiny", num_classes=10)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            assert group["lr_scale"] == pytest.approx(0.7 ** (13 - replknet_layer_id(name, (1, 1, 2, 1))))
            assert group["weight_decay"] == (0.0 if param.ndim == 1 else 0.05), name
            seen += 1
    assert seen == len(names)
    scheduler = build_scheduler(optimizer, total_updates=10, warmup_updates=2, min_lr=1e-6)
    scheduler.step_update(0)
    head = next(g for g in optimizer.param_groups if g["lr_scale"] == 1.0)
    assert head["lr"] == 0.0  # warm-up starts from 0
    scheduler.step_update(2)
    assert head["lr"] == pytest.approx(1e-3)  # end of the linear warm-up
    stem = min(optimizer.param_groups, key=lambda g: g["lr_scale"])
    assert stem["lr"] == pytest.approx(1e-3 * 0.7**13)
    scheduler.step_update(6)  # half way through the cosine
    assert head["lr"] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    scheduler.step_update(10)
    assert head["lr"] == pytest.approx(1e-6)


# ---------------------------------------------------------------------------------------------- evaluation
class _Fixed(torch.nn.Module):
    """Returns pre-set logits batch by batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = list(logits)

    def forward(self, x):
        return self.logits.pop(0)


def test_evaluate_counts_top1_top5_exactly():
    logits = torch.arange(6.0).repeat(4, 1)  # every row ranks 5 > 4 > 3 > 2 > 1 > 0
    targets = torch.tensor([5, 1, 0, 3])  # top-1 hit: 1; top-5 hits: 5, 1, 3
    loader = [(torch.zeros(2, 3, 8, 8), targets[:2]), (torch.zeros(2, 3, 8, 8), targets[2:])]
    metrics = evaluate(_Fixed([logits[:2], logits[2:]]), loader)
    assert metrics["top1"] == 25.0 and metrics["top5"] == 75.0 and metrics["images"] == 4
    expected = torch.nn.functional.cross_entropy(logits.double(), targets).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)


def test_official_eval_transform():
    from PIL import Image

    from replknet.train import eval_transform

    image = Image.new("RGB", (300, 200))
    small = eval_transform(224)(image)
    assert small.shape == (3, 224, 224)
    text = repr(eval_transform(224))
    assert "size=256" in text and "bicubic" in text.lower() and "CenterCrop" in text  # int(224 / 0.875) = 256
    # At 384 the image is warped to 384x384, not cropped: a stripe at the far left edge survives.
    wide = Image.new("RGB", (768, 384))
    wide.paste((255, 255, 255), (0, 0, 60, 384))
    out = eval_transform(384, mean=(0, 0, 0), std=(1, 1, 1))(wide)
    assert out.shape == (3, 384, 384) and out[:, :, :20].mean() > 0.9 and out[:, :, 40:].mean() < 0.05
    cropped = eval_transform(224, mean=(0, 0, 0), std=(1, 1, 1))(wide)
    assert cropped.mean() < 0.01  # the centre crop of a 2:1 image loses the left edge


# ---------------------------------------------------------------------------------------------- eval + bad inputs
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The synthetic shapes written as a 20-image ImageFolder val split (and a 20-image train split)."""
    from replknet.data.synthetic import write_image_folder

    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, image_size=32, split_sizes={"train": 20, "val": 20})
    return root


def _manual_top1(model, root, image_size: int) -> float:
    """Top-1 by hand: every file through the official eval transform, one at a time."""
    from torchvision.datasets import ImageFolder

    from replknet.train import eval_transform

    cfg = model.pretrained_cfg
    transform = eval_transform(image_size, cfg["mean"], cfg["std"])
    folder = ImageFolder(str(root / "val"))
    model.eval()
    with torch.no_grad():
        hits = sum(int(model(transform(folder.loader(p))[None]).argmax()) == t for p, t in folder.samples)
    return 100.0 * hits / len(folder.samples)


def test_eval_cli_our_checkpoint(short_run, tiny_folder, capsys):
    import json

    import replknet
    from replknet.cli.main import main

    code = main(["eval", "--checkpoint", short_run.files["model_fused"], "--data", str(tiny_folder), "--image-size",
                 "32", "--workers", "0", "--no-progress", "--json", "-"])  # fmt: skip
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["model"] == "replknet_tiny" and metrics["images"] == 20  # model name read from config.json
    trained = replknet.create_model("replknet_tiny", checkpoint_path=short_run.files["model"])
    assert metrics["top1"] == pytest.approx(_manual_top1(trained, tiny_folder, 32))


def test_eval_official_checkpoint(shared_path, tiny_folder):
    from replknet.train import evaluate_checkpoint

    checkpoint = shared_path("fixtures", "official_tiny", "state_dict.pth")  # the official code's own weights
    metrics = evaluate_checkpoint("replknet_tiny", checkpoint, tiny_folder, image_size=32, workers=0, progress=False)
    import replknet

    official = replknet.create_model("replknet_tiny", checkpoint_path=checkpoint)
    assert metrics["images"] == 20 and metrics["top1"] == pytest.approx(_manual_top1(official, tiny_folder, 32))


def test_bad_data_is_reported_by_path(tmp_path, tiny_folder):
    import shutil

    from replknet.train import DataFileError, evaluate_checkpoint

    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    bad = root / "val" / "disk" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataFileError, match="broken.png"):
        evaluate_checkpoint("replknet_tiny", None, root, image_size=32, workers=0, progress=False, num_classes=10)
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        evaluate_checkpoint("replknet_tiny", None, root, split="test", image_size=32, workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate_checkpoint("replknet_tiny", tmp_path / "none.safetensors", root, progress=False)
    config = get_preset("demo", **{**SMALL, "data": str(root), "output": str(tmp_path / "run"), "workers": 0})
    with pytest.raises(DataFileError, match="broken.png"):
        train(config, progress=False)  # the validation after epoch 1 meets the broken file
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        train(config.replace(data=str(tmp_path / "nowhere")), progress=False)


def test_train_cli_config_and_errors(capsys):
    import json

    from replknet.cli.main import main

    assert main(["train", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["model"] == "replknet_tiny" and config["data"] == "synthetic" and config["fuse"] is True
    assert main(["train", "--preset", "in1k_31b", "--epochs", "30", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["epochs"] == 30 and config["lr"] == 4e-3 and config["recipe_batch"] == 2048
    with pytest.raises(SystemExit) as refused:  # refused by argparse, before anything runs
        main(["train", "--epochs", "0"])
    assert refused.value.code == 2 and "argument --epochs: must be at least 1, got 0" in capsys.readouterr().err
