"""The engine options the studies rely on: model/backbone kwargs, built-in Pathfinder data, MobileNetV2 width and
MobileNetV2 segmentation backbones."""

from __future__ import annotations

import json

import pytest
import torch

import replknet
from replknet.train import get_preset, train


def test_train_pathfinder_with_model_kwargs(tmp_path):
    config = get_preset(
        "demo",
        model="replknet_tiny",
        model_kwargs={"large_kernel_sizes": (7, 7, 7, 7)},
        data="pathfinder",
        data_options={"preset": "short"},
        image_size=32,
        synthetic_train_size=16,
        synthetic_val_size=8,
        batch_size=8,
        recipe_batch=8,
        epochs=2,
        warmup_epochs=0,
        fuse=False,
        output=str(tmp_path / "run"),
    )
    result = train(config, progress=False, stop_after_epochs=1)  # unfinished: resumable
    kernels = [m.kernel_size for m in result.model.modules() if hasattr(m, "lkb_origin")]
    assert kernels == [7] * 5  # layers 1, 1, 2, 1 of the tiny body, every one 7x7 as asked
    assert result.model.num_classes == 2 and result.val["images"] == 8
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    saved = replknet.train.TrainConfig.from_dict({k: v for k, v in training.items() if k != "evaluation"})
    assert saved.model_kwargs == {"large_kernel_sizes": (7, 7, 7, 7)} and saved.data_options == {"preset": "short"}
    changed = config.replace(model_kwargs={"large_kernel_sizes": (9, 9, 9, 9)})
    with pytest.raises(ValueError, match="model_kwargs"):
        train(changed, resume=tmp_path / "run", progress=False)


def test_data_options_only_for_builtin_data():
    with pytest.raises(ValueError, match="data_options"):
        get_preset("demo", data="/some/folder", data_options={"preset": "long"})


def test_mobilenetv2_width_multiplier():
    full = replknet.create_model("mbv2_lk_k3")
    half = replknet.create_model("mbv2_lk_k3", width_multiplier=0.5)
    assert replknet.count_params(full) == 3_504_872  # the standard MobileNetV2 1.0 (torchvision: 3,504,872)
    assert [f["num_chs"] for f in half.feature_info] == [8, 16, 16, 48, 160]  # torchvision's rounding
    assert half(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(ValueError, match="width_multiplier"):
        replknet.create_model("mbv2_lk_k3", width_multiplier=0)


def test_mobilenetv2_and_kernel_override_segmentation_backbones():
    from replknet.seg import build_segmentor
    from replknet.seg.model import SegmentorConfig

    model = build_segmentor(
        "mbv2_lk_last13", 4, backbone_kwargs={"width_multiplier": 0.5}, channels=16, aux_channels=8
    ).eval()
    assert [f["reduction"] for f in model.backbone.feature_info] == [4, 8, 16, 32]
    kernels = {m.kernel_size for m in model.backbone.model.stages[4].modules() if hasattr(m, "lkb_origin")}
    assert kernels == {13}
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    swept = build_segmentor("replknet_tiny", 4, backbone_kwargs={"large_kernel_sizes": [3, 3, 3, 3],
                                                                 "small_kernel": None}, channels=16)  # fmt: skip
    assert {m.kernel_size for m in swept.backbone.modules() if hasattr(m, "lkb_origin")} == {3}
    config = SegmentorConfig.from_dict(swept.config.to_dict())
    assert config == swept.config and config.backbone_kwargs["large_kernel_sizes"] == (3, 3, 3, 3)
