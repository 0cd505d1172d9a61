"""`replknet erf`: effective receptive fields of models, the paper's maps, figure and area-ratio table."""

from __future__ import annotations

import argparse
import re

# With no model given: the same tiny body with 3x3 and with 31..13 kernels. At 1024x1024 on the 4 bundled
# photographs this finishes in a few minutes on a 2-core CPU and already shows the large kernels' wider ERF.
DEFAULT_MODELS = ("replknet_tiny_k3", "replknet_tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL[=CHECKPOINT]",
        help="models to compare: a registered or timm name, optionally =path to a local checkpoint "
        f"(default: {' '.join(DEFAULT_MODELS)} at random init)",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="image folder, flat or ImageNet-val layout (class folders); default: the 4 photographs bundled "
        "with the package",
    )
    parser.add_argument("--num-images", type=int, default=50, help="images to average (paper: 50; default 50)")
    parser.add_argument("--size", type=int, default=1024, help="input resized to SIZE x SIZE (paper: 1024)")
    parser.add_argument("--out", default="erf-results", metavar="DIR", help="output folder (default: erf-results)")
    parser.add_argument(
        "--layer", help="feature layer name for every model (default: last stage's output before the final norm)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random-init weights (each model reseeded)")
    parser.add_argument(
        "--keep-zero-init",
        action="store_true",
        help="keep timm's zero-initialised last BN of residual branches in random-init models (by default it is "
        "reset to 1: otherwise a random-init ResNet's ERF is that of its shortcut path only)",
    )
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: much less memory at 1024x1024, ~1 more forward of time",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--no-plots", action="store_true", help="write maps and tables only")


def _parse_model(spec: str) -> tuple[str, str | None]:
    name, _, checkpoint = spec.partition("=")
    if not name:
        raise ValueError(f"model spec {spec!r} has no model name (expected NAME or NAME=CHECKPOINT)")
    return name, checkpoint or None


def _labels(specs: list[tuple[str, str | None]]) -> list[str]:
    from pathlib import Path

    labels: list[str] = []
    for name, checkpoint in specs:
        label = name if checkpoint is None else f"{name}@{Path(checkpoint).stem}"
        base, index = label, 2
        while label in labels:
            label, index = f"{base}-{index}", index + 1
        labels.append(label)
    return labels


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", label)


def _format_table(rows: list[tuple[str, list]], thresholds) -> str:
    width = max([len("model")] + [len(label) for label, _ in rows])
    header = f"{'model':<{width}}" + "".join(f"  {'t=' + format(t, '.0%'):>15}" for t in thresholds)
    lines = [header, "-" * len(header)]
    for label, ratios in rows:
        cells = "".join(
            f"  {(format(100 * r.ratio, '.2f') + '% (' + str(r.side) + ')' + ('' if r.reached else '!')):>15}"
            for r in ratios
        )
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import csv
    import json
    import os
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    import replknet
    from replknet.analysis.erf import DEFAULT_THRESHOLDS, ImageFiles, compute_erf, list_images, reset_zero_init_norms
    from replknet.data.photos import list_photos

    if args.num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {args.num_images}")
    if args.size < 32:
        raise ValueError(f"--size must be at least 32 (the models downsample by 32), got {args.size}")
    specs = [_parse_model(spec) for spec in (args.models or DEFAULT_MODELS)]
    for _, checkpoint in specs:
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    paths = list_images(args.images) if args.images else list_photos()
    source = args.images or "bundled photographs"
    if len(paths) < args.num_images:
        print(f"note: {source} has {len(paths)} images, fewer than --num-images {args.num_images}; using all")
    dataset = ImageFiles(paths, size=args.size)
    count = min(len(paths), args.num_images)
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = DEFAULT_THRESHOLDS

    results = {}
    for label, (name, checkpoint) in zip(_labels(specs), specs):
        torch.manual_seed(args.seed)
        model = replknet.create_model(name, checkpoint_path=checkpoint)
        if checkpoint is None and not args.keep_zero_init:
            reset_zero_init_norms(model)
        model.to(device)
        images = tqdm(dataset, total=count, desc=label, unit="img", leave=True)
        # Images whose map is not finite are skipped and the next ones taken, as the official script does.
        result = compute_erf(
            model, images, num_images=count, layer=args.layer, grad_checkpointing=args.grad_checkpointing
        )
        images.close()
        del model
        results[label] = (name, checkpoint, result, result.area_ratios(thresholds))
        np.save(out / f"{_file_stem(label)}.npy", result.contribution.astype(np.float32))

    rows = [(label, ratios) for label, (_, _, _, ratios) in results.items()]
    print(
        f"\nhigh-contribution area ratio, % of the {args.size}x{args.size} input (side in px; ! = not reached), "
        f"over {count} images from {source}:"
    )
    print(_format_table(rows, thresholds))

    summary = {
        "size": args.size,
        "images": str(args.images) if args.images else "bundled",
        "image_files": [str(p) for p in paths[:count]],
        "thresholds": list(thresholds),
        "models": {
            label: {
                "model": name,
                "checkpoint": checkpoint,
                "weights": "checkpoint" if checkpoint else "random init",
                "layer": args.layer or "default (last stage, before the final norm)",
                "feature_shape": list(result.feature_shape),
                "num_images": result.num_images,
                "num_skipped": result.num_skipped,
                "seconds_per_image": result.seconds / max(result.num_images + result.num_skipped, 1),
                "map_file": f"{_file_stem(label)}.npy",
                "area_ratios": [
                    {"threshold": r.threshold, "side": r.side, "ratio": r.ratio, "reached": r.reached} for r in ratios
                ],
            }
            for label, (name, checkpoint, result, ratios) in results.items()
        },
    }
    # Written to a temporary file and renamed, so a reader never sees a half-written table.
    for filename, write in (
        ("area_ratios.json", lambda f: json.dump(summary, f, indent=2)),
        ("area_ratios.csv", lambda f: _write_csv(csv, f, results, thresholds)),
    ):
        with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp", newline="") as handle:
            write(handle)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, out / filename)

    if not args.no_plots:
        from replknet.analysis.erf_plot import plot_erf, plot_erf_comparison

        maps = {label: result.contribution for label, (_, _, result, _) in results.items()}
        ratios = {label: r for label, (_, _, _, r) in results.items()}
        for label, contribution in maps.items():
            plot_erf(contribution, out / f"{_file_stem(label)}.png", title=label, ratios=ratios[label])
        plot_erf_comparison(
            maps, out / "comparison.png", ratios=ratios, title=f"ERF, {count} images at {args.size}x{args.size}"
        )
    print(f"wrote maps (.npy), {'figures (.png), ' if not args.no_plots else ''}area_ratios.json/.csv to {out}")
    return 0


def _write_csv(csv, handle, results, thresholds) -> None:
    writer = csv.writer(handle)
    header = ["model", "checkpoint", "num_images", "num_skipped"]
    for t in thresholds:
        header += [f"side@{t}", f"ratio@{t}", f"reached@{t}"]
    writer.writerow(header)
    for label, (_, checkpoint, result, ratios) in results.items():
        row = [label, checkpoint or "", result.num_images, result.num_skipped]
        for r in ratios:
            row += [r.side, f"{r.ratio:.6g}", int(r.reached)]
        writer.writerow(row)
