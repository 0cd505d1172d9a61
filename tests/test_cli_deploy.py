"""`replknet predict | convert | reparam | export | bench` on the tiny model, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from replknet.cli.main import main

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_tiny"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    """The official tiny fixture, module.-prefixed inside {'model': ...}, converted by the CLI (training form)."""
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not found (tests expect ../shared beside the repository)")
    folder = FIXTURE
    work = tmp_path_factory.mktemp("cli")
    state_dict = torch.load(folder / "state_dict.pth", map_location="cpu", weights_only=True)
    source = work / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in state_dict.items()}}, source)
    return {"source": source, "work": work, "fixture": folder}


def test_convert_and_reparam(converted: dict, capsys) -> None:
    source, work = converted["source"], converted["work"]
    assert main(["convert", "--checkpoint", str(source), "--model", "replknet_tiny", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {work / 'official_replknet'}/model.safetensors" in out  # default output beside the input
    assert "max |diff| 0.000e+00 (relative 0.00e+00)" in out

    fused = work / "fused"
    args = ["reparam", "--checkpoint", str(work / "official_replknet"), "--image-size", "64", "--output", str(fused)]
    assert main(args) == 0
    out = capsys.readouterr().out
    relative = float(out.split("(relative ")[1].split(")")[0])
    assert 0 < relative < 1e-5
    assert json.loads((fused / "config.json").read_text())["model_args"]["small_kernel_merged"] is True

    # the fused folder reproduces the official re-parameterised logits
    import timm

    from replknet.testing import relative_error

    model = timm.create_model(f"local-dir:{fused}", pretrained=True).eval()
    x = torch.load(converted["fixture"] / "input.pt", weights_only=True)
    reference = torch.load(converted["fixture"] / "logits_reparam.pt", weights_only=True)
    with torch.no_grad():
        assert relative_error(model(x), reference) < 1e-5


def test_convert_errors(converted: dict, tmp_path: Path, capsys) -> None:
    source = converted["source"]
    assert (
        main(["convert", "--checkpoint", str(source), "--model", "replknet_tiny_k3", "--output", str(tmp_path / "a")])
        == 2
    )
    err = capsys.readouterr().err
    assert "replknet convert: error:" in err and "small_conv" in err and "mis-shaped keys" in err
    assert (
        main(["convert", "--checkpoint", str(source), "--model", "replknet_huge", "--output", str(tmp_path / "b")]) == 2
    )
    assert "unknown model 'replknet_huge'" in capsys.readouterr().err
    assert main(["convert", "--checkpoint", str(tmp_path / "missing.pth"), "--model", "replknet_tiny"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_predict_json_and_errors(converted: dict, tmp_path: Path, capsys) -> None:
    source = converted["source"]
    images = tmp_path / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(0)
    for name in ("x.png", "y.png", "z.jpg"):
        pixels = (torch.rand(70, 90, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / name)
    output = tmp_path / "predictions.json"
    args = ["predict", str(images), "--model", "replknet_tiny", "--checkpoint", str(source), "--image-size", "64"]
    assert main([*args, "--top-k", "3", "--batch-size", "2", "--json", "-", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main([*args, "--top-k", "3", "--json", str(output), "--no-progress"]) == 0
    assert printed == json.loads(output.read_text())
    capsys.readouterr()
    assert [Path(p["path"]).name for p in printed] == ["x.png", "y.png", "z.jpg"]
    for record in printed:
        probabilities = [s["probability"] for s in record["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
    assert main(args[:2] + ["--model", "replknet_tiny", "--checkpoint", str(source), "--image-size", "64"]) == 0
    assert "1. " in capsys.readouterr().out  # the plain listing

    broken = images / "broken.jpg"
    broken.write_text("this is text")
    assert main(args) == 2
    assert f"cannot read image {broken}" in capsys.readouterr().err
    assert main(["predict", str(images / "x.png"), "--model", "replknet_nope", "--checkpoint", str(source)]) == 2
    assert "unknown model 'replknet_nope'" in capsys.readouterr().err


def test_export_torchscript(converted: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "tiny.pt"
    args = ["export", "--model", "replknet_tiny", "--checkpoint", str(converted["source"]), "--image-size", "64"]
    assert main([*args, "--format", "torchscript", "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert "torch.jit.load vs the eager model at batch 3, 64x64" in out
    assert float(out.split("(relative ")[1].split(")")[0]) < 1e-4
    from replknet.deploy import load_model
    from replknet.testing import relative_error

    loaded = torch.jit.load(str(target))
    x = torch.randn(5, 3, 64, 64)  # another batch size again
    with torch.no_grad():
        assert relative_error(loaded(x), load_model(converted["source"], "replknet_tiny")(x)) < 1e-4
    assert main([*args, "--opset", "13", "--output", str(tmp_path / "old.onnx")]) == 2
    assert "opset 13 is too old" in capsys.readouterr().err


def test_bench_table_and_json(tmp_path: Path, capsys) -> None:
    target = tmp_path / "bench.json"
    args = ["bench", "--models", "replknet_tiny", "replknet_tiny_k3", "--forms", "train", "fused"]
    args += ["--dtypes", "fp32", "--batch-size", "2", "--image-size", "64", "--warmup", "0", "--no-progress"]
    assert (
        main([*args, "--iterations", "1", "--device", "cpu", "--baseline", "replknet_tiny_k3", "--json", str(target)])
        == 0
    )
    out = capsys.readouterr().out
    assert "vs replknet_tiny_k3" in out
    results = json.loads(target.read_text())["results"]
    # 2 models x 2 forms. Fusing the 3x3 model (no small branch) trades each large-kernel BN (2C)
    # for a conv bias (C); the 31x31 model also drops its 5x5 branch (25C + 2C).
    assert len(results) == 4
    params = {(r["model"], r["form"]): r["params"] for r in results}
    from replknet.deploy.bench import build_bench_model
    from replknet.models.layers import ReparamLargeKernelConv

    channels = [
        m.channels for m in build_bench_model("replknet_tiny_k3").modules() if isinstance(m, ReparamLargeKernelConv)
    ]
    assert params[("replknet_tiny_k3", "train")] - params[("replknet_tiny_k3", "fused")] == sum(channels)
    assert params[("replknet_tiny", "train")] - params[("replknet_tiny", "fused")] == 28 * sum(channels)
    assert all(r["images_per_second"] > 0 and r["batch_size"] == 2 and r["gmacs"] > 0 for r in results)
