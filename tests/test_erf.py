"""ERF analysis: analytic receptive fields, the area ratio on known maps, the official tiny model's golden map."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import replknet
from replknet.analysis.erf import (
    AreaRatio,
    ImageFiles,
    area_ratios,
    compute_erf,
    contribution_map,
    feature_extractor,
    list_images,
    log_normalize,
    reset_zero_init_norms,
)
from replknet.models import RepLKNet
from replknet.ops import DepthwiseConv2d, impl_override
from replknet.testing import relative_error

# ../shared beside the repository (the official fixtures).
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_tiny"
GOLDEN = Path(__file__).parent / "expect" / "erf_official_tiny_128.npy"
# Regenerate the golden map only on purpose: REPLKNET_UPDATE_GOLDEN=1 pytest tests/test_erf.py -k golden
UPDATE_GOLDEN = os.environ.get("REPLKNET_UPDATE_GOLDEN") == "1"


def _positive_dwconv(channels: int, kernel_size: int, module_cls=nn.Conv2d, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    if module_cls is DepthwiseConv2d:
        conv = DepthwiseConv2d(channels, kernel_size)
    else:
        conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(0.1 + torch.rand(conv.weight.shape, generator=generator))
    return conv


def _support(contribution: torch.Tensor) -> tuple[int, int, int, int]:
    rows = torch.nonzero(contribution.sum(1) > 0).flatten()
    cols = torch.nonzero(contribution.sum(0) > 0).flatten()
    return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()


# ---------------------------------------------------------------------- analytic receptive fields
@pytest.mark.parametrize("module_cls", [nn.Conv2d, DepthwiseConv2d], ids=["nn.Conv2d", "DepthwiseConv2d"])
@pytest.mark.parametrize("kernel_size", [3, 7, 13])
def test_single_depthwise_conv_has_exactly_kxk_support(kernel_size, module_cls):
    conv = _positive_dwconv(4, kernel_size, module_cls).double()
    x = 0.1 + torch.rand(1, 4, 33, 33, dtype=torch.float64)
    contribution = contribution_map(feature_extractor(conv), x)
    half = kernel_size // 2
    assert _support(contribution) == (16 - half, 16 + half, 16 - half, 16 + half)
    # d out[c, 16, 16] / d x[c, 16 + u - half, 16 + v - half] = w[c, u, v]: the map is the channel-summed kernel.
    expected = torch.zeros(33, 33, dtype=torch.float64)
    expected[16 - half : 17 + half, 16 - half : 17 + half] = conv.weight.detach().sum((0, 1))
    torch.testing.assert_close(contribution, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("depth", "kernel_size"), [(2, 7), (3, 5), (4, 3)])
def test_stack_of_depthwise_convs_has_support_n_k_minus_1_plus_1(depth, kernel_size):
    # One more conv after the chosen layer: the hook must take layer str(depth - 1)'s output and stop there.
    model = nn.Sequential(*[_positive_dwconv(3, kernel_size, seed=i) for i in range(depth + 1)]).double()
    x = 0.1 + torch.rand(1, 3, 41, 41, dtype=torch.float64)
    contribution = contribution_map(feature_extractor(model, layer=str(depth - 1)), x)
    side = depth * (kernel_size - 1) + 1
    half = side // 2
    assert _support(contribution) == (20 - half, 20 + half, 20 - half, 20 + half)
    assert (contribution[20 - half : 21 + half, 20 - half : 21 + half] > 0).all()
    whole = contribution_map(feature_extractor(model), x)
    assert _support(whole)[1] - _support(whole)[0] + 1 == (depth + 1) * (kernel_size - 1) + 1


# ---------------------------------------------------------------------- the area ratio on known maps
def _official_get_rectangle(data: np.ndarray, thresh: float):
    """The loop of the official ``analyze_erf.py``, written out plainly as the reference."""
    h, w = data.shape
    all_sum = np.sum(data)
    for i in range(1, h // 2):
        selected_area = data[h // 2 - i : h // 2 + 1 + i, w // 2 - i : w // 2 + 1 + i]
        if np.sum(selected_area) / all_sum > thresh:
            return i * 2 + 1, (i * 2 + 1) / h * (i * 2 + 1) / w
    return None


def test_area_ratio_of_a_point_is_the_smallest_square():
    data = np.zeros((64, 64))
    data[32, 32] = 5.0
    for ratio in area_ratios(data):
        assert (ratio.side, ratio.ratio, ratio.reached) == (3, 9 / 64**2, True)


def test_area_ratio_of_a_uniform_map():
    # A fraction s^2 / 100^2 lies in the centred square of side s: > 0.2 first at s = 45, > 0.3 at 55, > 0.5 at 71.
    # The official search stops at side 99 (99^2 / 100^2 = 0.9801), so 0.99 is never reached.
    ratios = area_ratios(np.ones((100, 100)))
    assert [r.side for r in ratios] == [45, 55, 71, 100]
    assert [r.reached for r in ratios] == [True, True, True, False]
    assert ratios[0].ratio == pytest.approx(45**2 / 100**2)
    assert ratios[-1].ratio == 1.0


def test_area_ratio_is_taken_on_the_log_normalised_map():
    # Centre 3x3 = 999 -> log10 = 3 -> 1.0; the ring out to side 5 (16 px) = 9 -> log10 = 1 -> 1/3.
    # Log-normalised: the centre holds 9 / (9 + 16/3) = 0.628 of the total; raw: 8991 / 9135 = 0.984.
    data = np.zeros((31, 31))
    data[13:18, 13:18] = 9.0
    data[14:17, 14:17] = 999.0
    np.testing.assert_allclose(log_normalize(data)[15, 15], 1.0)
    assert [r.side for r in area_ratios(data, thresholds=(0.5, 0.7))] == [3, 5]
    assert [r.side for r in area_ratios(data, thresholds=(0.5, 0.7), normalize=False)] == [3, 3]


@pytest.mark.parametrize("size", [32, 64, 65])
def test_area_ratio_matches_the_official_loop(size):
    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size // 2) ** 2 + (xx - size // 2) ** 2) / (2 * (size / 6) ** 2))
    raw = 50 * blob * rng.uniform(0.5, 1.5, (size, size)) + rng.uniform(0, 0.5, (size, size))
    ours = area_ratios(raw)
    normalised = np.log10(raw + 1)
    normalised = normalised / normalised.max()
    for ratio in ours:
        expected = _official_get_rectangle(normalised, ratio.threshold)
        if expected is None:  # the official script fails here; we report the whole map
            assert (ratio.reached, ratio.side, ratio.ratio) == (False, 32 if size == 32 else 65, 1.0)
            continue
        assert ratio.reached and ratio.side == expected[0]
        assert ratio.ratio == pytest.approx(expected[1], rel=1e-12)


@pytest.mark.parametrize(
    ("data", "thresholds", "message"),
    [
        (np.ones((4, 4, 4)), (0.2,), "2-D"),
        (-np.ones((8, 8)), (0.2,), "non-negative"),
        (np.full((8, 8), np.nan), (0.2,), "finite"),
        (np.zeros((8, 8)), (0.2,), "all zero"),
        (np.ones((8, 8)), (1.5,), r"\(0, 1\)"),
    ],
)
def test_area_ratio_rejects_bad_input(data, thresholds, message):
    with pytest.raises(ValueError, match=message):
        area_ratios(data, thresholds)


# ---------------------------------------------------------------------- compute_erf
class _Square(nn.Module):
    """x * x: its gradient depends on the input, so a NaN input gives a NaN map (a linear model would not)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def test_compute_erf_averages_skips_nan_and_restores_the_model():
    model = nn.Sequential(_positive_dwconv(3, 5), _Square(), _positive_dwconv(3, 5, seed=1)).double().train()
    images = [0.1 + torch.rand(3, 25, 25, dtype=torch.float64) for _ in range(3)]
    images.insert(1, torch.full((3, 25, 25), float("nan"), dtype=torch.float64))
    result = compute_erf(model, images, num_images=3)
    assert (result.num_images, result.num_skipped, result.feature_shape) == (3, 1, (3, 25, 25))
    single = [contribution_map(model, image.unsqueeze(0)).numpy() for image in (images[0], images[2], images[3])]
    np.testing.assert_allclose(result.contribution, np.mean(single, axis=0), rtol=1e-12)
    assert model.training and all(module.training for module in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_compute_erf_stops_at_num_images_and_rejects_bad_input():
    model = nn.Sequential(_positive_dwconv(3, 3), _Square())
    images = [torch.rand(1, 3, 9, 9) for _ in range(4)]
    assert compute_erf(model, images, num_images=2).num_images == 2
    with pytest.raises(ValueError, match="no usable images"):
        compute_erf(model, [torch.full((3, 9, 9), float("nan"))])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        compute_erf(model, [torch.rand(2, 3, 9, 9)])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        compute_erf(model, images, layer="nope")
    with pytest.raises(ValueError, match="4-D"):
        compute_erf(nn.Sequential(nn.Flatten()), images)


def test_default_feature_is_the_last_stage_before_the_final_norm():
    torch.manual_seed(0)
    model = replknet.create_model("replknet_tiny").eval()
    replknet.testing.randomize_bn_stats(model)
    x = torch.randn(1, 3, 48, 48)
    by_default = contribution_map(feature_extractor(model), x)
    by_hook = contribution_map(feature_extractor(model, layer="stages.3"), x)
    torch.testing.assert_close(by_default, by_hook, rtol=0, atol=0)
    assert by_default.shape == (48, 48) and by_default.sum() > 0
    # The final norm is not part of the feature: changing it leaves the map unchanged.
    with torch.no_grad():
        model.norm.running_var.mul_(7.0)
    torch.testing.assert_close(contribution_map(feature_extractor(model), x), by_default, rtol=0, atol=0)


@pytest.mark.parametrize("name", replknet.list_models(family="replknet"))
def test_every_registered_replknet_has_a_default_erf_feature(name):
    # The default feature of every registered model: on the meta device (shapes only; 31L/XL would be slow and
    # large). The gradient path is the same code as for the tiny models tested with real numbers.
    with torch.device("meta"):
        model = replknet.create_model(name)
    model.eval()
    feature = feature_extractor(model)(torch.empty(1, 3, 64, 64, device="meta"))
    assert tuple(feature.shape) == (1, model.num_features, 2, 2)


def test_timm_resnet_default_feature_is_layer4_and_zero_init_reset():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval()
    zero = sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any())
    assert zero > 0
    assert reset_zero_init_norms(model) == zero
    assert all(m.weight.any() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        contribution_map(feature_extractor(model), x),
        contribution_map(feature_extractor(model, layer="layer4"), x),
        rtol=0,
        atol=0,
    )


def test_features_only_model_uses_its_last_feature_map():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", features_only=True, out_indices=(2, 3))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        contribution_map(feature_extractor(model), x),
        contribution_map(feature_extractor(model, layer="layer3"), x),
        rtol=0,
        atol=0,
    )


def test_grad_checkpointing_gives_the_same_map():
    torch.manual_seed(0)
    model = replknet.create_model("replknet_tiny_k3")
    images = [torch.randn(3, 64, 64)]
    plain = compute_erf(model, images).contribution
    checkpointed = compute_erf(model, images, grad_checkpointing=True).contribution
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-5, atol=1e-7 * plain.max())
    assert not model.grad_checkpointing
    with pytest.raises(ValueError, match="set_grad_checkpointing"):
        compute_erf(_positive_dwconv(3, 3), [torch.rand(3, 9, 9)], grad_checkpointing=True)


# ---------------------------------------------------------------------- golden map of the official tiny fixture
def _official_tiny() -> RepLKNet:
    meta = json.loads((FIXTURE / "meta.json").read_text())
    model = RepLKNet(**meta["config"], num_classes=meta["num_classes"], drop_path_rate=0.0)
    state_dict = torch.load(FIXTURE / "state_dict.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model


def _golden_inputs(dtype=torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2022)
    return [torch.randn(3, 128, 128, generator=generator).to(dtype) for _ in range(2)]


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="official fixtures not available")
def test_official_tiny_golden_map():
    model = _official_tiny()
    result = compute_erf(model, _golden_inputs())
    assert (result.num_images, result.feature_shape) == (2, (128, 4, 4))
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        np.save(GOLDEN, result.contribution.astype(np.float32))
        pytest.skip(f"golden map regenerated: {GOLDEN}")
    golden = np.load(GOLDEN)
    assert golden.shape == (128, 128)
    assert relative_error(torch.from_numpy(result.contribution), torch.from_numpy(golden)) < 1e-4
    # The golden map itself is right: float64 with the plain PyTorch convolution gives it too.
    with impl_override("reference"):
        exact = compute_erf(model.double(), _golden_inputs(torch.float64)).contribution
    assert relative_error(torch.from_numpy(golden), torch.from_numpy(exact)) < 1e-4
    ratios = area_ratios(golden)
    assert all(isinstance(r, AreaRatio) and 3 <= r.side <= 128 for r in ratios)
    assert [r.side for r in ratios] == [r.side for r in area_ratios(exact)]


# ---------------------------------------------------------------------- images
def _write_image(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)


def test_list_images_flat_and_imagenet_layouts(tmp_path):
    flat = tmp_path / "flat"
    for name in ("b.png", "a.jpg"):
        _write_image(flat / name, 0)
    (flat / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(flat)] == ["a.jpg", "b.png"]

    nested = tmp_path / "val"
    for name in ("n02/x.png", "n01/z.png", "n01/y.png"):
        _write_image(nested / name, 1)
    assert [f"{p.parent.name}/{p.name}" for p in list_images(nested)] == ["n01/y.png", "n01/z.png", "n02/x.png"]

    _write_image(nested / "stray.png", 2)
    with pytest.raises(ValueError, match="both image files"):
        list_images(nested)
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")


def test_image_files_transform_and_bad_file(tmp_path):
    _write_image(tmp_path / "a.png", 0)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = ImageFiles([tmp_path / "a.png", tmp_path / "broken.jpg"], size=48)
    first = images[0]
    assert first.shape == (3, 48, 48) and first.dtype == torch.float32
    # ImageNet normalisation: a [0, 1] image maps into [(0 - mean) / std, (1 - mean) / std].
    assert first.min() >= -0.485 / 0.229 - 1e-6 and first.max() <= (1 - 0.406) / 0.225 + 1e-6
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        images[1]


def test_bundled_photos_are_real_photographs():
    from PIL import Image

    from replknet.data.photos import list_photos, photos_dir

    photos = list_photos()
    assert len(photos) >= 4
    assert (photos_dir() / "LICENSES.md").is_file()
    licences = (photos_dir() / "LICENSES.md").read_text()
    for photo in photos:
        assert photo.name in licences
        with Image.open(photo) as image:
            assert image.mode == "RGB" and max(image.size) <= 512
            assert np.asarray(image).std() > 20  # a photograph, not a flat placeholder


def test_radial_profile_against_analytic_maps():
    from replknet.analysis.erf import log_normalize, radial_profile

    size, sigma = 201, 12.0
    yy, xx = np.mgrid[:size, :size]
    gaussian = np.exp(-((yy - 100) ** 2 + (xx - 100) ** 2) / (2 * sigma**2))
    profile = radial_profile(gaussian)
    for r in (5, 10, 20, 30):  # a 2-D Gaussian holds 1 - exp(-r^2 / 2 sigma^2) within radius r
        assert profile.cumulative[r] == pytest.approx(1 - np.exp(-(r**2) / (2 * sigma**2)), abs=5e-3)
    assert profile.radius_at(0.5) == int(np.ceil(sigma * np.sqrt(2 * np.log(2))))  # 14.13 -> 15

    point = np.zeros((9, 9))
    point[4, 4] = 2.0
    assert radial_profile(point).cumulative[0] == 1.0
    offset = np.zeros((11, 11))
    offset[5 + 3, 5 + 4] = 1.0  # exactly 5 px from the centre
    cumulative = radial_profile(offset).cumulative
    assert cumulative[4] == 0.0 and cumulative[5] == 1.0
    ring = np.zeros((41, 41))
    ring[20, 30] = ring[10, 20] = 1.0  # both 10 px away
    ring[20, 22] = 2.0  # 2 px away
    cumulative = radial_profile(ring).cumulative
    assert cumulative[1] == 0.0 and cumulative[2] == 0.5 and cumulative[9] == 0.5 and cumulative[10] == 1.0
    assert radial_profile(ring, center=(20, 30)).cumulative[0] == 0.25
    logged = radial_profile(gaussian, normalize=True)
    assert np.allclose(logged.cumulative, radial_profile(log_normalize(gaussian)).cumulative)


def test_radial_profile_errors():
    from replknet.analysis.erf import radial_profile

    with pytest.raises(ValueError, match="non-negative"):
        radial_profile(-np.ones((4, 4)))
    with pytest.raises(ValueError, match="sums to zero"):
        radial_profile(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="outside"):
        radial_profile(np.ones((4, 4)), center=(4, 0))
    with pytest.raises(ValueError, match="2-D"):
        radial_profile(np.ones(4))
