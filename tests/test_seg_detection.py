"""The detection example: an FPN over the backbone's four maps (strides 4-32), plus P6."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "detection_fpn.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("detection_fpn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fpn_example_prints_pyramid_shapes(capsys):
    example = _load_example()
    shapes = example.main(["--model", "replknet_tiny", "--size", "96", "160", "--out-channels", "32"])
    assert shapes == {
        "0": (1, 32, 24, 40),
        "1": (1, 32, 12, 20),
        "2": (1, 32, 6, 10),
        "3": (1, 32, 3, 5),
        "pool": (1, 32, 2, 3),
    }
    printed = capsys.readouterr().out
    assert "C5  stride 32  (1, 128, 3, 5)" in printed and "P6 (pool)" in printed


def test_fpn_backbone_channels_and_strides():
    example = _load_example()
    with torch.device("meta"):
        model = example.RepLKNetFPN("replknet_31b", out_channels=256)
    assert [(f["num_chs"], f["reduction"]) for f in model.body.feature_info] == [
        (128, 4), (256, 8), (512, 16), (1024, 32),
    ]  # fmt: skip
    assert model.out_channels == 256
    with pytest.raises(ValueError, match="is a timm model, not one of replknet's"):
        example.RepLKNetFPN("resnet50")
