"""`replknet erf` end to end on tiny models and two images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from replknet.cli import erf as erf_cli
from replknet.cli.main import build_parser, main

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_tiny" / "state_dict.pth"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("n01440764/a.JPEG", "n01440764/b.JPEG", "n01443537/c.JPEG"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path, format="JPEG")


@pytest.mark.skipif(not FIXTURE.is_file(), reason="official fixtures not available")
def test_erf_cli_end_to_end(tmp_path, capsys):
    images, out = tmp_path / "val", tmp_path / "out"
    _write_images(images)
    argv = ["erf", "replknet_tiny_k3", f"replknet_tiny={FIXTURE}", "--images", str(images)]
    code = main(argv + ["--num-images", "2", "--image-size", "64", "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "replknet_tiny_k3" in printed and "replknet_tiny@state_dict" in printed and "t=99%" in printed
    assert "holding 50% / 90% / 99%" in printed

    summary = json.loads((out / "area_ratios.json").read_text())
    assert summary["size"] == 64 and summary["thresholds"] == [0.2, 0.3, 0.5, 0.99]
    # ImageFolder order: the first two images are those of the first class folder.
    assert [Path(p).name for p in summary["image_files"]] == ["a.JPEG", "b.JPEG"]
    assert list(summary["models"]) == ["replknet_tiny_k3", "replknet_tiny@state_dict"]
    for label, entry in summary["models"].items():
        assert entry["num_images"] == 2 and entry["num_skipped"] == 0
        assert entry["feature_shape"] == [128, 2, 2]
        contribution = np.load(out / entry["map_file"])
        assert contribution.shape == (64, 64) and np.isfinite(contribution).all() and contribution.min() >= 0
        from replknet.analysis.erf import area_ratios

        expected = [r.side for r in area_ratios(contribution)]
        assert [r["side"] for r in entry["area_ratios"]] == expected
        from replknet.analysis.erf import radial_profile

        profile = radial_profile(contribution)
        assert entry["radial_profile"] == pytest.approx(profile.cumulative.tolist(), abs=1e-5)
        assert entry["radius_holding"]["50%"] == profile.radius_at(0.5) <= entry["radius_holding"]["99%"]
        assert (out / f"{label}.png").read_bytes()[:8] == PNG_MAGIC
    assert summary["models"]["replknet_tiny@state_dict"]["weights"] == "checkpoint"
    assert (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC

    with open(out / "area_ratios.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["replknet_tiny_k3", "replknet_tiny@state_dict"]
    assert rows[1]["checkpoint"] == str(FIXTURE)
    assert float(rows[0]["ratio@0.2"]) == pytest.approx(
        summary["models"]["replknet_tiny_k3"]["area_ratios"][0]["ratio"]
    )


def test_erf_cli_defaults_and_errors(tmp_path, capsys):
    args = build_parser().parse_args(["erf"])
    assert (args.models, args.images, args.num_images, args.image_size) == ([], None, 50, 1024)
    assert erf_cli.DEFAULT_MODELS == ("replknet_tiny_k3", "replknet_tiny")
    from replknet.cli._models import ModelSpec, unique_labels

    assert unique_labels([ModelSpec("a", None), ModelSpec("a", None), ModelSpec("a", "x/w.pth")]) == ["a", "a-2", "a@w"]

    assert main(["erf", "replknet_tiny=missing.pth", "--output", str(tmp_path)]) == 2
    assert "checkpoint not found: missing.pth" in capsys.readouterr().err
    assert main(["erf", "no_such_model", "--num-images", "1", "--image-size", "32", "--output", str(tmp_path)]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["erf", "--image-size", "16"]) == 2
    assert "--image-size must be at least 32" in capsys.readouterr().err
    assert main(["erf", "--images", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")]) == 2
    assert "image folder not found" in capsys.readouterr().err
