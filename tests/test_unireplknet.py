"""UniRepLKNet: parity with the official code (tests/expect/unireplknet), its variants, fusion and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import replknet
from replknet.checkpoint import CheckpointError
from replknet.models.unireplknet import DILATED_BRANCHES, DilatedReparamBlock, UniRepLKNet, UniRepLKNetBlock
from replknet.reparam import dilated_to_dense
from replknet.testing import randomize_affine, relative_error

EXPECT = Path(__file__).parent / "expect" / "unireplknet"
FOLDERS = ["table", "afp"]
TOL = 1e-5


def _meta(folder: str) -> dict:
    return json.loads((EXPECT / folder / "meta.json").read_text())


def _arch(folder: str) -> dict:
    meta = _meta(folder)
    kernel_sizes = meta["kernel_sizes"]
    return dict(
        depths=tuple(meta["depths"]),
        dims=tuple(meta["dims"]),
        kernel_sizes=tuple(map(tuple, kernel_sizes)) if kernel_sizes is not None else None,
    )


def _official(folder: str, name: str) -> dict[str, torch.Tensor]:
    return load_file(EXPECT / folder / f"{name}.safetensors")


def _model(folder: str, **kwargs) -> UniRepLKNet:
    options = dict(_arch(folder), num_classes=_meta(folder)["num_classes"])
    options.update(kwargs)
    return UniRepLKNet(**options).eval()


# ---------------------------------------------------------------------- parity with the official code
@pytest.mark.parametrize("folder", FOLDERS)
def test_training_form_loads_strictly_and_reproduces_official_logits(folder):
    model = _model(folder)
    model.load_state_dict(_official(folder, "state_dict"), strict=True)
    tensors = _official(folder, "tensors")
    with torch.no_grad():
        assert relative_error(model(tensors["input"]), tensors["logits"]) <= TOL


@pytest.mark.parametrize("folder", FOLDERS)
def test_official_deploy_state_dict_loads_into_the_deploy_form(folder):
    model = _model(folder, deploy=True)
    model.load_state_dict(_official(folder, "state_dict_reparam"), strict=True)
    tensors = _official(folder, "tensors")
    with torch.no_grad():
        assert relative_error(model(tensors["input"]), tensors["logits_reparam"]) <= TOL


@pytest.mark.parametrize("folder", FOLDERS)
def test_our_fusion_equals_the_official_reparameterization_key_for_key(folder):
    model = _model(folder)
    model.load_state_dict(_official(folder, "state_dict"), strict=True)
    fused = replknet.reparameterize(model)
    official = _official(folder, "state_dict_reparam")
    ours = fused.state_dict()
    assert set(ours) == set(official)
    for key, value in official.items():
        assert ours[key].shape == value.shape, key
        if value.is_floating_point():
            assert relative_error(ours[key], value) <= TOL, key
    tensors = _official(folder, "tensors")
    with torch.no_grad():
        assert relative_error(fused(tensors["input"]), tensors["logits_reparam"]) <= TOL
        deep = replknet.reparameterize(model, deep=True)
        assert relative_error(deep(tensors["input"]), tensors["logits"]) <= TOL


@pytest.mark.parametrize("folder", FOLDERS)
def test_features_mode_reproduces_official_outputs(folder):
    model = _model(folder, num_classes=None)
    state_dict = {k: v for k, v in _official(folder, "state_dict").items() if not k.startswith(("head.", "norm."))}
    state_dict.update(_official(folder, "features_norms"))
    model.load_state_dict(state_dict, strict=True)
    tensors = _official(folder, "tensors")
    with torch.no_grad():
        features = model(tensors["input"])
    assert len(features) == 4
    for i, feature in enumerate(features):
        assert relative_error(feature, tensors[f"features.{i}"]) <= TOL, i


def _save_layouts(tmp_path: Path, state_dict: dict) -> dict[str, Path]:
    layouts = {
        "plain": state_dict,
        "model": {"model": state_dict, "epoch": 3},
        "state_dict": {"state_dict": state_dict},
        "model_ema": {"model_ema": state_dict},
        "module": {f"module.{k}": v for k, v in state_dict.items()},
    }
    paths = {}
    for name, content in layouts.items():
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(content, paths[name])
    return paths


@pytest.mark.parametrize("form", ["state_dict", "state_dict_reparam"])
def test_official_checkpoint_layouts_load_through_create_model(tmp_path, form):
    # Explicit arguments override the registered variant's (here: the fixture's small architecture).
    state_dict = _official("table", form)
    tensors = _official("table", "tensors")
    expected = tensors["logits" if form == "state_dict" else "logits_reparam"]
    for layout, path in _save_layouts(tmp_path, state_dict).items():
        model = replknet.create_model("unireplknet_a", checkpoint_path=path, **_arch("table")).eval()
        assert model.num_classes == 10
        assert isinstance(model.stages[0][0].norm, torch.nn.Identity) == (form == "state_dict_reparam"), layout
        with torch.no_grad():
            assert relative_error(model(tensors["input"]), expected) <= TOL, layout
        again = replknet.load_checkpoint(_model("table", deploy=form != "state_dict"), path)
        with torch.no_grad():
            assert relative_error(again(tensors["input"]), expected) <= TOL, layout


def test_training_checkpoint_into_deploy_model_names_the_problem(tmp_path):
    path = tmp_path / "train.pth"
    torch.save(_official("table", "state_dict"), path)
    with pytest.raises(CheckpointError, match=r"build the model without deploy, then fuse"):
        replknet.load_checkpoint(_model("table", deploy=True), path)
    deploy_path = tmp_path / "deploy.pth"
    torch.save(_official("table", "state_dict_reparam"), deploy_path)
    with pytest.raises(CheckpointError, match=r"build the model with deploy=True"):
        replknet.load_checkpoint(_model("table"), deploy_path)


def test_init_cfg_selects_the_features_mode_and_loads_a_classifier_checkpoint(tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save({"model": _official("afp", "state_dict")}, path)
    model = UniRepLKNet(num_classes=None, init_cfg=dict(checkpoint=str(path)), **_arch("afp")).eval()
    assert model.features_mode and not hasattr(model, "head")
    official = _official("afp", "state_dict")
    torch.testing.assert_close(
        model.state_dict()["stages.2.5.pwconv1.1.weight"], official["stages.2.5.pwconv1.1.weight"]
    )
    with pytest.raises(ValueError, match="num_classes=None"):
        UniRepLKNet(num_classes=10, init_cfg=dict(checkpoint=None), **_arch("afp"))
    via_timm = timm.create_model("unireplknet_a", init_cfg=dict(checkpoint=None), **_arch("afp"))
    assert via_timm.features_mode


# ---------------------------------------------------------------------- variants (official counts, spec table)
# params and keys: the spec's table (the official code); GMACs of the fused model: the official README's FLOPs at
# the resolution of its ImageNet-1K result (224 for A..S trained on 1K, 384 for the 22K -> 1K finetunes).
@pytest.mark.parametrize(
    ("name", "train_params", "deploy_params", "train_keys", "deploy_keys", "size", "gmacs"),
    [
        ("unireplknet_a", 4_649_060, 4_437_300, 626, 156, 224, 0.6),
        ("unireplknet_f", 6_489_328, 6_235_216, 626, 156, 224, 0.9),
        ("unireplknet_p", 11_080_520, 10_741_704, 626, 156, 224, 1.6),
        ("unireplknet_n", 18_818_880, 18_318_560, 738, 178, 224, 2.8),
        ("unireplknet_t", 31_693_420, 31_037_980, 1116, 321, 224, 4.9),
        ("unireplknet_s", 56_456_704, 55_645_984, 1305, 420, 224, 9.1),
        ("unireplknet_b", 99_089_416, 98_008_456, 1305, 420, 384, 47.2),
        ("unireplknet_l", 220_076_056, 218_454_616, 1305, 420, 384, 105.4),
        ("unireplknet_xl", 388_690_984, 386_529_064, 1305, 420, 384, 187.0),
    ],
)
def test_variant_counts_equal_the_official(name, train_params, deploy_params, train_keys, deploy_keys, size, gmacs):
    with torch.device("meta"):
        model = replknet.create_model(name)
        fused = replknet.reparameterize(model)
        deploy = replknet.create_model(name, deploy=True)
    assert replknet.count_params(model) == train_params and len(model.state_dict()) == train_keys
    assert replknet.count_params(fused) == deploy_params and len(fused.state_dict()) == deploy_keys
    assert {k: v.shape for k, v in deploy.state_dict().items()} == {k: v.shape for k, v in fused.state_dict().items()}
    # the README rounds to 0.1 G (XL: 187G, 186.77 here)
    assert replknet.count_macs(fused, size) / 1e9 == pytest.approx(gmacs, abs=0.25 if gmacs > 100 else 0.05)


def test_default_kernel_patterns():
    with torch.device("meta"):
        tiny = replknet.create_model("unireplknet_t")
        small = replknet.create_model("unireplknet_s")
    assert tiny.kernel_sizes[2] == (13, 3) * 9 and tiny.kernel_sizes[0] == (3, 3, 3)
    assert small.kernel_sizes[2] == (13, 3, 3) * 9 and small.kernel_sizes[3] == (13, 13, 13)
    keys = small.state_dict()
    assert keys["stages.2.0.dwconv.dil_conv_k7_2.weight"].shape == (384, 1, 7, 7)
    assert keys["stages.2.1.dwconv.weight"].shape == (384, 1, 3, 3)


def test_timm_arguments_override_the_variant():
    kernel_sizes = ((3,), (13,), (17, 0), (7,))
    model = timm.create_model("unireplknet_t", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), kernel_sizes=kernel_sizes)
    assert model.depths == (1, 1, 2, 1) and model.dims == (8, 16, 24, 32) and model.kernel_sizes == kernel_sizes
    assert isinstance(model.stages[2][1].dwconv, torch.nn.Identity)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    # depths alone pick that depth's default kernel pattern
    assert timm.create_model("unireplknet_t", depths=(2, 2, 6, 2)).kernel_sizes[2] == (13,) * 6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"no default kernel sizes for depths \(1, 1, 2, 1\)"):
        UniRepLKNet(depths=(1, 1, 2, 1))
    with pytest.raises(ValueError, match="do not match depths"):
        UniRepLKNet(depths=(1, 1, 2, 1), kernel_sizes=((3,), (3,), (3,), (3,)))
    with pytest.raises(ValueError, match="kernel size 0, 3, 5 or one of 7..17"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kernel_sizes=((4,), (3,), (3,), (3,)))
    with pytest.raises(ValueError, match="no branch table for kernel size 19"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), kernel_sizes=((19,), (3,), (3,), (3,)))
    with pytest.raises(TypeError, match="unexpected arguments: \\['kernel_size'\\]"):
        UniRepLKNet(kernel_size=13)
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\)"):
        replknet.create_model("unireplknet_a")(torch.randn(1, 1, 32, 32))


def test_init_follows_the_official_code():
    torch.manual_seed(0)
    model = replknet.create_model("unireplknet_p", head_init_scale=0.001, layer_scale_init_value=0.5)
    weight = model.stages[3][0].pwconv1[1].weight
    # timm's trunc_normal_(std=0.02) truncates at +-2 absolute, which leaves a plain N(0, 0.02^2)
    assert abs(weight.std().item() - 0.02) < 0.001 and abs(weight.mean().item()) < 0.001
    assert model.stages[0][0].pwconv1[1].bias.abs().max() == 0
    assert abs(model.head.weight.std().item() - 0.02 * 0.001) < 0.001 * 0.001 and model.head.bias.abs().max() == 0
    assert (model.stages[1][0].gamma == 0.5).all()
    grn = model.stages[1][0].act[1]
    assert (grn.gamma == 0).all() and (grn.beta == 0).all()
    # timm drops None arguments: 0 switches layer scale off through timm (None does on the class)
    assert replknet.create_model("unireplknet_a", layer_scale_init_value=0).stages[0][0].gamma is None
    assert UniRepLKNet(layer_scale_init_value=None, **_arch("table")).stages[0][0].gamma is None


def test_pretrained_cfgs_follow_the_official_eval_transform():
    s = replknet.get_model_info("unireplknet_s")
    assert s.input_size == (3, 224, 224) and s.preprocessing["crop_pct"] == 0.875
    assert s.preprocessing["interpolation"] == "bicubic" and s.preprocessing["mean"] == (0.485, 0.456, 0.406)
    assert set(s.tags()) == {"in1k", "in22k", "in22k_ft_in1k_384"}
    cfg_384 = s.pretrained_cfg("in22k_ft_in1k_384")
    assert cfg_384["input_size"] == (3, 384, 384) and cfg_384["crop_pct"] == 1.0 and cfg_384["crop_mode"] == "squash"
    assert replknet.get_model_info("unireplknet_xl").input_size == (3, 384, 384)
    assert replknet.get_model_info("unireplknet_l").pretrained_cfg("in22k")["input_size"] == (3, 192, 192)
    assert replknet.get_model_info("unireplknet_b").pretrained_cfg("in22k")["num_classes"] == 21841
    assert replknet.get_model_info("unireplknet_a").tags() == ["in1k"]


# ---------------------------------------------------------------------- fusion math, in float64
@pytest.mark.parametrize(("k", "r"), [(3, 1), (3, 2), (5, 3), (9, 2), (3, 7)])
def test_dilated_kernel_equals_its_dense_form(k, r):
    x = torch.randn(2, 3, 29, 29, dtype=torch.float64)
    weight = torch.randn(3, 1, k, k, dtype=torch.float64)
    dilated = F.conv2d(x, weight, padding=r * (k - 1) // 2, dilation=r, groups=3)
    dense = dilated_to_dense(weight, r)
    assert dense.shape[-1] == r * (k - 1) + 1
    torch.testing.assert_close(F.conv2d(x, dense, padding=dense.shape[-1] // 2, groups=3), dilated)


@pytest.mark.parametrize("kernel_size", sorted(DILATED_BRANCHES))
def test_dilated_reparam_block_fuses_exactly(kernel_size):
    block = randomize_affine(DilatedReparamBlock(4, kernel_size).double()).eval()
    x = torch.randn(2, 4, 23, 23, dtype=torch.float64)
    with torch.no_grad():
        reference = block(x)
        block.reparameterize()
        block.reparameterize()  # idempotent
        torch.testing.assert_close(block(x), reference, rtol=1e-12, atol=1e-12)
    assert set(block.state_dict()) == {"lk_origin.weight", "lk_origin.bias"}


@pytest.mark.parametrize("kernel_size", [0, 3, 5, 13])
def test_block_fuses_exactly_and_matches_the_deploy_constructor(kernel_size):
    block = randomize_affine(UniRepLKNetBlock(8, kernel_size).double()).eval()
    x = torch.randn(2, 8, 11, 11, dtype=torch.float64)
    with torch.no_grad():
        reference = block(x)
        block.reparameterize()
        torch.testing.assert_close(block(x), reference, rtol=1e-12, atol=1e-12)
    deploy = UniRepLKNetBlock(8, kernel_size, deploy=True)
    assert {k: v.shape for k, v in deploy.state_dict().items()} == {k: v.shape for k, v in block.state_dict().items()}


def test_official_method_names_and_timm_reparameterize_model():
    model = randomize_affine(replknet.create_model("unireplknet_a", num_classes=3)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        via_timm = timm.utils.reparameterize_model(model)
        assert relative_error(via_timm(x), reference) < 1e-5
        model.reparameterize_unireplknet()
        assert relative_error(model(x), reference) < 1e-5
    assert set(model.state_dict()) == set(via_timm.state_dict())


# ---------------------------------------------------------------------- options
def test_with_cp_keeps_outputs_and_gradients():
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    plain = replknet.create_model("unireplknet_a", num_classes=4)
    torch.manual_seed(1)
    checkpointed = replknet.create_model("unireplknet_a", num_classes=4, with_cp=True)
    assert checkpointed.stages[2][0].grad_checkpointing
    plain(x).sum().backward()
    checkpointed(x).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_attempt_use_lk_impl_and_sync_bn():
    plain = UniRepLKNet(attempt_use_lk_impl=False, **_arch("table"))
    assert plain.stages[0][0].dwconv.lk_origin.impl == "reference" and plain.stages[2][3].dwconv.impl == "reference"
    assert UniRepLKNet(**_arch("table")).stages[0][0].dwconv.lk_origin.impl == "auto"
    synced = UniRepLKNet(use_sync_bn=True, **_arch("table"))
    assert isinstance(synced.stages[0][0].norm, torch.nn.SyncBatchNorm)
    assert set(synced.state_dict()) == set(plain.state_dict())
