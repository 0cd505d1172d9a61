"""Parity with the official RepLKNet code: its fixtures (../shared/fixtures) reproduced to 1e-5 relative."""

from __future__ import annotations

import json

import pytest
import torch

import replknet
from conftest import _shared_path as shared_path  # noqa: I001 (tests/ is on sys.path under pytest)
from replknet.checkpoint import convert_state_dict
from replknet.models import RepLKNet
from replknet.testing import relative_error

FOLDERS = ["official_tiny", "official_tiny_xl"]
TOL = 1e-5


def _load(folder: str, name: str):
    return torch.load(shared_path("fixtures", folder, name), map_location="cpu", weights_only=True)


def _model(folder: str, **kwargs) -> RepLKNet:
    meta = json.loads(shared_path("fixtures", folder, "meta.json").read_text())
    options = dict(meta["config"], drop_path_rate=0.0)
    options.update(kwargs)
    if "out_indices" not in kwargs:
        options["num_classes"] = meta["num_classes"]
    return RepLKNet(**options).eval()


@pytest.mark.parametrize("folder", FOLDERS)
def test_training_form_logits(folder):
    model = _model(folder)
    model.load_state_dict(_load(folder, "state_dict.pth"), strict=True)
    with torch.no_grad():
        assert relative_error(model(_load(folder, "input.pt")), _load(folder, "logits.pt")) <= TOL


@pytest.mark.parametrize("folder", FOLDERS)
def test_official_reparam_state_dict_loads_into_deploy_form(folder):
    model = _model(folder, small_kernel_merged=True)
    model.load_state_dict(_load(folder, "state_dict_reparam.pth"), strict=True)
    with torch.no_grad():
        assert relative_error(model(_load(folder, "input.pt")), _load(folder, "logits_reparam.pt")) <= TOL


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("deep", [False, True])
def test_our_fusion_reproduces_official_reparam_logits(folder, deep):
    model = _model(folder)
    model.load_state_dict(_load(folder, "state_dict.pth"), strict=True)
    fused = replknet.reparameterize(model, deep=deep)
    with torch.no_grad():
        assert relative_error(fused(_load(folder, "input.pt")), _load(folder, "logits_reparam.pt")) <= TOL
    if not deep:
        # same keys and values as the official structural_reparam()
        official = _load(folder, "state_dict_reparam.pth")
        ours = fused.state_dict()
        assert set(ours) == set(official)
        for key, value in official.items():
            torch.testing.assert_close(ours[key].float(), value.float(), rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("folder", FOLDERS)
def test_backbone_features(folder):
    model = _model(folder, num_classes=None, out_indices=(0, 1, 2, 3), norm_intermediate_features=True)
    model.load_state_dict(_load(folder, "state_dict_features.pth"), strict=True)
    with torch.no_grad():
        features = model(_load(folder, "input.pt"))
    references = _load(folder, "features.pt")
    assert len(features) == len(references) == 4
    for ours, reference in zip(features, references):
        assert ours.shape == reference.shape
        assert relative_error(ours, reference) <= TOL


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd, "optimizer": {}, "epoch": 3},
        lambda sd: {"state_dict": sd},
        lambda sd: {"model_ema": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["model", "state_dict", "model_ema", "module-prefix", "wrapped-and-prefixed"],
)
def test_wrapped_official_checkpoints_load_strictly(wrap, tmp_path):
    state_dict = _load("official_tiny", "state_dict.pth")
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state_dict), path)
    model = replknet.load_checkpoint(_model("official_tiny"), path, strict=True)
    with torch.no_grad():
        out = model(_load("official_tiny", "input.pt"))
    assert relative_error(out, _load("official_tiny", "logits.pt")) <= TOL


def _to_mmpretrain(state_dict: dict) -> dict:
    """mmpretrain's layout (tools/model_converters/replknet_to_mmcls.py): backbone.*, stages.3.norm, head.fc."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("norm."):
            out["backbone.stages.3.norm." + key[len("norm.") :]] = value
        elif key.startswith("head."):
            out["head.fc." + key[len("head.") :]] = value
        else:
            out["backbone." + key] = value
    return out


def test_mmpretrain_layout_converts(tmp_path):
    state_dict = _load("official_tiny", "state_dict.pth")
    mm = _to_mmpretrain(state_dict)
    path = tmp_path / "mm.pth"
    torch.save({"meta": {"mmpretrain_version": "1.2.0"}, "state_dict": mm}, path)
    model = replknet.load_checkpoint(_model("official_tiny"), path)
    with torch.no_grad():
        assert relative_error(model(_load("official_tiny", "input.pt")), _load("official_tiny", "logits.pt")) <= TOL
    assert set(convert_state_dict(mm)) == set(state_dict)


def test_classifier_checkpoint_loads_into_backbone(tmp_path):
    path = tmp_path / "cls.pth"
    torch.save(_load("official_tiny", "state_dict.pth"), path)
    backbone = _model("official_tiny", num_classes=None, out_indices=(0, 1, 2, 3))
    replknet.load_checkpoint(backbone, path, strict=True)


def test_create_model_builds_deploy_form_from_a_fused_checkpoint(tmp_path):
    path = tmp_path / "fused.pth"
    torch.save(_load("official_tiny", "state_dict_reparam.pth"), path)
    model = replknet.create_model("replknet_tiny", checkpoint_path=path).eval()
    assert model.num_classes == 10
    with torch.no_grad():
        out = model(_load("official_tiny", "input.pt"))
    assert relative_error(out, _load("official_tiny", "logits_reparam.pt")) <= TOL
