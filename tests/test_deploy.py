"""replknet.deploy: conversion round-trips against the official fixtures, export checked by onnxruntime /
torch.jit, prediction against a direct forward, and the benchmark's counting and tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import replknet
from replknet.checkpoint import CheckpointError
from replknet.deploy import (
    BenchResult,
    benchmark,
    class_labels,
    convert_checkpoint,
    export_model,
    find_images,
    format_table,
    load_image,
    load_model,
    predict,
    reparameterize_checkpoint,
)
from replknet.deploy.bench import build_bench_model, measure_throughput
from replknet.deploy.loading import is_fused
from replknet.deploy.predict import data_transform
from replknet.models.layers import ReparamLargeKernelConv
from replknet.testing import randomize_bn_stats, relative_error

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_tiny"


# ---------------------------------------------------------------------- official fixture in every layout
@pytest.fixture(scope="module")
def official() -> dict:
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not found (tests expect ../shared beside the repository)")
    folder = FIXTURE
    load = lambda name: torch.load(folder / name, map_location="cpu", weights_only=True)  # noqa: E731
    return {
        "state_dict": load("state_dict.pth"),
        "state_dict_reparam": load("state_dict_reparam.pth"),
        "input": load("input.pt"),
        "logits": load("logits.pt"),
        "logits_reparam": load("logits_reparam.pt"),
    }


def _mmpretrain_layout(state_dict: dict) -> dict:
    """mmpretrain's RepLKNet keys: backbone.*, the final BN at backbone.stages.3.norm, head.fc.*."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out["head.fc." + key[len("head.") :]] = value
        elif key.startswith("norm."):
            out["backbone.stages.3.norm." + key[len("norm.") :]] = value
        else:
            out["backbone." + key] = value
    return {"meta": {"epoch": 300}, "state_dict": out}


LAYOUTS = {
    "plain": lambda sd: dict(sd),
    "model-wrapped": lambda sd: {"model": dict(sd), "epoch": torch.tensor(299)},
    "module-prefixed": lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
    "state_dict-wrapped": lambda sd: {"state_dict": dict(sd)},
    "mmpretrain": _mmpretrain_layout,
}


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_convert_official_layouts_round_trip(layout: str, official: dict, tmp_path: Path) -> None:
    source = tmp_path / "source.pth"
    torch.save(LAYOUTS[layout](official["state_dict"]), source)
    result = convert_checkpoint(source, tmp_path / "out", "replknet_tiny", check_size=96)
    assert not result.fused
    assert result.relative_diff == 0.0  # same weights, same code: bit-identical outputs
    assert sorted(p.name for p in result.output.iterdir()) == ["config.json", "model.safetensors"]
    # timm's own local-dir loader, offline; the official model's logits are reproduced.
    model = timm.create_model(f"local-dir:{result.output}", pretrained=True)
    assert model.num_classes == 10
    assert relative_error(_logits(model, official["input"]), official["logits"]) < 1e-5


def test_convert_reparam_stores_fused_form(official: dict, tmp_path: Path) -> None:
    source = tmp_path / "source.pth"
    torch.save({"model": {"module." + k: v for k, v in official["state_dict"].items()}}, source)
    result = convert_checkpoint(source, tmp_path / "out", "replknet_tiny", reparam=True, check_size=96)
    assert result.fused
    assert 0 < result.relative_diff < 1e-5  # the fusion's rounding, reported
    config = json.loads((result.output / "config.json").read_text())
    assert config["architecture"] == "replknet_tiny"
    assert config["model_args"]["small_kernel_merged"] is True
    model = timm.create_model(f"local-dir:{result.output}", pretrained=True)
    assert is_fused(model)
    assert relative_error(_logits(model, official["input"]), official["logits_reparam"]) < 1e-5


def test_convert_output_loads_with_pretrained_cfg_overlay(official: dict, tmp_path: Path) -> None:
    source = tmp_path / "source.pth"
    torch.save(official["state_dict"], source)
    folder = convert_checkpoint(source, tmp_path / "out", "replknet_tiny", reparam=True, check=False).output
    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(
        "replknet_tiny",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"), num_classes=config["num_classes"]),
        **config["model_args"],
    )
    assert relative_error(_logits(model, official["input"]), official["logits_reparam"]) < 1e-5
    # and through this library's loader, by folder (no --model needed) or by file
    by_folder = load_model(folder)
    by_file = replknet.create_model("replknet_tiny", checkpoint_path=folder / "model.safetensors")
    assert torch.equal(_logits(by_folder, official["input"]), _logits(by_file, official["input"]))


def test_convert_deploy_form_and_ema(official: dict, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy.pth"
    torch.save(official["state_dict_reparam"], deploy)
    folder = convert_checkpoint(deploy, tmp_path / "deploy_out", "replknet_tiny", check=False).output
    model = load_model(folder)
    assert is_fused(model)
    assert relative_error(_logits(model, official["input"]), official["logits_reparam"]) < 1e-5

    # model_ema chosen on request: the EMA entry holds the official weights, the plain entry zeros.
    zeros = {k: torch.zeros_like(v) for k, v in official["state_dict"].items()}
    training = tmp_path / "training.pth"
    torch.save({"model": zeros, "model_ema": official["state_dict"]}, training)
    folder = convert_checkpoint(training, tmp_path / "ema_out", "replknet_tiny", use_ema=True, check=False).output
    assert relative_error(_logits(load_model(folder), official["input"]), official["logits"]) < 1e-5


def test_reparameterize_checkpoint_check(official: dict, tmp_path: Path) -> None:
    source = tmp_path / "train.pth"
    torch.save(official["state_dict"], source)
    result = reparameterize_checkpoint(source, tmp_path / "fused", "replknet_tiny", check=True, check_size=64)
    assert result.fused and result.input_size == (64, 64)
    assert 0 < result.relative_diff < 1e-5
    unchecked = reparameterize_checkpoint(source, tmp_path / "fused2", "replknet_tiny")
    assert unchecked.max_abs_diff is None


def test_checkpoint_that_does_not_fit_names_keys(official: dict, tmp_path: Path) -> None:
    source = tmp_path / "source.pth"
    torch.save(official["state_dict"], source)
    # the 3x3 model has no small_conv branch and 3x3 kernels: missing/unexpected and mis-shaped keys are named
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*small_conv.*mis-shaped keys: .*lkb_origin"):
        convert_checkpoint(source, tmp_path / "out", "replknet_tiny_k3")
    with pytest.raises(ValueError, match="unknown model 'replknet_nonexistent'"):
        convert_checkpoint(source, tmp_path / "out", "replknet_nonexistent")
    folder = convert_checkpoint(source, tmp_path / "ok", "replknet_tiny", check=False).output
    with pytest.raises(ValueError, match="contradicts"):
        load_model(folder, "replknet_31b")
    with pytest.raises(ValueError, match="give --model"):
        load_model(source)


# ---------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def tiny_fused_source() -> torch.nn.Module:
    torch.manual_seed(0)
    model = replknet.create_model("replknet_tiny", num_classes=10).eval()
    return randomize_bn_stats(model, torch.Generator().manual_seed(0))


def test_export_onnx_dynamo_with_grad_checkpointing_set(tiny_fused_source, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tiny_fused_source
    model.set_grad_checkpointing(True)  # the official factories' default, blamed for the official export failure
    try:
        result = export_model(model, tmp_path / "m.onnx", "onnx", input_size=(64, 64), opset=18)
    finally:
        model.set_grad_checkpointing(False)
    assert model.stages[0].grad_checkpointing is False and not is_fused(model)  # the caller's model is untouched
    assert result.check_batch_size == 3  # exported at batch 2, run at 3: the batch dimension is dynamic
    assert result.relative_diff < 1e-4
    import onnx

    graph = onnx.load(str(result.path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    from replknet.deploy import run_exported

    x = torch.randn(1, 3, 64, 64)
    assert relative_error(run_exported(result.path, "onnx", x), _logits(model, x)) < 1e-4


def test_export_onnx_legacy_exporter_and_errors(tiny_fused_source, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    fused = replknet.reparameterize(tiny_fused_source)  # an already-fused model exports as well
    legacy = export_model(fused, tmp_path / "m.onnx", "onnx", input_size=(64, 64), opset=17, dynamo=False)
    assert legacy.relative_diff < 1e-4
    with pytest.raises(ValueError, match="opset 16 is too old"):
        export_model(fused, tmp_path / "old.onnx", "onnx", opset=16)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(fused, tmp_path / "m.tflite", "tflite")
    assert not (tmp_path / "old.onnx").exists()


# ---------------------------------------------------------------------- predict
@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    generator = torch.Generator().manual_seed(1)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        pixels = (torch.rand(80 + 8 * i, 72, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_matches_direct_forward(tiny_fused_source, image_folder: Path) -> None:
    model = tiny_fused_source
    predictions = predict(model, [image_folder], top_k=3, batch_size=2, image_size=64)
    assert [Path(p.path).name for p in predictions] == ["a.png", "b.jpg", "c.png"]  # folders recursive, sorted
    transform = data_transform(model, 64)
    for prediction in predictions:
        x = transform(Image.open(prediction.path).convert("RGB"))
        assert x.shape == (3, 64, 64)
        probabilities = _logits(model, x[None]).softmax(-1)[0]
        top_p, top_i = probabilities.topk(3)
        assert [s.index for s in prediction.top] == top_i.tolist()
        assert [s.probability for s in prediction.top] == pytest.approx(top_p.tolist(), abs=1e-6)
        assert all(s.label is None for s in prediction.top)  # 10 unnamed classes


def test_predict_imagenet_labels_and_errors(image_folder: Path, tmp_path: Path) -> None:
    model = replknet.create_model("replknet_tiny").eval()  # 1000 classes: timm's bundled ImageNet-1k metadata
    labels = class_labels(model)
    assert len(labels) == 1000 and labels[0] == "tench, Tinca tinca" and labels[281] == "tabby, tabby cat"
    (prediction,) = predict(model, [image_folder / "a.png"], top_k=2, image_size=64)
    assert [s.label for s in prediction.top] == [labels[s.index] for s in prediction.top]

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=f"cannot read image {broken}"):
        load_image(broken)
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        predict(model, [broken], image_size=64)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        find_images([tmp_path / "missing.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        find_images([empty])


# ---------------------------------------------------------------------- bench
def test_bench_forms_counts_and_throughput() -> None:
    train = build_bench_model("replknet_tiny", "train")
    fused = build_bench_model("replknet_tiny", "fused")
    deep = build_bench_model("replknet_tiny", "deep")
    # fusion removes each small 5x5 conv + BN and the large kernel's BN affine, and adds the fused bias:
    # per large-kernel layer of C channels: 25C + 2C + 2C removed, C added.
    channels = [m.channels for m in train.modules() if isinstance(m, ReparamLargeKernelConv)]
    assert replknet.count_params(train) - replknet.count_params(fused) == sum(28 * c for c in channels)
    assert is_fused(fused) and is_fused(deep)
    assert replknet.count_params(deep) < replknet.count_params(fused)
    assert build_bench_model("resnet18", "fused") is None  # peers have no fused form
    # a peer without a fused form is measured once, as built, even when only fused forms are asked for
    rows = benchmark(["replknet_tiny", "resnet18"], ["fused"], ["fp32"], 1, 64, warmup=0, iterations=1)
    assert [(r.model, r.form) for r in rows] == [("replknet_tiny", "fused"), ("resnet18", "-")]
    assert rows[1].params == replknet.count_params(timm.create_model("resnet18"))
    speed, ms = measure_throughput(deep, batch_size=2, image_size=64, warmup=1, iterations=2, dtype="bf16")
    assert speed > 0 and ms > 0 and speed == pytest.approx(2 * 1000 / ms)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        measure_throughput(deep, dtype="int8")


def test_bench_table_ratios() -> None:
    def row(model: str, dtype: str, speed: float) -> BenchResult:
        return BenchResult(model, "train", dtype, "cpu", 8, 224, 1_000_000, 1.5, speed, 8000 / speed, 2)

    results = [
        row("base", "fp32", 10.0),
        row("ours", "fp32", 25.0),
        row("base", "bf16", 40.0),
        row("ours", "bf16", 20.0),
    ]
    lines = format_table(results, baseline="base").splitlines()
    assert "vs base" in lines[0]
    assert lines[3].endswith("2.50x") and lines[5].endswith("0.50x") and lines[2].endswith("1.00x")
    assert "vs" not in format_table(results, baseline="absent").splitlines()[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_and_export_from_cuda(tmp_path: Path) -> None:
    model = build_bench_model("replknet_tiny", "fused")
    speed, _ = measure_throughput(
        model, batch_size=4, image_size=64, warmup=1, iterations=2, device="cuda", dtype="bf16"
    )
    assert speed > 0
    result = export_model(model.cuda(), tmp_path / "m.pt", "torchscript", input_size=(64, 64))
    assert result.relative_diff < 1e-4  # exported from a float32 CPU copy, checked against the unfused model
