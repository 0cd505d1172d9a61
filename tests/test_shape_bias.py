"""Shape bias on the 80-image cue-conflict sample with controlled models whose right answers are known by hand.

The sample (../shared/data/cue-conflict-sample) has 5 images in each of the 16 categories; one of them,
car/car4-car2.png, has the same shape and texture category and is excluded, so 79 images are scored.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.functional import pil_to_tensor

import replknet
from replknet.analysis import (
    CUE_CONFLICT_CATEGORIES,
    ShapeBiasResult,
    Stimulus,
    StimulusLayoutError,
    evaluate_shape_bias,
    find_stimuli,
    imagenet_16class_indices,
    logits_to_decisions,
    parse_stimulus_name,
    probabilities_to_decisions,
    shape_bias_from_decisions,
    transform_for_model,
)
from replknet.cli.main import main as cli_main
from replknet.testing import randomize_bn_stats

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE = SHARED / "data" / "cue-conflict-sample"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"cue-conflict sample not found at {SAMPLE} (the shared data folder is absent)"
)
INDICES = imagenet_16class_indices()
FIRST_EIGHT = set(CUE_CONFLICT_CATEGORIES[:8])  # airplane bear bicycle bird boat bottle car cat


def _image_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


class LookupModel(nn.Module):
    """Recognises each stimulus by its pixels and puts all probability on one chosen ImageNet class."""

    def __init__(self, answers: dict[str, int]) -> None:
        super().__init__()
        self.answers = answers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.full((images.shape[0], 1000), -1.0e4)  # softmax: exp(-1e4) is exactly 0, even in float64
        for row, image in enumerate(images):
            logits[row, self.answers[_image_key(image)]] = 0.0
        return logits


def lookup_model(stimuli, keys, answer) -> LookupModel:
    """``answer(stimulus, position_in_its_directory) -> category``; each answer uses a varying class index."""
    positions = {}
    for stimulus in stimuli:
        positions.setdefault(stimulus.shape, []).append(stimulus.path.name)
    table = {}
    for number, (stimulus, key) in enumerate(zip(stimuli, keys)):
        position = sorted(positions[stimulus.shape]).index(stimulus.path.name)
        indices = INDICES[answer(stimulus, position)]
        table[key] = indices[(7 * number) % len(indices)]
    return LookupModel(table)


def neither(stimulus: Stimulus) -> str:
    return next(c for c in CUE_CONFLICT_CATEGORIES if c not in (stimulus.shape, stimulus.texture))


@pytest.fixture(scope="module")
def sample():
    stimuli = find_stimuli(SAMPLE)
    keys = []
    for stimulus in stimuli:
        from PIL import Image

        with Image.open(stimulus.path) as image:
            keys.append(_image_key(pil_to_tensor(image.convert("RGB"))))
    assert len(set(keys)) == len(keys), "two stimuli have identical pixels: the lookup model needs distinct images"
    return stimuli, keys


def run_lookup(sample, answer, **kwargs) -> ShapeBiasResult:
    stimuli, keys = sample
    return evaluate_shape_bias(
        lookup_model(stimuli, keys, answer), SAMPLE, pil_to_tensor, **{"batch_size": 16, **kwargs}
    )


# ---------------------------------------------------------------- the sample and the layout


@needs_sample
def test_sample_layout():
    stimuli = find_stimuli(SAMPLE)  # the LICENSE file beside the category folders is ignored
    assert len(stimuli) == 80
    assert sorted({s.shape for s in stimuli}) == list(CUE_CONFLICT_CATEGORIES)
    assert all(sum(s.shape == c for s in stimuli) == 5 for c in CUE_CONFLICT_CATEGORIES)
    assert [s.path.name for s in stimuli if not s.is_conflict] == ["car4-car2.png"]


def test_shipped_mapping_matches_reference():
    assert len(INDICES) == 16 and sum(len(v) for v in INDICES.values()) == 207
    reference = SHARED / "reference" / "imagenet-16class-indices.json"
    if reference.is_file():
        assert INDICES == json.loads(reference.read_text())


def test_parse_stimulus_name():
    stimulus = parse_stimulus_name("cat/cat10-keyboard1.png")
    assert (stimulus.shape, stimulus.texture, stimulus.is_conflict) == ("cat", "keyboard", True)
    assert not parse_stimulus_name("car/car4-car2.png").is_conflict


@pytest.mark.parametrize(
    "name, message",
    [
        ("cat/cat10keyboard1.png", "does not fit"),
        ("cat/cat-keyboard.png", "does not fit"),
        ("cat/cat10-keyboard1-extra2.png", "does not fit"),
        ("cat/cat10-zebra1.png", "unknown texture category 'zebra'"),
        ("zebra/zebra1-cat2.png", "unknown shape category 'zebra'"),
        ("cat/dog1-cat2.png", "does not match its directory 'cat'"),
        ("cat/cat1-dog2.txt", "not an image"),
    ],
)
def test_parse_errors_name_the_problem(name, message):
    with pytest.raises(StimulusLayoutError, match=message) as error:
        parse_stimulus_name(name)
    assert Path(name).name in str(error.value)


def _make_tree(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_find_stimuli_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_stimuli(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StimulusLayoutError, match="no stimuli found"):
        find_stimuli(empty)
    _make_tree(tmp_path / "only-empty-categories", ["cat/.DS_Store", "README.md"])
    (tmp_path / "only-empty-categories" / "dog").mkdir()
    with pytest.raises(StimulusLayoutError, match="no stimuli found"):
        find_stimuli(tmp_path / "only-empty-categories")
    _make_tree(tmp_path / "unknown-dir", ["cat/cat1-dog2.png", "zebra/zebra1-dog2.png"])
    with pytest.raises(StimulusLayoutError, match="unknown category directory 'zebra'"):
        find_stimuli(tmp_path / "unknown-dir")
    _make_tree(tmp_path / "stray-file", ["cat/cat1-dog2.png", "cat/notes.png"])
    with pytest.raises(StimulusLayoutError, match="notes.png: file name does not fit"):
        find_stimuli(tmp_path / "stray-file")
    good = _make_tree(tmp_path / "good", ["LICENSE", "cat/cat1-dog2.png", "cat/.hidden", "dog/dog3-dog1.jpg"])
    assert [(s.shape, s.texture) for s in find_stimuli(good)] == [("cat", "dog"), ("dog", "dog")]


# ---------------------------------------------------------------- the 16-class decision


def test_decision_is_best_mean_probability_not_best_class():
    probabilities = torch.zeros(2, 1000, dtype=torch.float64)
    probabilities[0, 152] = 0.5  # one dog class: dog score 0.5 / 109
    probabilities[0, 499] = 0.1  # knife has one class: knife score 0.1
    probabilities[1, INDICES["bird"]] = 0.01  # bird total 0.49 but mean 0.01
    probabilities[1, 404] = 0.02  # airplane mean 0.02
    assert probabilities_to_decisions(probabilities) == ["knife", "airplane"]


def test_logits_to_decisions_against_float64_numpy():
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(64, 1000, generator=generator, dtype=torch.float64)
    values = logits.numpy()
    probabilities = np.exp(values - values.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = list(INDICES)
    expected = [names[int(np.argmax([row[INDICES[n]].mean() for n in names]))] for row in probabilities]
    assert logits_to_decisions(logits) == expected
    assert logits_to_decisions(logits.float()) == expected


def test_decision_index_errors():
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        probabilities_to_decisions(torch.zeros(1000))
    with pytest.raises(ValueError, match="in \\[0, 10\\)"):
        probabilities_to_decisions(torch.zeros(2, 10))


# ---------------------------------------------------------------- counting, for any category set


def test_counts_on_synthetic_integer_labels():
    triples = [(0, 1, 0), (1, 0, 0), (2, 2, 2), (1, 2, 1), (0, 2, 1)]
    result = shape_bias_from_decisions(triples, categories=[0, 1, 2])
    assert result.num_excluded == 1
    assert (result.overall.num_images, result.overall.shape_hits, result.overall.texture_hits) == (4, 2, 1)
    assert result.shape_bias == 2 / 3
    assert result.shape_accuracy == 2 / 4 and result.texture_accuracy == 1 / 4
    assert result.per_category[0].shape_bias == 1.0 and result.per_category[1].shape_bias == 0.5
    assert math.isnan(result.per_category[2].shape_bias) and result.per_category[2].num_images == 0
    summary = result.to_dict()
    json.dumps(summary, allow_nan=False)  # NaN is written as null
    assert summary["per_category"]["2"]["shape_bias"] is None


def test_counting_errors():
    with pytest.raises(ValueError, match="zero images"):
        shape_bias_from_decisions([])
    with pytest.raises(ValueError, match="decision label 'zebra'"):
        shape_bias_from_decisions([("cat", "dog", "zebra")], categories=["cat", "dog"])
    with pytest.raises(ValueError, match="no cue conflict"):
        shape_bias_from_decisions([("cat", "cat", "cat")])


# ---------------------------------------------------------------- controlled models on the real sample


@needs_sample
def test_shape_answering_model_scores_one(sample):
    stimuli, keys = sample
    model = lookup_model(stimuli, keys, lambda s, _: s.shape)
    model.train()
    result = evaluate_shape_bias(model, SAMPLE, pil_to_tensor, batch_size=32)
    assert model.training, "evaluation must restore the model's mode"
    assert result.shape_bias == 1.0
    assert (result.overall.num_images, result.overall.shape_hits, result.overall.texture_hits) == (79, 79, 0)
    assert result.shape_accuracy == 1.0 and result.texture_accuracy == 0.0 and result.num_excluded == 1
    assert all(result.per_category[c].shape_bias == 1.0 for c in CUE_CONFLICT_CATEGORIES)
    assert result.per_category["car"].num_images == 4
    assert len(result.records) == 80 and all(r["decision"] == r["shape"] for r in result.records)


@needs_sample
def test_texture_answering_model_scores_zero(sample):
    result = run_lookup(sample, lambda s, _: s.texture)
    assert result.shape_bias == 0.0
    assert (result.overall.shape_hits, result.overall.texture_hits) == (0, 79)
    assert result.texture_accuracy == 1.0 and result.shape_accuracy == 0.0
    assert all(result.per_category[c].shape_bias == 0.0 for c in CUE_CONFLICT_CATEGORIES)


@needs_sample
def test_mixture_by_category(sample):
    # shape for the first eight categories (40 images, car4-car2 excluded -> 39), texture for the other eight (40)
    result = run_lookup(sample, lambda s, _: s.shape if s.shape in FIRST_EIGHT else s.texture)
    assert (result.overall.shape_hits, result.overall.texture_hits) == (39, 40)
    assert result.shape_bias == 39 / 79
    assert result.shape_accuracy == 39 / 79 and result.texture_accuracy == 40 / 79
    for category in CUE_CONFLICT_CATEGORIES:
        assert result.per_category[category].shape_bias == (1.0 if category in FIRST_EIGHT else 0.0)


@needs_sample
def test_mixture_by_position_with_neither_answers(sample):
    # in each directory (files sorted by name): 1st, 2nd -> shape; 3rd -> texture; 4th -> neither; 5th -> texture.
    # car: car1, car2 shape; car4-car2 (3rd) excluded; car6 neither; car8 texture -> 2 shape, 1 texture.
    # other 15 categories: 2 shape, 2 texture each. Totals: shape 32, texture 31, over 79 images.
    def answer(stimulus, position):
        return [stimulus.shape, stimulus.shape, stimulus.texture, neither(stimulus), stimulus.texture][position]

    result = run_lookup(sample, answer, batch_size=7)
    assert (result.overall.num_images, result.overall.shape_hits, result.overall.texture_hits) == (79, 32, 31)
    assert result.shape_bias == 32 / 63
    assert result.shape_accuracy == 32 / 79 and result.texture_accuracy == 31 / 79
    assert result.per_category["car"].shape_bias == 2 / 3
    assert all(result.per_category[c].shape_bias == 0.5 for c in CUE_CONFLICT_CATEGORIES if c != "car")


@needs_sample
def test_model_that_never_answers_shape_or_texture(sample):
    result = run_lookup(sample, lambda s, _: neither(s))
    assert math.isnan(result.shape_bias)
    assert result.shape_accuracy == 0.0 and result.texture_accuracy == 0.0
    assert result.to_dict(with_records=False)["shape_bias"] is None


# ---------------------------------------------------------------- models that do not fit


class TenOutputs(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], 10)


@needs_sample
def test_model_without_1000_outputs_is_rejected():
    with pytest.raises(ValueError, match=r"returned \(2, 10\).*\(N, 1000\) ImageNet logits"):
        evaluate_shape_bias(TenOutputs(), SAMPLE, pil_to_tensor, batch_size=2)


def test_model_with_wrong_num_classes_is_rejected_before_reading_images():
    model = replknet.create_model("replknet_tiny_k3", num_classes=10)
    missing = [Stimulus(Path("/nonexistent/cat/cat1-dog2.png"), "cat", "dog")]
    with pytest.raises(ValueError, match="has 10 outputs; shape bias needs a classifier with 1000"):
        evaluate_shape_bias(model, missing, pil_to_tensor)


def test_empty_directory_is_rejected(tmp_path):
    with pytest.raises(StimulusLayoutError, match="no stimuli found"):
        evaluate_shape_bias(TenOutputs(), tmp_path, pil_to_tensor)


class AlwaysFirstClass(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], self.num_classes)
        logits[:, 0] = 5.0
        return logits


@needs_sample
def test_custom_category_set_with_its_own_outputs(tmp_path):
    # a synthetic two-category set: a model with 4 outputs whose class 0 belongs to "circle"
    source = SAMPLE / "cat" / "cat1-airplane1.png"
    for name in ("circle/circle1-square2.png", "square/square1-circle1.png", "square/square2-square1.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(source, tmp_path / name)
    mapping = {"circle": [0, 1], "square": [2, 3]}
    result = evaluate_shape_bias(AlwaysFirstClass(4), tmp_path, pil_to_tensor, category_indices=mapping)
    assert [r["decision"] for r in result.records] == ["circle"] * 3
    assert (result.overall.shape_hits, result.overall.texture_hits, result.num_excluded) == (1, 1, 1)
    assert result.shape_bias == 0.5
    with pytest.raises(ValueError, match="has 4 outputs"):
        evaluate_shape_bias(AlwaysFirstClass(4), tmp_path, pil_to_tensor)  # the ImageNet mapping needs 1000
    with pytest.raises(StimulusLayoutError, match="unknown category directory 'circle'"):
        find_stimuli(tmp_path)


# ---------------------------------------------------------------- the command line


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


@needs_sample
def test_cli_reproduces_decisions_of_checkpointed_weights(tmp_path, capsys):
    stimuli_dir = tmp_path / "stimuli"
    shutil.copytree(SAMPLE / "car", stimuli_dir / "car")  # 5 images, one excluded
    torch.manual_seed(1)
    model = randomize_bn_stats(replknet.create_model("replknet_tiny_k3")).eval()
    transform = transform_for_model(model)
    # a random network answers the same for every image; centring the head on these images' mean feature makes
    # its answers differ between images, so only the right weights and preprocessing reproduce them
    files = sorted(stimuli_dir.glob("*/*.png"))
    with torch.no_grad():
        features = model.forward_head(model.forward_features(torch.stack([transform(_open(f)) for f in files])), True)
        model.head.bias.copy_(-model.head.weight @ features.mean(dim=0))  # features: (5, C)
        expected = logits_to_decisions(model.head(features))
    assert len(set(expected)) >= 3
    checkpoint = replknet.save_state_dict(model.state_dict(), tmp_path / "tiny.safetensors")

    rc = cli_main(
        [
            "shape-bias",
            str(stimuli_dir),
            f"replknet_tiny_k3={checkpoint}",
            "--json",
            str(tmp_path / "out.json"),
            "--plot",
            str(tmp_path / "out.png"),
            "--no-progress",
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "out.json").read_text())["models"]["replknet_tiny_k3@tiny"]
    assert report["checkpoint"] == str(checkpoint.resolve())
    assert [record["file"] for record in report["decisions"]] == [f"car/{f.name}" for f in files]
    assert [record["decision"] for record in report["decisions"]] == expected
    assert report["num_images"] == 4 and report["num_excluded"] == 1
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "replknet_tiny_k3@tiny" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    assert cli_main(["shape-bias", str(tmp_path), "a", "b", "--checkpoint", "x.pth"]) == 2
    assert "--checkpoint goes with one MODEL at most" in capsys.readouterr().err
    _make_tree(tmp_path / "bad", ["cat/cat1_dog2.png"])
    assert cli_main(["shape-bias", str(tmp_path / "bad"), "replknet_tiny_k3"]) == 2
    assert "cat1_dog2.png: file name does not fit" in capsys.readouterr().err
    assert cli_main(["shape-bias", str(tmp_path / "bad"), "replknet_tiny_k3=x.pth", "--checkpoint", "y.pth"]) == 2
    assert "has its checkpoint already" in capsys.readouterr().err


# ---------------------------------------------------------------- the figure


def test_plot_rows_and_markers(tmp_path):
    from replknet.analysis.shape_bias_plot import plot_shape_bias

    results = {
        "shape-ish": shape_bias_from_decisions([("cat", "dog", "cat"), ("dog", "cat", "dog")], ["cat", "dog"]),
        "texture-ish": shape_bias_from_decisions([("cat", "dog", "dog"), ("dog", "cat", "cat")], ["cat", "dog"]),
    }
    figure = plot_shape_bias(results, tmp_path / "figure.pdf")
    axis = figure.axes[0]
    assert [tick.get_text() for tick in axis.get_yticklabels()] == ["shape-ish", "texture-ish"]
    # x is the fraction of texture decisions: the shape-biased model's markers sit at 0, the other's at 1
    xs = [collection.get_offsets()[0][0] for collection in axis.collections]
    assert xs == [0.0, 0.0, 1.0, 1.0]
    assert (tmp_path / "figure.pdf").stat().st_size > 0
    with pytest.raises(ValueError, match="no results"):
        plot_shape_bias({})
