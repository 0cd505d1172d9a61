"""Bad input to every command: one line naming the problem (no traceback), before any work, and nothing written.

Values out of range are refused by argparse (exit status 2, its usage line and one error line); everything else by
the command (status 2, one ``replknet COMMAND: error: ...`` line). Each case snapshots the working folder before and
after: a refused command leaves no trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import replknet
from replknet.cli.main import main
from replknet.deploy import save_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small model folder (what convert writes; a run folder without the training): 3 named classes at 32 px."""
    folder = tmp_path_factory.mktemp("errors") / "model"
    model = replknet.create_model(
        "replknet_tiny_k3", num_classes=3, pretrained_cfg_overlay=dict(input_size=(3, 32, 32), crop_pct=1.0)
    )
    model.pretrained_cfg["label_names"] = ["a", "b", "c"]
    return save_model_folder(model.eval(), folder)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in root.rglob("*")}


def _image(path: Path) -> Path:
    from PIL import Image

    pixels = (torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def refused(argv: list[str], expected: str, root: Path, capsys) -> str:
    """Run ``argv`` in ``root``; it must fail with one error line holding ``expected`` and change nothing there."""
    capsys.readouterr()
    before = _snapshot(root)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == 2, (argv, err)
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith(f"replknet {argv[0]}: error: "), err
    assert expected in errors[0], (expected, errors[0])
    assert _snapshot(root) == before, f"{argv} left a trace"
    return errors[0]


def test_numbers_are_checked_by_argparse(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["eval", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["eval", "--workers", "-1"], "argument --workers: must be at least 0, got -1"),
        (["predict", "--top-k", "0"], "argument --top-k: must be at least 1"),
        (["predict", "--threads", "0"], "argument --threads: must be at least 1"),
        (["export", "--image-size", "32", "32", "32"], "--image-size takes one size or two (H W), got 3 values"),
        (["export", "--image-size", "x"], "argument --image-size: not an integer: 'x'"),
        (["bench", "--budget", "0"], "argument --budget: must be above 0"),
        (["bench", "--batch-size", "nan"], "argument --batch-size: not an integer"),
        (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["train", "--lr", "-1"], "argument --lr: must be above 0"),
        (["train", "--drop-path", "1.5"], "argument --drop-path: must be in [0, 1)"),
        (["seg-train", "--iterations", "0"], "argument --iterations: must be at least 1"),
        (["seg-eval", "--checkpoint", "x", "--crop", "0"], "argument --crop: must be at least 1"),
        (["erf", "--num-images", "0"], "argument --num-images: must be at least 1"),
        (["check", "--image-size", "0"], "argument --image-size: must be at least 1"),
        (["eval", "--device", "gpu"], "argument --device: not a device: 'gpu'"),
        (["data", "synth", "--output", "d", "--image-size", "0"], "argument --image-size: must be at least 1"),
    ]
    for argv, expected in cases:
        if argv[0] == "data":  # the subcommand's own parser names itself
            capsys.readouterr()
            with pytest.raises(SystemExit):
                main(argv)
            assert expected in capsys.readouterr().err
            continue
        refused(argv, expected, tmp_path, capsys)


def test_missing_and_unknown_inputs_are_named(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "does_not_exist")
    for command in ("eval", "export", "convert", "reparam", "bench", "seg-eval"):
        refused([command, "--checkpoint", missing], f"checkpoint not found: {missing}", tmp_path, capsys)
    refused(["predict", "--checkpoint", missing], f"checkpoint not found: {missing}", tmp_path, capsys)
    refused(["erf", "--checkpoint", missing], f"checkpoint not found: {missing}", tmp_path, capsys)
    refused(["shape-bias", "--checkpoint", missing], f"checkpoint not found: {missing}", tmp_path, capsys)
    refused(["eval"], "give --checkpoint RUN", tmp_path, capsys)
    refused(["export"], "give --checkpoint RUN", tmp_path, capsys)
    refused(["eval", "--model", "replknet_tinyy"], "did you mean 'replknet_tiny'", tmp_path, capsys)
    refused(["erf", "replknet_tinyy"], "did you mean 'replknet_tiny'", tmp_path, capsys)
    refused(["export", "--model", "replknet_tinyy"], "did you mean 'replknet_tiny'", tmp_path, capsys)
    refused(["check", "--model", "replknet_3lb"], "unknown model 'replknet_3lb'", tmp_path, capsys)
    refused(
        ["train", "--model", "replknet_tiny", "--head-init-scale", "0.001", "--output", str(tmp_path / "run")],
        "head_init_scale is not a constructor option of replknet_tiny",
        tmp_path,
        capsys,
    )
    bare = tmp_path / "bare.pth"
    torch.save(replknet.create_model("replknet_tiny_k3").state_dict(), bare)
    refused(["reparam", "--checkpoint", str(bare), "--output", "x"], "give --model", tmp_path, capsys)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not safetensors")
    refused(
        ["eval", "--checkpoint", str(corrupt), "--model", "replknet_tiny"], "cannot read safetensors", tmp_path, capsys
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["predict", "--checkpoint", str(empty)], f"{empty} is a folder without config.json", tmp_path, capsys)
    refused(["seg-eval", "--checkpoint", str(model_dir)], "is not a seg-train run", tmp_path, capsys)
    refused(["convert", "--checkpoint", str(model_dir), "--model-args", "layers"], "KEY=VALUE", tmp_path, capsys)
    refused(["convert", "--checkpoint", str(model_dir), "--model", "replknet_31b"], "contradicts", tmp_path, capsys)
    refused(["bench", "--checkpoint", str(model_dir), "--models", "resnet18"], "not both", tmp_path, capsys)
    refused(["shape-bias", "--checkpoint", str(model_dir)], "not a model of the built-in shapes", tmp_path, capsys)
    if not torch.cuda.is_available():
        refused(["eval", "--checkpoint", str(model_dir), "--device", "cuda"], "CUDA is not available", tmp_path, capsys)
    segmentation = tmp_path / "seg"
    segmentation.mkdir()
    (segmentation / "config.json").write_text(json.dumps({"task": "segmentation", "segmentor": {"num_classes": 4}}))
    (segmentation / "model.safetensors").write_bytes(b"")
    refused(["eval", "--checkpoint", str(segmentation)], "is a segmentation run", tmp_path, capsys)


def test_outputs_are_checked_before_any_work(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    image = _image(tmp_path / "photo.png")
    checkpoint = ["--checkpoint", str(model_dir)]
    in_the_way = f"{a_file} is a file, not a folder"
    cases = [
        (["predict", str(image), *checkpoint, "--json", f"{a_file}/p.json"], in_the_way),
        (["eval", *checkpoint, "--json", str(tmp_path)], f"{tmp_path} is a folder, not a file"),
        (["bench", "--json", f"{a_file}/b.json", "--models", "resnet18"], in_the_way),
        (["export", *checkpoint, "--output", f"{a_file}/m.onnx"], in_the_way),
        (["export", *checkpoint, "--output", str(tmp_path)], f"{tmp_path} is a folder, not a file"),
        (["convert", *checkpoint, "--output", str(a_file)], in_the_way),
        (["reparam", *checkpoint, "--output", str(a_file)], in_the_way),
        (["erf", "--output", str(a_file)], in_the_way),
        (["train", "--output", str(a_file)], in_the_way),
        (["train", "--output", f"{a_file}/run"], in_the_way),
        (["seg-train", "--output", str(a_file)], in_the_way),
        (["data", "synth", "--output", str(a_file)], in_the_way),
        (["shape-bias", "--checkpoint", str(model_dir), "--plot", f"{a_file}/f.png"], in_the_way),
    ]
    for argv, expected in cases:
        refused(argv, expected, tmp_path, capsys)
    assert a_file.read_text() == "x"

    # A folder that does not exist yet is created, once the work is done.
    assert main(["predict", str(image), *checkpoint, "--json", "new/deeper/p.json", "--no-progress"]) == 0
    records = json.loads((tmp_path / "new" / "deeper" / "p.json").read_text())
    assert {score["label"] for score in records[0]["top"]} == {"a", "b", "c"}


def test_finished_outputs_are_kept_unless_overwrite(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = ["--checkpoint", str(model_dir)]
    converted = tmp_path / "converted"
    assert main(["convert", *checkpoint, "--output", str(converted), "--no-check"]) == 0
    refused(["convert", *checkpoint, "--output", str(converted)], "holds a finished run", tmp_path, capsys)
    refused(["reparam", *checkpoint, "--output", str(converted)], "holds a finished run", tmp_path, capsys)
    assert main(["reparam", *checkpoint, "--output", str(converted), "--overwrite", "--no-check"]) == 0
    assert json.loads((converted / "config.json").read_text())["model_args"]["small_kernel_merged"] is True

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "summary.json").write_text("{}")
    refused(["train", "--output", str(finished)], f"run folder {finished} holds a finished run", tmp_path, capsys)
    (finished / "metrics.json").write_text("{}")
    refused(["seg-train", "--output", str(finished)], "holds a finished run", tmp_path, capsys)
    erf = tmp_path / "erf"
    erf.mkdir()
    (erf / "area_ratios.json").write_text("{}")
    refused(["erf", "--output", str(erf)], "holds a finished run", tmp_path, capsys)
    # A refused resume creates no folder.
    refused(["train", "--resume", str(tmp_path / "nowhere"), "--output", "fresh"], "nowhere", tmp_path, capsys)
    assert not (tmp_path / "fresh").exists()


def test_bad_images(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    good = _image(images / "good.png")
    broken = images / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff this is no JPEG")
    refused(["predict", str(images), "--checkpoint", str(model_dir)], f"{broken}", tmp_path, capsys)
    capsys.readouterr()
    assert main(["predict", str(images), "--checkpoint", str(model_dir), "--skip-bad-images", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{broken}\n  skipped: " in out and f"{good}\n  1. " in out


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from replknet.cli._common import HelpFormatter
    from replknet.cli.main import build_parser

    def parsers(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")
        yield name, parser

    names = set()
    for name, parser in parsers(build_parser(), "replknet"):
        formatter = HelpFormatter(name)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            names.update(action.option_strings)
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            default = action.default
            if default is not None and not isinstance(default, bool) and default != []:
                assert "default" in formatter._get_help_string(action), f"{name} {action.option_strings}: no default"
    # One spelling per concept across the commands.
    for old in ("--out", "--output-dir", "--img-size", "--size", "--check-size", "--channels-last", "-o"):
        assert old not in names, old


def test_a_broken_image_in_an_image_folder(tmp_path, model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b", "c"):
        (tmp_path / "data" / "val" / name).mkdir(parents=True)
        _image(tmp_path / "data" / "val" / name / "1.png")
    broken = tmp_path / "data" / "val" / "b" / "2.jpg"
    broken.write_bytes(b"\xff\xd8\xff broken")
    argv = ["eval", "--checkpoint", str(model_dir), "--data", "data", "--workers", "2", "--no-progress"]
    refused(argv, "cannot read image data/val/b/2.jpg", tmp_path, capsys)  # from a worker: one line naming it
    metrics = _json_out([*argv, "--skip-bad-images"], capsys)
    assert metrics["images"] == 3 and [s["path"] for s in metrics["skipped"]] == [str(Path("data/val/b/2.jpg"))]


def _json_out(argv: list[str], capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)
