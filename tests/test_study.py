"""`replknet study`: statistics, the results schema, every study's plumbing on tiny settings, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from replknet.study import STUDIES, TASKS, StudyOptions, format_table, get_study, run_study, summarize
from replknet.study.results import paired_difference, validate_results

# Budgets small enough for a test: 32 px images, a handful of samples, one epoch / two iterations.
TINY = {
    "pathfinder": dataclasses.replace(
        TASKS["pathfinder"],
        options={"preset": "short"},
        quick=dict(image_size=32, train_size=16, val_size=8, epochs=1, batch_size=8, lr=1e-3),
    ),
    "longrange": dataclasses.replace(
        TASKS["longrange"],
        options={"num_regions": 2, "min_region_fraction": 0.2},
        quick=dict(image_size=32, train_size=8, val_size=4, iterations=2, batch_size=4, lr=1e-3),
    ),
    "shapes": dataclasses.replace(
        TASKS["shapes"], quick=dict(image_size=32, train_size=20, val_size=10, epochs=1, batch_size=10, lr=1e-3)
    ),
    "timing": dataclasses.replace(TASKS["timing"], quick=dict(image_size=32, batch_size=1, rounds=1)),
}
TINY["pathfinder_short"] = dataclasses.replace(TINY["pathfinder"], name="pathfinder_short")


def _options(tmp_path, name="run", seeds=(0,), **changes) -> StudyOptions:
    return StudyOptions(quick=True, seeds=seeds, output=str(tmp_path / name), progress=False, tasks=TINY, **changes)


def test_summarize_and_paired_difference_known_numbers():
    summary = summarize([1.0, 2.0, 3.0])
    assert summary["n"] == 3 and summary["mean"] == 2.0 and summary["std"] == 1.0
    half = 4.303 / math.sqrt(3)  # t(0.975, 2 dof) * std / sqrt(n)
    assert summary["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert summarize([5.0]) == {"n": 1, "mean": 5.0, "std": 0.0, "ci95": None}
    assert summarize([])["mean"] is None
    diff = paired_difference({0: 10.0, 1: 12.0, 2: 11.0}, {0: 9.0, 1: 9.0, 3: 0.0})  # seed 2/3 unpaired
    assert diff["seeds"] == [0, 1] and diff["per_seed"] == [1.0, 3.0]
    assert diff["mean"] == 2.0 and diff["std"] == pytest.approx(math.sqrt(2))


def test_every_study_is_defined_consistently():
    for name, study in STUDIES.items():
        assert get_study(name) is study
        labels = [arm.label for arm in study.arms]
        assert len(set(labels)) == len(labels), name
        for comparison in study.comparisons:
            assert comparison.better in labels and comparison.than in labels and comparison.task in study.tasks
            # both arms run on the comparison's task (a comparison with no runs would print an empty row); the
            # quick study keeps every comparison the paper gives a number for, and at least one per study
            assert study.runs(comparison), (name, comparison)
            if comparison.paper is not None:
                assert study.runs(comparison, quick=True), (name, comparison)
        assert not study.comparisons or any(study.runs(c, quick=True) for c in study.comparisons), name
    # guideline 3 as the paper states it stays in the quick study: 9 -> 13 loses without re-param, the 3x3 fixes 13
    reparam = get_study("reparam")
    quick = {(c.better, c.than) for c in reparam.comparisons if reparam.runs(c, quick=True)}
    assert quick == {("k13", "k9"), ("k13_rep3", "k13")}
    with pytest.raises(ValueError, match="unknown study"):
        get_study("guideline-6")


@pytest.fixture(scope="module")
def shortcut_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return run_study("shortcut", _options(out, seeds=(0, 1))), out / "run"


def test_results_schema_and_files(shortcut_results):
    results, out = shortcut_results
    validate_results(results)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["study"] == "shortcut" and on_disk["setting"] == "quick" and on_disk["seeds"] == [0, 1]
    arm = on_disk["arms"]["k13"]
    assert arm["model"] == "mbv2_lk_k13" and arm["metric"] == "top1" and arm["task"] == "pathfinder"
    assert arm["settings"]["kwargs"] == {"width_multiplier": 0.5} and arm["settings"]["epochs"] == 1
    assert len(arm["per_seed"]) == 2 and arm["mean"] == pytest.approx(np.mean(arm["per_seed"]))
    assert arm["std"] == pytest.approx(np.std(arm["per_seed"], ddof=1))
    first = on_disk["comparisons"][0]
    assert (first["better"], first["than"], first["paper"]) == ("k13", "k3", 0.77)
    expected = [a - b for a, b in zip(on_disk["arms"]["k13"]["per_seed"], on_disk["arms"]["k3"]["per_seed"])]
    assert first["per_seed"] == pytest.approx(expected)
    assert on_disk["paper"]["imagenet_top1"]["k13_noshortcut"] == 53.98
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "study,task,arm,model,seed,metric,value" and len(rows) == 1 + 4 * 2
    assert (out / "summary.csv").is_file() and (out / "arms.png").stat().st_size > 1000
    table = format_table(on_disk)
    assert "k13 - k3" in table and "0.77" in table
    for broken in ({**on_disk, "arms": {}}, {k: v for k, v in on_disk.items() if k != "paper"}):
        with pytest.raises(ValueError):
            validate_results(broken)
    bad_mean = json.loads(json.dumps(on_disk))
    bad_mean["arms"]["k3"]["mean"] += 1.0
    with pytest.raises(ValueError, match="mean"):
        validate_results(bad_mean)


def test_resume_never_redoes_a_finished_arm_seed(shortcut_results, monkeypatch):
    from replknet.study import runner

    results, out = shortcut_results
    calls = []
    original = runner.RUNNERS["classification"]

    def counting(study, task, arm, seed, run_dir, options):
        calls.append((arm.label, seed))
        return original(study, task, arm, seed, run_dir, options)

    monkeypatch.setitem(runner.RUNNERS, "classification", counting)
    again = run_study("shortcut", StudyOptions(quick=True, seeds=(0, 1), output=str(out), progress=False, tasks=TINY))
    assert calls == []
    assert again["arms"]["k3"]["per_seed"] == results["arms"]["k3"]["per_seed"]
    (out / "runs" / "pathfinder" / "k13" / "seed1" / runner.RUN_RECORD).unlink()
    rerun = run_study("shortcut", StudyOptions(quick=True, seeds=(0, 1), output=str(out), progress=False, tasks=TINY))
    assert calls == [("k13", 1)]
    # Its training had finished (summary.json): it is read back, not trained again, and gives the same number.
    assert rerun["arms"]["k13"]["per_seed"] == results["arms"]["k13"]["per_seed"]


def test_results_say_how_the_runs_ran_when_rebuilt(shortcut_results, tmp_path):
    """Results rebuilt from finished runs (every arm-seed done) report the runs' process count, not the command's."""
    import shutil

    from replknet.study import runner

    _, out = shortcut_results
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for path in copy.glob("runs/*/*/seed*/" + runner.RUN_RECORD):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "processes": 2}))
    rebuilt = run_study("shortcut", _options(tmp_path, seeds=(0, 1)))
    assert rebuilt["processes"] == 2
    path = next(copy.glob("runs/pathfinder/k3/seed0/" + runner.RUN_RECORD))
    path.write_text(json.dumps({**json.loads(path.read_text()), "processes": 1}))
    assert run_study("shortcut", _options(tmp_path, seeds=(0, 1)))["processes"] == [1, 2]


@pytest.mark.parametrize("name", ["efficiency", "reparam", "small-maps", "erf", "shape-bias", "calibration"])
def test_study_plumbing(tmp_path, name):
    results = run_study(name, _options(tmp_path))
    validate_results(results)
    study = get_study(name)
    assert len(results["arms"]) == sum(arm.runs_on(task, quick=True) for arm in study.arms for task in study.tasks)
    assert len(results["comparisons"]) == sum(study.runs(c, quick=True) for c in study.comparisons)
    for arm in results["arms"].values():
        assert len(arm["per_seed"]) == 1 and arm["per_seed"][0] is not None
    if name == "efficiency":
        extra = results["arms"]["pytorch"]["extra"]
        assert 0 < results["arms"]["pytorch"]["mean"] < 100 and extra["depthwise_ms"] < extra["total_ms"]
    if name == "small-maps":
        extra = results["arms"]["k3@longrange"]["extra"]
        assert {"far_pixel_accuracy", "far_chance", "near_pixel_accuracy"} <= set(extra)
        assert extra["far_chance"] == 25.0
    if name == "erf":
        assert results["arms"]["k31"]["metric"] == "erf_area_ratio_t50"
        extra = results["arms"]["k31"]["extra"]
        assert extra["area_ratio_percent"]["t50"] == pytest.approx(results["arms"]["k31"]["mean"])
        assert len(extra["radial_profile"]) > 10 and extra["radial_profile"][-1] == pytest.approx(1.0)
        assert (tmp_path / "run" / "erf_profiles.png").is_file()
        assert (tmp_path / "run" / "runs" / "pathfinder" / "k31" / "seed0" / "erf.npy").is_file()
    if name == "shape-bias":
        assert 0.0 <= results["arms"]["k31"]["mean"] <= 1.0


def test_downstream_plumbing_two_tasks(tmp_path, capsys):
    from replknet.cli.main import main

    results = run_study("downstream", _options(tmp_path))
    validate_results(results)
    assert set(results["task"]) == {"pathfinder", "longrange"}
    # --quick trains only the arms of the comparisons with the paper's numbers: k7 and k13 are full only
    study = get_study("downstream")
    for label in ("k7", "k13"):
        assert study.arm(label).runs_on("longrange") and not study.arm(label).runs_on("longrange", quick=True)
        assert not (tmp_path / "run" / "runs" / "pathfinder" / label).exists()
    assert sorted(results["arms"]) == sorted(
        f"{arm}@{task}" for arm in ("k3", "k31", "mbv2_k3", "mbv2_k9") for task in ("pathfinder", "longrange")
    )
    assert len(results["comparisons"]) == 4 and all(c["paper"] is not None for c in results["comparisons"])
    assert len(study.comparisons) == 6  # the full study also compares k31 with k13 on both tasks
    assert "k31@longrange" in results["arms"] and results["arms"]["k31@longrange"]["metric"] == "miou"
    paper = {(c["better"], c["than"]): c["paper"] for c in results["comparisons"]}
    assert paper[("k31@longrange", "k3@longrange")] == 3.12 and paper[("mbv2_k9@pathfinder", "mbv2_k3@pathfinder")]

    # `replknet eval` / `seg-eval` of an arm's run folder rebuild its built-in task (Pathfinder, or the long-range
    # segmentation with the run's generator settings) and print the number the run and the study recorded.
    runs = tmp_path / "run" / "runs"
    capsys.readouterr()
    pathfinder_run = str(runs / "pathfinder" / "k31" / "seed0")
    assert main(["eval", "--checkpoint", pathfinder_run, "--json", "-", "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["data"] == "pathfinder" and metrics["image_size"] == 32 and metrics["images"] == 8
    assert metrics["top1"] == pytest.approx(metrics["recorded_top1"], abs=1e-6)
    assert metrics["top1"] == pytest.approx(results["arms"]["k31@pathfinder"]["per_seed"][0], abs=1e-6)
    longrange_run = str(runs / "longrange" / "k31" / "seed0")
    assert main(["seg-eval", "--checkpoint", longrange_run, "--json", "-", "--no-progress"]) == 0
    seg = json.loads(capsys.readouterr().out)
    assert seg["mIoU"] == pytest.approx(seg["recorded_mIoU"], abs=1e-6)
    assert 100 * seg["mIoU"] == pytest.approx(results["arms"]["k31@longrange"]["per_seed"][0], abs=1e-4)  # percent


def test_user_data_folders(tmp_path):
    from replknet.data.synthetic import write_image_folder

    write_image_folder(tmp_path / "shapes", image_size=32, split_sizes={"train": 20, "val": 10, "cue_conflict": 10})
    results = run_study("shape-bias", _options(tmp_path, data=(str(tmp_path / "shapes"),)))
    assert results["task"]["shapes"]["data"] == str(tmp_path / "shapes")
    assert 0.0 <= results["arms"]["k3"]["per_seed"][0] <= 1.0
    with pytest.raises(ValueError, match="segmentation folder"):
        run_study("small-maps", _options(tmp_path, name="x", data=(str(tmp_path / "shapes"),)))
    with pytest.raises(ValueError, match="neither an ImageFolder"):
        run_study("shortcut", _options(tmp_path, name="y", data=(str(tmp_path),)))


def test_cli_list_and_errors(capsys):
    from replknet.cli.main import main

    assert main(["study", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("efficiency", "shortcut", "reparam", "downstream", "small-maps", "erf", "shape-bias"):
        assert name in listed
    assert "k7 (full only), k13 (full only)" in listed
    assert main(["study", "guideline-6"]) == 2
    assert "unknown study" in capsys.readouterr().err


def test_calibration_local_model_receptive_field_is_19_px():
    """The local control's feature units see 19 x 19 pixels (stem 3x3/2, dw 3x3, 1x1, dw 3x3/2, one 3x3 block):
    the union of input-gradient supports over random inputs stays inside that square and fills it."""
    import torch

    import replknet
    from replknet.study.definitions import CALIBRATION

    arm = CALIBRATION.arm("local")
    model = replknet.create_model(arm.model, num_classes=2, **arm.kwargs).eval()
    # forward_features: (8, C, 16, 16), stride 4
    assert _input_support(model.forward_features, torch.randn(8, 3, 64, 64), (8, 8)) == (19, 19)
    # Two marker pixels of the long setting are >= 32 - 2 x 2.5 = 27 px apart; two pixels of a 19 x 19 window <= 18 sqrt 2.
    assert 18 * math.sqrt(2) < 32 - 2 * 2.5


def _input_support(module, x, unit) -> tuple[int, int]:
    """Height and width of the box of input pixels that reach ``module(x)[:, :, unit]`` (random inputs)."""
    x = x.clone().requires_grad_(True)
    module(x)[:, :, unit[0], unit[1]].abs().sum().backward()
    support = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    low, high = support.min(dim=0).values.tolist(), support.max(dim=0).values.tolist()
    return high[0] - low[0] + 1, high[1] - low[1] + 1


def test_calibration_references_see_the_whole_image_after_their_first_block():
    """The references' global view from the first layers: after the stem and the first RepLK block, a unit in the
    corner of the 16 x 16 map already depends on every pixel of a 64 px image (the far corner included)."""
    import torch

    import replknet
    from replknet.study.definitions import CALIBRATION

    x = torch.randn(2, 3, 64, 64)
    for label in ("reference", "reference_seg"):
        arm = CALIBRATION.arm(label)
        model = replknet.create_model(arm.model, num_classes=2, **arm.kwargs).eval()
        assert _input_support(lambda t, m=model: m.stages[0].blocks[0](m._run_stem(t)), x, (0, 0)) == (64, 64), label
        # The helper's own check: the stem alone sees 3 + 2 x 2 + 2 x 2 = 11 pixels (as in the local model above).
        assert _input_support(model._run_stem, x, (8, 8)) == (11, 11)


STUDY_WORKER = """
import dataclasses, json, sys
import torch
torch.set_num_threads(1)
from replknet.study import TASKS, StudyOptions, run_study

tiny = {
    "pathfinder": dataclasses.replace(TASKS["pathfinder"], options={"preset": "short"},
        quick=dict(image_size=32, train_size=16, val_size=8, epochs=1, batch_size=8, lr=1e-3)),
    "longrange": dataclasses.replace(TASKS["longrange"], options={"num_regions": 2, "min_region_fraction": 0.2},
        quick=dict(image_size=32, train_size=8, val_size=4, iterations=2, batch_size=4, lr=1e-3)),
}
options = StudyOptions(quick=True, seeds=(0,), output=sys.argv[1], progress=False, device="cpu", tasks=tiny)
run_study("small-maps", options)
"""


@pytest.mark.slow
def test_study_under_torchrun_two_processes(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(STUDY_WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = validate_results(json.loads((tmp_path / "out" / "results.json").read_text()))
    assert results["processes"] == 2 and len(results["arms"]) == 6
    record = json.loads((tmp_path / "out" / "runs" / "longrange" / "last13" / "seed0" / "study_run.json").read_text())
    assert record["processes"] == 2 and record["value"] is not None and "far_pixel_accuracy" in record["extra"]
    run = json.loads((tmp_path / "out" / "runs" / "pathfinder" / "k3" / "seed0" / "config.json").read_text())
    assert run["training"]["batch_size"] == 4 and run["training"]["recipe_batch"] == 8  # global batch 8 over 2
