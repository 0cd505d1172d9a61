"""Every registered model of every family: construction, forward/backward, features, fusion exactness, timm
conventions, TorchScript as the registry records it, and golden logits per family (tests/expect/golden)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import replknet
from replknet.testing import randomize_affine, randomize_bn_stats, relative_error

ALL_MODELS = replknet.list_models()
# Full-width RepLKNet bodies and UniRepLKNet-L/XL (220M/389M parameters) are slow on 2 CPU cores: their
# forward/backward and fusion runs are marked slow (still run in CI); shape checks run on the meta device.
BIG = {name for name in ALL_MODELS if name.startswith("replknet_") and "tiny" not in name} | {
    "unireplknet_l",
    "unireplknet_xl",
}
SMALL_INPUT = 32
GOLDEN = Path(__file__).parent / "expect" / "golden"
# One small model per family; its seeded logits are checked in. Regenerate only on purpose:
# REPLKNET_UPDATE_GOLDEN=1 pytest tests/test_models.py -k golden
GOLDEN_MODELS = {"replknet": "replknet_tiny", "mobilenetv2": "mbv2_lk_k7_rep3", "unireplknet": "unireplknet_a"}
UPDATE_GOLDEN = os.environ.get("REPLKNET_UPDATE_GOLDEN") == "1"


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in names]


def _device(name: str) -> torch.device:
    return torch.device("meta") if name in BIG else torch.device("cpu")


def test_registry_lists_every_family():
    expected = {
        "replknet_31b",
        "replknet_31l",
        "replknet_xl",
        "replknet_31b_k3",
        "replknet_31b_k7",
        "replknet_31b_k13",
        "replknet_31b_k25",
        "replknet_31b_k31",
        "mbv2_lk_k13_rep3",
        "mbv2_lk_last7",
        "unireplknet_a",
        "unireplknet_xl",
    }
    assert expected <= set(ALL_MODELS)
    assert all(name in timm.list_models() for name in ALL_MODELS)


@pytest.mark.parametrize("name", _params(ALL_MODELS))
def test_forward_backward_reaches_every_parameter(name):
    model = replknet.create_model(name, num_classes=7)
    x = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", _params(ALL_MODELS))
def test_fusion_is_exact(name):
    model = randomize_affine(replknet.create_model(name).eval())
    x = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT)
    fused = replknet.reparameterize(model)
    deep = replknet.reparameterize(model, deep=True)
    with torch.no_grad():
        reference = model(x)
        assert relative_error(fused(x), reference) < 1e-5
        assert relative_error(deep(x), reference) < 1e-5
    # fusion returns a copy; the original keeps its training form
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in deep.modules()
    )


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_shapes(name):
    with _device(name):
        model = timm.create_model(name, features_only=True)
        x = torch.randn(1, 3, 64, 96)
    reductions = model.feature_info.reduction()
    channels = model.feature_info.channels()
    assert tuple(reductions) == replknet.get_model_info(name).feature_strides
    features = model(x)
    assert len(features) == len(reductions)
    for feature, reduction, width in zip(features, reductions, channels):
        assert feature.shape == (1, width, 64 // reduction, 96 // reduction)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_intermediates(name):
    with _device(name):
        model = replknet.create_model(name, num_classes=5).eval()
        x = torch.randn(2, 3, 64, 64)
    info = model.feature_info
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert [t.shape for t in intermediates] == [
            (2, f["num_chs"], 64 // f["reduction"], 64 // f["reduction"]) for f in info
        ]
        only = model.forward_intermediates(x, indices=[0, len(info) - 1], intermediates_only=True)
        early = model.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True)
        if x.device.type != "meta":
            torch.testing.assert_close(final, model.forward_features(x))
            torch.testing.assert_close(only[0], intermediates[0])
            torch.testing.assert_close(only[1], intermediates[-1])
            torch.testing.assert_close(early[0], intermediates[-1])
    assert model.forward_head(final).shape == (2, 5)


@pytest.mark.parametrize("family", replknet.list_families())
def test_torchscript_support_is_what_the_registry_records(family):
    # Script where the family says it works; otherwise scripting must fail (so the record cannot go stale) and
    # tracing, which every family supports, must reproduce the eager output.
    name = GOLDEN_MODELS[family]
    model = replknet.reparameterize(replknet.create_model(name, num_classes=3).eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        if replknet.get_model_info(name).family.torchscript:
            torch.testing.assert_close(torch.jit.script(model)(x), reference)
        else:
            with pytest.raises(Exception):  # noqa: B017 (TorchScript raises several unrelated error types)
                torch.jit.script(model)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), reference)


def _golden_logits(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = replknet.create_model(name, num_classes=10)
    randomize_affine(model, torch.Generator().manual_seed(1)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model(x), replknet.reparameterize(model, deep=True)(x)


def test_every_family_has_a_golden_model():
    assert set(GOLDEN_MODELS) == set(replknet.list_families())


@pytest.mark.parametrize("family", sorted(GOLDEN_MODELS))
def test_golden_logits(family):
    path = GOLDEN / f"{family}.safetensors"
    logits, deep_logits = _golden_logits(GOLDEN_MODELS[family])
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"logits": logits.contiguous()}, str(path), metadata={"model": GOLDEN_MODELS[family]})
    expected = load_file(path)["logits"]
    assert relative_error(logits, expected) < 1e-4
    assert relative_error(deep_logits, expected) < 1e-4


def test_replknet_feature_info_reductions():
    model = replknet.create_model("replknet_tiny")
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 64, 128]


@pytest.mark.parametrize(
    ("name", "train_params", "fused_params", "size", "gmacs"),
    [
        ("replknet_31b", 79_864_168, 79_527_272, 224, 15.35),
        ("replknet_31l", 172_671_016, 172_165_672, 384, 95.99),
        ("replknet_xl", 335_435_752, 335_399_656, 320, 128.73),
    ],
)
def test_paper_param_counts_and_macs(name, train_params, fused_params, size, gmacs):
    with torch.device("meta"):
        model = replknet.create_model(name)
    assert model.num_classes == 1000
    assert replknet.count_params(model) == train_params
    fused = replknet.reparameterize(model)
    assert replknet.count_params(fused) == fused_params
    assert round(replknet.count_macs(fused, size) / 1e9, 2) == gmacs


def test_xl_has_no_small_branch_and_wider_depthwise():
    with torch.device("meta"):
        model = replknet.create_model("replknet_xl")
    keys = model.state_dict().keys()
    assert not any("small_conv" in k for k in keys)
    assert model.state_dict()["stages.0.blocks.0.large_kernel.lkb_origin.conv.weight"].shape == (384, 1, 27, 27)


def test_deploy_form_constructs_directly_and_loads_fused_weights():
    model = randomize_bn_stats(replknet.create_model("replknet_tiny").eval())
    fused = replknet.reparameterize(model)
    deploy = replknet.create_model("replknet_tiny", small_kernel_merged=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(deploy(x), model(x)) < 1e-5


def test_reparameterize_inplace_and_idempotent():
    model = randomize_bn_stats(replknet.create_model("replknet_tiny").eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    same = replknet.reparameterize(model, inplace=True)
    assert same is model
    keys = set(model.state_dict())
    replknet.reparameterize(model, inplace=True)
    assert set(model.state_dict()) == keys
    assert any(k.endswith("lkb_reparam.weight") for k in keys)
    with torch.no_grad():
        assert relative_error(model(x), reference) < 1e-5


def test_deep_fusion_removes_all_batchnorm_from_the_classifier():
    model = replknet.create_model("replknet_tiny")
    deep = replknet.reparameterize(model, deep=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deep.modules())


def test_gradient_checkpointing_keeps_outputs_and_gradients():
    model = replknet.create_model("replknet_tiny", drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    # the same batch statistics are used: BN running stats update twice, outputs use batch stats in train mode
    out = model(x)
    out.sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=n)


def test_use_checkpoint_constructor_option():
    model = replknet.create_model("replknet_tiny", use_checkpoint=True)
    assert model.grad_checkpointing and all(stage.grad_checkpointing for stage in model.stages)


def test_timm_conventions():
    model = replknet.create_model("replknet_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 128, 2, 2)
    assert model.forward_head(features, pre_logits=True).shape == (2, 128)
    assert model.forward_head(features).shape == (2, 1000)
    final, intermediates = model.forward_intermediates(x)
    assert [t.shape[1] for t in intermediates] == [16, 32, 64, 128]
    torch.testing.assert_close(final, features)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    assert model.get_classifier() is model.head


def test_in_chans():
    model = timm.create_model("replknet_tiny", in_chans=1, num_classes=3)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)
    assert model.stem[0].conv.weight.shape[1] == 1


def test_pretrained_cfgs_follow_official_eval_settings():
    cfg = timm.models.get_pretrained_cfg("replknet_xl")
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5) and cfg.input_size == (3, 320, 320)
    cfg_384 = timm.models.get_pretrained_cfg("replknet_31b.in1k_384")
    assert cfg_384.crop_pct == 1.0 and cfg_384.crop_mode == "squash" and cfg_384.interpolation == "bicubic"
    cfg_224 = timm.models.get_pretrained_cfg("replknet_31b.in1k")
    assert cfg_224.crop_pct == 0.875 and cfg_224.mean == (0.485, 0.456, 0.406)
    assert timm.models.get_pretrained_cfg("replknet_31l").input_size == (3, 384, 384)


def test_pretrained_from_local_file(tmp_path):
    source = replknet.create_model("replknet_tiny", num_classes=4).eval()
    randomize_bn_stats(source)
    path = replknet.save_state_dict(source.state_dict(), tmp_path / "w.safetensors")
    model = timm.create_model(
        "replknet_tiny", pretrained=True, num_classes=4, pretrained_cfg_overlay=dict(file=str(path), num_classes=4)
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_backbone_mode_matches_official_rules():
    with pytest.raises(ValueError, match="not both"):
        replknet.RepLKNet(num_classes=10, out_indices=(0, 1, 2, 3))
    with pytest.raises(ValueError, match="not neither"):
        replknet.RepLKNet(num_classes=None)
    with pytest.raises(ValueError, match="norm_intermediate_features"):
        replknet.RepLKNet(num_classes=10, norm_intermediate_features=True)
    backbone = replknet.create_model("replknet_tiny", num_classes=None, out_indices=(1, 3))
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 128]
    assert not any(k.startswith(("head.", "norm.")) for k in backbone.state_dict())


def test_trace_matches_eager():
    model = replknet.reparameterize(replknet.create_model("replknet_tiny").eval())
    x = torch.randn(1, 3, 64, 64)
    traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(torch.randn(1, 3, 64, 64) * 0 + x), model(x))


def test_smp_upernet_with_timm_encoder():
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.UPerNet(encoder_name="tu-replknet_tiny", encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64)


@pytest.mark.slow
def test_smp_upernet_with_replknet_31b():
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.UPerNet(encoder_name="tu-replknet_31b", encoder_weights=None, classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 2, 64, 64)
