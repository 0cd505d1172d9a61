"""One run, every command: train once, then every command reads the run folder alone and reproduces its numbers.

The CLI runs in-process (``replknet.cli.main.main``). The run is tiny (a few hundred 32 px images, four epochs): the
point is that each command finds the model, its input size, preprocessing, classes and data in the folder, so the
numbers it prints are the ones the run recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import replknet
from replknet.cli.main import main
from replknet.data.synthetic import SHAPE_NAMES
from replknet.deploy import load_model

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("workflow") / "run"
    argv = ["train", "--image-size", str(IMAGE_SIZE), "--train-size", "384", "--val-size", "100", "--epochs", "4",
            "--batch-size", "32", "--recipe-batch", "32", "--output", str(folder), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return folder


@pytest.fixture(scope="module")
def val_folder(run) -> Path:
    """The run's validation images written as PNG files (the same renders: same size, seed and count)."""
    root = run.parent / "data"
    assert main(["data", "synth", "--output", str(root), "--image-size", str(IMAGE_SIZE), "--train-size", "0",
                 "--val-size", "100", "--cue-conflict-size", "0"]) == 0  # fmt: skip
    return root


def _json(argv: list[str], capsys) -> dict | list:
    capsys.readouterr()
    assert main([*argv, "--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_run_folder_is_a_timm_model_card(run):
    import timm

    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "replknet_tiny" and config["task"] == "classification"
    assert config["num_classes"] == 10 and config["label_names"] == list(SHAPE_NAMES)
    cfg = config["pretrained_cfg"]
    # The synthetic images are rendered at the input size: no crop, the model's own mean/std.
    assert cfg["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE] and cfg["crop_pct"] == 1.0
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["interpolation"] == "bicubic"
    assert config["training"]["data"] == "synthetic" and config["training"]["evaluation"]["batch_size"] == 64
    for name in ("model.safetensors", "model_fused.safetensors", "checkpoint.pt", "summary.json"):
        assert (run / name).is_file(), name

    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    ours = load_model(run)
    assert ours.pretrained_cfg["input_size"] == (3, IMAGE_SIZE, IMAGE_SIZE)
    by_timm = timm.create_model(f"local-dir:{run}", pretrained=True)
    assert by_timm.pretrained_cfg["label_names"] == list(SHAPE_NAMES)
    # timm's own route to a weights file; the overlay names the head width, else timm drops the head's weights
    overlay = dict(file=str(run / "model.safetensors"), num_classes=10)
    by_overlay = timm.create_model("replknet_tiny", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10)
    by_file = replknet.create_model("replknet_tiny", checkpoint_path=run / "model.safetensors")
    for other in (by_timm, by_overlay, by_file):
        assert torch.equal(_logits(other, x), _logits(ours, x))
    fused = load_model(run / "model_fused.safetensors")  # a weights file inside the run: the fused form
    assert (_logits(fused, x) - _logits(ours, x)).abs().max() < 1e-4


def test_eval_prints_what_the_run_recorded(run, val_folder, capsys):
    summary = json.loads((run / "summary.json").read_text())
    for weights, key in ((run, "val"), (run / "model_fused.safetensors", "val_fused")):
        metrics = _json(["eval", "--checkpoint", str(weights), "--no-progress"], capsys)
        assert metrics["image_size"] == IMAGE_SIZE and metrics["images"] == 100 and metrics["data"] == "synthetic"
        assert metrics["top1"] == summary[key]["top1"] and metrics["top5"] == summary[key]["top5"]
        assert metrics["loss"] == pytest.approx(summary[key]["loss"], abs=1e-6)
        assert metrics["recorded_top1"] == summary[key]["top1"]
    # The same images as PNG files: the run's preprocessing (32 px, no crop), not a 224 px default.
    on_files = _json(
        ["eval", "--checkpoint", str(run), "--data", str(val_folder), "--workers", "0", "--no-progress"], capsys
    )
    assert on_files["image_size"] == IMAGE_SIZE and on_files["images"] == 100
    assert on_files["top1"] == summary["val"]["top1"]
    assert on_files["loss"] == pytest.approx(summary["val"]["loss"], abs=1e-4)
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 0
    assert f"top-1       {summary['val']['top1']:.2f}%  (the run recorded {summary['val']['top1']:.2f}%)" in (
        capsys.readouterr().out
    )


def test_predict_names_the_run_classes(run, val_folder, capsys):
    from replknet.data.images import read_image
    from replknet.deploy.predict import data_transform

    folder = val_folder / "val" / "star"
    records = _json(["predict", str(folder), "--checkpoint", str(run), "--top-k", "10", "--no-progress"], capsys)
    files = sorted(folder.glob("*.png"))
    assert [Path(r["path"]).name for r in records] == [f.name for f in files]
    model = load_model(run)
    transform = data_transform(model)
    x = torch.stack([transform(read_image(f)) for f in files])
    probabilities = _logits(model, x).softmax(dim=-1)
    for record, row in zip(records, probabilities):
        assert {s["label"] for s in record["top"]} == set(SHAPE_NAMES)  # names, not "class 6"
        for score in record["top"]:
            assert score["label"] == SHAPE_NAMES[score["index"]]
            assert score["probability"] == pytest.approx(row[score["index"]].item(), abs=1e-5)
    # Top-1 over every file of the folder = the run's recorded top-1 (the images are the validation split).
    records = _json(["predict", str(val_folder / "val"), "--checkpoint", str(run), "--top-k", "1", "--no-progress"],
                    capsys)  # fmt: skip
    hits = sum(Path(r["path"]).parent.name == r["top"][0]["label"] for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert 100.0 * hits / len(records) == summary["val"]["top1"]


def test_export_checks_at_the_run_size(run, capsys):
    target = run.parent / "tiny.pt"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"at batch 3, {IMAGE_SIZE}x{IMAGE_SIZE}: max |diff|" in out
    wide = run.parent / "wide.pt"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--output", str(wide),
                 "--image-size", "32", "64"]) == 0  # fmt: skip
    assert "at batch 3, 32x64: max |diff|" in capsys.readouterr().out
    x = torch.randn(2, 3, 32, 64)
    exported = torch.jit.load(str(wide))
    assert (_logits(exported, x) - _logits(load_model(run), x)).abs().max() < 1e-4


def test_convert_and_reparam_keep_the_run_card(run, capsys):
    converted, fused = run.parent / "converted", run.parent / "fused"
    assert main(["convert", "--checkpoint", str(run), "--output", str(converted)]) == 0
    assert f"random {IMAGE_SIZE}x{IMAGE_SIZE} batch: max |diff| 0.000e+00" in capsys.readouterr().out
    assert main(["reparam", "--checkpoint", str(run), "--output", str(fused)]) == 0
    assert f"random {IMAGE_SIZE}x{IMAGE_SIZE} batch" in capsys.readouterr().out
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    for folder in (converted, fused):
        config = json.loads((folder / "config.json").read_text())
        assert config["label_names"] == list(SHAPE_NAMES)
        assert config["pretrained_cfg"]["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE]
        assert (_logits(load_model(folder), x) - _logits(load_model(run), x)).abs().max() < 1e-4
    assert json.loads((fused / "config.json").read_text())["model_args"]["small_kernel_merged"] is True


def test_convert_a_custom_architecture(tmp_path, capsys):
    import timm

    custom = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], large_kernel_sizes=[13, 11, 9, 7])
    model = replknet.create_model("replknet_tiny", num_classes=5, **custom)
    source = tmp_path / "custom.pth"
    torch.save(model.state_dict(), source)
    args = [f"{key}={json.dumps(value)}" for key, value in custom.items()]
    output = tmp_path / "out"
    assert main(["convert", "--checkpoint", str(source), "--model", "replknet_tiny", "--output", str(output),
                 "--model-args", *args]) == 0  # fmt: skip
    assert "max |diff| 0.000e+00" in capsys.readouterr().out
    assert json.loads((output / "config.json").read_text())["model_args"]["layers"] == [1, 1, 1, 1]
    x = torch.randn(1, 3, 64, 64)
    for loaded in (load_model(output), timm.create_model(f"local-dir:{output}", pretrained=True)):
        assert torch.equal(_logits(loaded, x), _logits(model, x))


def test_erf_shape_bias_and_bench_from_the_run(run, val_folder, capsys):
    out = run.parent / "erf"
    argv = ["erf", "--checkpoint", str(run), "--images", str(val_folder / "val"), "--num-images", "2",
            "--image-size", "64", "--output", str(out), "--no-plots", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "area_ratios.json").read_text())
    (entry,) = summary["models"].values()
    assert entry["model"] == "replknet_tiny" and entry["weights"] == "checkpoint" and entry["num_images"] == 2
    # The run's weights, not a random init: the map differs from that of a freshly built model.
    (label,) = summary["models"]
    assert label == "replknet_tiny@run"

    recorded = json.loads((run / "summary.json").read_text())["shape_bias"]
    report = _json(["shape-bias", "--checkpoint", str(run / "model_fused.safetensors")], capsys)
    (bias,) = report["models"].values()
    assert bias["shape_bias"] == recorded["shape_bias"] and bias["shape_hits"] == recorded["shape_hits"]
    assert bias["recorded_shape_bias"] == recorded["shape_bias"]

    results = _json(["bench", "--checkpoint", str(run), "--budget", "0.05", "--no-progress"], capsys)["results"]
    assert [(r["model"], r["form"], r["image_size"]) for r in results] == [
        ("replknet_tiny", "train", IMAGE_SIZE),
        ("replknet_tiny", "fused", IMAGE_SIZE),
    ]


def test_seg_train_then_seg_eval_from_the_folder(tmp_path, capsys):
    run = tmp_path / "seg"
    argv = ["seg-train", "--backbone", "replknet_tiny", "--iterations", "12", "--batch-size", "4", "--warmup-iters",
            "2", "--image-size", "64", "--train-samples", "24", "--val-samples", "8", "--channels", "16",
            "--aux-channels", "8", "--seed", "3", "--save-png", "0", "--output", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "segmentation" and config["segmentor"]["backbone"] == "replknet_tiny"
    assert config["label_names"] == ["background", "disk", "square", "triangle"]
    recorded = json.loads((run / "metrics.json").read_text())["final"]
    # seg-eval needs nothing but the folder: the size, count and seed of the validation images come from the run.
    metrics = _json(["seg-eval", "--checkpoint", str(run), "--no-progress"], capsys)
    assert metrics["mIoU"] == recorded["mIoU"] and metrics["aAcc"] == recorded["aAcc"]
    assert metrics["recorded_mIoU"] == recorded["mIoU"]
    # the old route, last.pth alone, still reads the run's settings
    assert (
        _json(["seg-eval", "--checkpoint", str(run / "last.pth"), "--no-progress"], capsys)["mIoU"] == recorded["mIoU"]
    )


def test_a_run_folder_of_the_old_format_is_read(run, tmp_path, capsys):
    """Before the model card, config.json held the training options only (``channels_last`` then a flag)."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run, old)
    options = dict(json.loads((run / "summary.json").read_text())["config"])
    options["channels_last"] = options.pop("memory_format") == "channels_last"
    (old / "config.json").write_text(json.dumps(options, indent=2))
    summary = json.loads((run / "summary.json").read_text())
    metrics = _json(["eval", "--checkpoint", str(old), "--no-progress"], capsys)
    assert metrics["image_size"] == IMAGE_SIZE and metrics["top1"] == summary["val"]["top1"]
    assert metrics["loss"] == pytest.approx(summary["val"]["loss"], abs=1e-6)
    assert load_model(old).pretrained_cfg["label_names"] == list(SHAPE_NAMES)
    (old / "config.json").write_text(json.dumps({"something": "else"}))
    assert main(["eval", "--checkpoint", str(old)]) == 2
    assert "names no model" in capsys.readouterr().err
