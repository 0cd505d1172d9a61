"""`replknet shape-bias`: shape bias of one or more models on cue-conflict stimuli (Geirhos et al., ICLR 2019)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

_logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "stimuli", help="cue-conflict directory: <category>/<shape><n>-<texture><m>.png (see docs/shape_bias.md)"
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model name (replknet or timm), optionally NAME=CHECKPOINT for local weights",
    )
    parser.add_argument("--checkpoint", help="checkpoint for a single MODEL (same as MODEL=CHECKPOINT)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--channels-last", action="store_true", help="run the models in channels_last memory format")
    parser.add_argument("--seed", type=int, default=0, help="seed for models built without a checkpoint")
    parser.add_argument("--output", help="write the results as JSON to this file ('-' for stdout)")
    parser.add_argument("--plot", help="save the shape-bias figure here (.png, .pdf, .svg)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_model_spec(spec: str, checkpoint: str | None = None) -> tuple[str, str | None]:
    """``name`` or ``name=path/to/checkpoint`` -> (name, checkpoint or None)."""
    name, sep, path = spec.partition("=")
    if not name:
        raise ValueError(f"model spec {spec!r} has no model name (expected NAME or NAME=CHECKPOINT)")
    if sep and not path:
        raise ValueError(f"model spec {spec!r} has an empty checkpoint path (expected NAME=CHECKPOINT)")
    if sep and checkpoint is not None:
        raise ValueError(
            f"model {name!r}: give its checkpoint either as NAME=CHECKPOINT or with --checkpoint, not both"
        )
    return name, (path or checkpoint)


def _labels(specs: list[tuple[str, str | None]]) -> list[str]:
    labels = [name if checkpoint is None else f"{name} [{Path(checkpoint).stem}]" for name, checkpoint in specs]
    return [label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)]


def _write_json(data: dict, destination: str) -> None:
    text = json.dumps(data, indent=2)
    if destination == "-":
        print(text)
        return
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args: argparse.Namespace) -> int:
    import timm.data
    import torch

    import replknet
    from replknet.analysis.shape_bias import CUE_CONFLICT_CATEGORIES, evaluate_shape_bias, find_stimuli

    if args.checkpoint is not None and len(args.models) != 1:
        raise ValueError("--checkpoint needs exactly one MODEL; for several, write each as NAME=CHECKPOINT")
    specs = [parse_model_spec(spec, args.checkpoint) for spec in args.models]
    stimuli = find_stimuli(args.stimuli)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results, report = {}, {}
    for (name, checkpoint), label in zip(specs, _labels(specs)):
        torch.manual_seed(args.seed)
        model = replknet.create_model(name, checkpoint_path=checkpoint)
        if checkpoint is None:
            _logger.warning("%s: no checkpoint, random weights: its shape bias is a pipeline check only", name)
        data_config = timm.data.resolve_data_config(model=model)
        transform = timm.data.create_transform(**data_config)
        model = model.to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
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
        results[label] = result
        report[label] = {
            "model": name,
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "data_config": {key: list(v) if isinstance(v, tuple) else v for key, v in data_config.items()},
            **result.to_dict(),
        }
        del model

    if args.output != "-":  # with JSON on stdout, the table would corrupt it
        _print_table(args.stimuli, len(stimuli), results)
    if args.output:
        _write_json(
            {
                "stimuli": str(Path(args.stimuli).resolve()),
                "num_stimuli": len(stimuli),
                "method": "softmax over 1000; category score = mean probability of its ImageNet indices; "
                "decision = argmax over 16; shape == texture excluded; shape bias = shape / (shape + texture)",
                "models": report,
            },
            args.output,
        )
    if args.plot:
        from replknet.analysis.shape_bias_plot import plot_shape_bias

        plot_shape_bias(results, args.plot, categories=list(CUE_CONFLICT_CATEGORIES))
        if args.output != "-":
            print(f"figure written to {args.plot}")
    return 0


def _print_table(stimuli_dir: str, num_stimuli: int, results: dict) -> None:
    first = next(iter(results.values()))
    print(
        f"{num_stimuli} stimuli in {stimuli_dir}: {first.overall.num_images} cue-conflict images scored, "
        f"{first.num_excluded} excluded (same shape and texture category)"
    )
    width = max(len(label) for label in results) + 2
    print(f"{'model':<{width}}{'shape bias':>11}{'shape acc':>11}{'texture acc':>13}{'shape':>7}{'texture':>9}")
    for label, result in results.items():
        print(
            f"{label:<{width}}{result.shape_bias:>11.3f}{result.shape_accuracy:>11.3f}{result.texture_accuracy:>13.3f}"
            f"{result.overall.shape_hits:>7}{result.overall.texture_hits:>9}"
        )
