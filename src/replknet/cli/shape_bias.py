"""`replknet shape-bias`: shape bias of models on cue-conflict stimuli (Geirhos et al., ICLR 2019), or of a run
trained on the built-in shapes on their own cue-conflict split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from replknet.cli import _common as common

_logger = logging.getLogger(__name__)

SYNTHETIC_NOTE = "the built-in shapes' cue-conflict split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "stimuli",
        nargs="?",
        help="cue-conflict directory: <category>/<shape><n>-<texture><m>.png (see docs/shape_bias.md); not needed "
        "for a run trained on the built-in shapes (its own cue-conflict split is used)",
    )
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="a registered or timm name (random weights), NAME=CHECKPOINT, or a run folder",
    )
    common.add_checkpoint(parser, what="the model to measure (with one MODEL at most)")
    parser.add_argument("--batch-size", type=common.positive_int, default=32, help="images per forward")
    parser.add_argument("--workers", type=common.nonnegative_int, default=0, help="DataLoader worker processes")
    common.add_device(parser)
    common.add_threads(parser)
    common.add_memory_format(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for models built without a checkpoint")
    common.add_json(parser)
    parser.add_argument("--plot", metavar="PATH", help="save the shape-bias figure here (.png, .pdf, .svg)")
    common.add_progress(parser)


def _is_shapes_model(model) -> bool:
    from replknet.data.synthetic import SHAPE_NAMES

    labels = model.pretrained_cfg.get("label_names")
    return getattr(model, "num_classes", None) == len(SHAPE_NAMES) and list(labels or []) == list(SHAPE_NAMES)


def run(args: argparse.Namespace) -> int:
    import torch

    from replknet.cli._models import build_model, model_specs, unique_labels
    from replknet.outputs import check_output_file
    from replknet.runtime import resolve_memory_format

    if args.stimuli is not None and not args.models and args.checkpoint is None:
        raise ValueError("give the models to measure: MODEL..., NAME=CHECKPOINT, a run folder, or --checkpoint RUN")
    specs = model_specs(args.models, args.checkpoint)
    if not specs:
        raise ValueError("give a model: MODEL..., NAME=CHECKPOINT, a run folder, or --checkpoint RUN")
    stimuli = None
    if args.stimuli is not None:
        from replknet.analysis.shape_bias import find_stimuli

        stimuli = find_stimuli(args.stimuli)
    common.check_json_output(args.json)
    if args.plot:
        check_output_file(args.plot, what="--plot")
    device = common.setup_torch(args)
    channels_last = resolve_memory_format(args.memory_format, device) == "channels_last"
    results, report = {}, {}
    for spec, label in zip(specs, unique_labels(specs)):
        torch.manual_seed(args.seed)
        model = build_model(spec).eval()
        if spec.checkpoint is None:
            _logger.warning("%s: no checkpoint, random weights: its shape bias is a pipeline check only", spec.name)
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if stimuli is None:
            results[label], report[label] = _synthetic(model, spec, label)
        else:
            results[label], report[label] = _cue_conflict(model, spec, label, stimuli, args, device)
        del model

    if args.json != "-":  # with JSON on stdout, the table would corrupt it
        source = f"{len(stimuli)} stimuli in {args.stimuli}" if stimuli is not None else SYNTHETIC_NOTE
        _print_table(source, results, report)
    common.write_json(
        {
            "stimuli": str(Path(args.stimuli).resolve()) if args.stimuli else "synthetic cue_conflict",
            "num_stimuli": len(stimuli) if stimuli is not None else None,
            "method": "softmax over the classes; category score = mean probability of its indices; "
            "decision = argmax over the categories; shape == texture excluded; shape bias = shape / (shape + texture)",
            "models": report,
        },
        args.json,
    )
    if args.plot and stimuli is not None:
        from replknet.analysis.shape_bias import CUE_CONFLICT_CATEGORIES
        from replknet.analysis.shape_bias_plot import plot_shape_bias

        plot_shape_bias(results, args.plot, categories=list(CUE_CONFLICT_CATEGORIES))
        if args.json != "-":
            print(f"figure written to {args.plot}")
    return 0


def _synthetic(model, spec, label: str):
    """Shape bias on the built-in cue-conflict split, at the run's size and seed (what the run recorded)."""
    from replknet.runs import read_run
    from replknet.train import synthetic_shape_bias

    if not _is_shapes_model(model):
        raise ValueError(
            f"{label} is not a model of the built-in shapes: give a cue-conflict STIMULI directory for it "
            "(an ImageNet classifier, see docs/shape_bias.md)"
        )
    run = read_run(spec.checkpoint) if spec.checkpoint is not None else None
    training = (run.training or {}) if run is not None else {}
    image_size = int(model.pretrained_cfg.get("input_size", (3, 64, 64))[-1])
    seed = int(training.get("synthetic_seed", 0))
    bias = synthetic_shape_bias(model, image_size, seed=seed, device=next(model.parameters()).device)
    summary = run.summary() if run is not None else None
    recorded = (summary or {}).get("shape_bias")
    entry = {
        "model": model.pretrained_cfg.get("architecture", spec.name),
        "checkpoint": spec.checkpoint,
        "image_size": image_size,
        **bias,
        "recorded_shape_bias": recorded["shape_bias"] if recorded else None,
    }
    return bias, entry


def _cue_conflict(model, spec, label: str, stimuli, args, device):
    import timm.data

    from replknet.analysis.shape_bias import evaluate_shape_bias

    data_config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**data_config)
    result = evaluate_shape_bias(
        model,
        stimuli,
        transform,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.workers,
        progress=not args.no_progress,
        description=label,
    )
    entry = {
        "model": model.pretrained_cfg.get("architecture", spec.name),
        "checkpoint": None if spec.checkpoint is None else str(Path(spec.checkpoint).resolve()),
        "data_config": {key: list(v) if isinstance(v, tuple) else v for key, v in data_config.items()},
        **result.to_dict(),
    }
    return result, entry


def _print_table(source: str, results: dict, report: dict) -> None:
    width = max(len(label) for label in results) + 2
    first_label = next(iter(results))
    if hasattr(results[first_label], "overall"):
        first = results[first_label]
        print(
            f"{source}: {first.overall.num_images} cue-conflict images scored, "
            f"{first.num_excluded} excluded (same shape and texture category)"
        )
        print(f"{'model':<{width}}{'shape bias':>11}{'shape acc':>11}{'texture acc':>13}{'shape':>7}{'texture':>9}")
        for label, result in results.items():
            print(
                f"{label:<{width}}{result.shape_bias:>11.3f}{result.shape_accuracy:>11.3f}"
                f"{result.texture_accuracy:>13.3f}{result.overall.shape_hits:>7}{result.overall.texture_hits:>9}"
            )
        return
    print(f"{source}:")
    print(f"{'model':<{width}}{'shape bias':>11}{'shape':>7}{'texture':>9}{'images':>8}  recorded by the run")
    for label, bias in results.items():
        recorded = report[label].get("recorded_shape_bias")
        print(
            f"{label:<{width}}{bias['shape_bias']:>11.3f}{bias['shape_hits']:>7}{bias['texture_hits']:>9}"
            f"{bias['num_images']:>8}  {'-' if recorded is None else format(recorded, '.3f')}"
        )
