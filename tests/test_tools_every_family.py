"""Every library entry point behind the commands takes a UniRepLKNet (not only RepLKNet), at tiny inputs: ERF,
shape bias, segmentation backbone and its checkpoint loading, checkpoint conversion, export, bench, training with
the official layer-decay grouping, and the presets of the official recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import replknet
from replknet.analysis.erf import compute_erf
from replknet.analysis.shape_bias import evaluate_shape_bias, find_stimuli, logits_to_decisions
from replknet.checkpoint import CheckpointError
from replknet.deploy import convert_checkpoint, export_model, load_model, predict
from replknet.deploy.bench import benchmark, build_bench_model
from replknet.deploy.loading import is_fused
from replknet.seg import build_segmentor
from replknet.testing import randomize_affine, relative_error
from replknet.train import PRESETS, build_optimizer, get_preset, train, unireplknet_layer_id

NAME = "unireplknet_a"


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_affine(replknet.create_model(NAME, num_classes=10), torch.Generator().manual_seed(0)).eval()


# ---------------------------------------------------------------------- analysis
def test_erf_of_the_last_stage_and_of_a_named_layer(classifier):
    images = [torch.randn(3, 64, 64) for _ in range(2)]
    result = compute_erf(classifier, images)
    assert result.feature_shape == (320, 2, 2) and result.num_images == 2
    assert result.contribution.shape == (64, 64) and result.contribution.sum() > 0
    early = compute_erf(classifier, images, layer="stages.0")
    assert early.feature_shape == (40, 16, 16)
    # SE's global pooling lets every input pixel contribute a little; the 3x3 convs before the stride-4 centre
    # concentrate the contribution around it
    centre, corner = early.contribution[24:40, 24:40].mean(), early.contribution[:16, :16].mean()
    assert centre > 100 * corner > 0
    assert classifier.training is False and all(p.requires_grad for p in classifier.parameters())


def test_shape_bias_decisions_are_the_models(shared_path):
    root = shared_path("data", "cue-conflict-sample")
    stimuli = find_stimuli(root)[:12]
    torch.manual_seed(0)
    model = replknet.create_model(NAME).eval()  # 1000 ImageNet outputs
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    result = evaluate_shape_bias(model, stimuli, transform, batch_size=5)
    batch = torch.stack([transform(Image.open(s.path).convert("RGB")) for s in stimuli])
    with torch.no_grad():
        expected = logits_to_decisions(model(batch))
    assert [r["decision"] for r in result.records] == expected


# ---------------------------------------------------------------------- segmentation
def test_segmentor_with_a_unireplknet_backbone_trains_and_loads_a_classifier(classifier, tmp_path):
    segmentor = build_segmentor(NAME, num_classes=3, channels=16, aux_channels=8)
    backbone = segmentor.backbone
    assert backbone.features_mode and {f"norm{i}.weight" for i in range(4)} <= set(backbone.state_dict())
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    loss, _ = segmentor.loss(x, target)
    loss.backward()
    missing = [n for n, p in segmentor.named_parameters() if p.grad is None]
    assert not missing, missing[:5]

    path = replknet.save_state_dict(classifier.state_dict(), tmp_path / "classifier.safetensors")
    norms_before = backbone.norm2.weight.detach().clone()
    segmentor.load_backbone(path)
    loaded = backbone.state_dict()
    for key, value in classifier.state_dict().items():
        if not key.startswith(("head.", "norm.")):
            torch.testing.assert_close(loaded[key], value, msg=key)
    torch.testing.assert_close(backbone.norm2.weight, norms_before)  # the classifier has no stage norms
    other = replknet.save_state_dict(replknet.create_model("unireplknet_f").state_dict(), tmp_path / "f.safetensors")
    with pytest.raises(CheckpointError, match="mis-shaped keys"):
        segmentor.load_backbone(other)


def test_a_replknet_only_backbone_option_is_refused_by_name():
    with pytest.raises(ValueError, match="norm_intermediate_features is a RepLKNet option; unireplknet_a"):
        build_segmentor(NAME, num_classes=3, norm_intermediate_features=True)


def test_smp_encoder_and_features_only():
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.UPerNet(encoder_name=f"tu-{NAME}", encoder_weights=None, classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


# ---------------------------------------------------------------------- deploy
def test_convert_official_checkpoint_to_a_fused_folder(classifier, tmp_path):
    source = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in classifier.state_dict().items()}}, source)
    result = convert_checkpoint(source, tmp_path / "fused", NAME, reparam=True, check_size=64)
    assert result.fused and result.relative_diff < 1e-5
    reloaded = load_model(result.output)
    assert is_fused(reloaded) and reloaded.stages[2][0].gamma is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(reloaded(x), classifier(x)) < 1e-5
    (prediction,) = predict(reloaded, [_image(tmp_path)], top_k=2, image_size=64)
    assert len(prediction.top) == 2


def _image(tmp_path: Path) -> Path:
    pixels = (torch.rand(70, 60, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "image.png")
    return tmp_path / "image.png"


def test_export_onnx_of_the_deep_fused_model(classifier, tmp_path):
    pytest.importorskip("onnxruntime")
    result = export_model(classifier, tmp_path / "uni.onnx", "onnx", input_size=(64, 64), opset=17, dynamo=False)
    assert result.relative_diff < 1e-4


def test_bench_builds_and_measures_every_form():
    train_form = build_bench_model(NAME, "train", image_size=64)
    fused, deep = build_bench_model(NAME, "fused", image_size=64), build_bench_model(NAME, "deep", image_size=64)
    assert not is_fused(train_form) and is_fused(fused) and is_fused(deep)
    assert replknet.count_params(fused) == 4_437_300  # the official deploy count
    rows = benchmark([NAME], ["train", "fused", "deep"], ["fp32"], 1, 64, warmup=0, iterations=1)
    assert [r.form for r in rows] == ["train", "fused", "deep"] and all(r.images_per_second > 0 for r in rows)


# ---------------------------------------------------------------------- training
OFFICIAL_CONVNEXT_GROUPS = {
    # UniRepLKNet's optim_factory.get_num_layer_for_convnext, read for depths (3, 3, 27, 3)
    "downsample_layers.0.0.weight": 0,
    "downsample_layers.0.4.bias": 0,
    "stages.0.2.gamma": 1,
    "downsample_layers.1.0.weight": 2,
    "stages.1.0.dwconv.lk_origin.weight": 2,
    "downsample_layers.2.1.weight": 3,
    "stages.2.0.se.down.weight": 3,
    "stages.2.2.act.1.gamma": 3,
    "stages.2.3.pwconv1.1.weight": 4,
    "stages.2.26.pwconv2.2.bias": 11,
    "downsample_layers.3.0.weight": 12,
    "stages.3.2.norm.weight": 12,
    "norm.weight": 13,
    "head.bias": 13,
}


def test_layer_ids_are_the_official_convnext_grouping():
    for name, group in OFFICIAL_CONVNEXT_GROUPS.items():
        assert unireplknet_layer_id(name) == group, name
    with torch.device("meta"):
        model = replknet.create_model("unireplknet_s")
    assert {unireplknet_layer_id(n) for n, _ in model.named_parameters()} == set(range(14))


@pytest.mark.parametrize("name", [NAME, "mbv2_lk_k7"])
def test_layer_decay_groups_of_any_family(name):
    model = replknet.create_model(name, num_classes=10)
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {names[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert len(scales) == len(names)
    assert scales["head.weight" if name == NAME else "classifier.weight"] == 1.0
    if name == NAME:
        for param_name, scale in scales.items():
            assert scale == pytest.approx(0.8 ** (13 - unireplknet_layer_id(param_name))), param_name
        decays = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        # the official rule: only 1-D parameters and biases are not decayed (GRN's 4-D gamma is)
        assert decays["stages.2.0.act.1.gamma"] == 0.05 and decays["stages.2.0.gamma"] == 0.0
    else:
        assert min(scales.values()) < 1.0  # timm's grouping over the model's group_matcher


def test_a_short_training_run_fuses_at_the_end(tmp_path):
    config = get_preset(
        "demo",
        model=NAME,
        image_size=32,
        synthetic_train_size=32,
        synthetic_val_size=16,
        batch_size=16,
        recipe_batch=16,
        epochs=1,
        warmup_epochs=0.5,
        layer_decay=0.8,
        head_init_scale=0.5,
        output=str(tmp_path / "run"),
    )
    result = train(config, progress=False)
    assert result.num_updates == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    # the fused model (branches, BNs, GRN beta and layer scale folded) scores what the trained model scores
    assert result.val_fused["top1"] == result.val["top1"] and result.fused_max_abs_diff < 1e-4
    assert result.params_fused < result.params
    fused = load_file(result.files["model_fused"])
    assert not any("dil_conv" in k or k.endswith("act.1.beta") for k in fused)
    assert result.model.head.weight.shape == (10, 320)


def test_official_recipe_presets():
    a = PRESETS["unireplknet_a_in1k"]
    assert (a.model, a.lr, a.recipe_batch, a.batch_size, a.epochs, a.warmup_epochs) == (
        "unireplknet_a", 4e-3, 4096, 128, 300, 20)  # fmt: skip
    assert (a.drop_path, a.mixup, a.cutmix, a.weight_decay, a.min_lr, a.smoothing, a.ema_decay) == (
        0.0, 0.3, 0.3, 0.05, 1e-6, 0.1, None)  # fmt: skip
    s = PRESETS["unireplknet_s_in1k"]
    assert (s.drop_path, s.mixup, s.cutmix, s.batch_size, s.recipe_batch) == (0.4, 0.8, 1.0, 64, 4096)
    assert PRESETS["unireplknet_n_in1k"].mixup == 0.5 and PRESETS["unireplknet_p_in1k"].drop_path == 0.1
    xl = PRESETS["unireplknet_xl_in22k"]
    assert (xl.num_classes, xl.lr, xl.image_size, xl.drop_path, xl.epochs, xl.warmup_epochs) == (
        21841, 1e-3, 192, 0.2, 90, 5)  # fmt: skip
    ft = PRESETS["unireplknet_l_in22k_in1k_384_ft"]
    assert (ft.lr, ft.recipe_batch, ft.image_size, ft.layer_decay, ft.head_init_scale, ft.weight_decay) == (
        5e-5, 512, 384, 0.8, 0.001, 1e-8)  # fmt: skip
    assert (ft.epochs, ft.warmup_epochs, ft.smoothing, ft.ema_decay, ft.drop_path) == (20, 0, 0.3, 0.9999, 0.3)
    b = PRESETS["unireplknet_b_in22k_in1k_384_ft"]
    assert (b.epochs, b.smoothing, b.ema_decay, b.drop_path, b.mixup, b.cutmix) == (30, 0.1, None, 0.2, 0.0, 0.0)
    assert any("get_num_layer_for_convnext" in note for note in b.notes)
    for name, preset in PRESETS.items():
        if name.startswith("unireplknet_"):
            preset.validate()
            assert replknet.get_model_info(preset.model).family.name == "unireplknet"


@pytest.mark.parametrize("name", ["replknet_tiny", "unireplknet_a", "mbv2_lk_k7_rep3"])
def test_check_command_exercises_every_fold(name, capsys):
    # `replknet check` randomises every affine a fusion folds (BN, LayerNorm, layer scale, GRN): with BN statistics
    # alone, UniRepLKNet's 1e-6 layer scale made the fused and unfused outputs identical and the check empty.
    from replknet.cli.main import main

    assert main(["check", "--model", name, "--image-size", "64"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("max |diff|"))
    max_diff = float(line.split()[2])
    assert 0 < max_diff < 1e-3
