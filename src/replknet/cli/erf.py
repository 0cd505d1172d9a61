"""`replknet erf`: effective receptive fields of models, the paper's maps, figure and area-ratio table."""

from __future__ import annotations

import argparse
import re

from replknet.cli import _common as common

# With no model given: the same tiny body with 3x3 and with 31..13 kernels. At 1024x1024 on the 4 bundled
# photographs this finishes in a few minutes on a 2-core CPU and already shows the large kernels' wider ERF.
DEFAULT_MODELS = ("replknet_tiny_k3", "replknet_tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="models to compare: a registered or timm name (random init), NAME=CHECKPOINT, or a run folder "
        f"(default: {' '.join(DEFAULT_MODELS)} at random init)",
    )
    common.add_checkpoint(parser, what="the model to analyse (with one MODEL at most)")
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="image folder, flat or ImageNet-val layout (class folders); default: the 4 photographs bundled "
        "with the package",
    )
    parser.add_argument("--num-images", type=common.positive_int, default=50, help="images to average (paper: 50)")
    common.add_image_size(parser, "input resized to SIZE x SIZE (paper: 1024)", square_only=True)
    parser.set_defaults(image_size=1024)
    parser.add_argument("--output", default="erf-results", metavar="DIR", help="output folder")
    common.add_overwrite(parser, "maps already in --output")
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
    common.add_device(parser, default="cpu")
    common.add_threads(parser)
    parser.add_argument("--no-plots", action="store_true", help="write maps and tables only")
    common.add_progress(parser)


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", label)


def _finished(folder) -> bool:
    return (folder / "area_ratios.json").is_file()


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

    import numpy as np
    import torch
    from tqdm import tqdm

    from replknet.analysis.erf import (
        DEFAULT_THRESHOLDS,
        ImageFiles,
        compute_erf,
        list_images,
        radial_profile,
        reset_zero_init_norms,
    )
    from replknet.checkpoint import atomic_write, atomic_write_text
    from replknet.cli._models import build_model, model_specs, unique_labels
    from replknet.data.photos import list_photos
    from replknet.outputs import check_output_dir

    if args.image_size < 32:
        raise ValueError(f"--image-size must be at least 32 (the models downsample by 32), got {args.image_size}")
    specs = model_specs(args.models, args.checkpoint, DEFAULT_MODELS)
    output = check_output_dir(args.output, overwrite=args.overwrite, finished=_finished, what="--output")
    paths = list_images(args.images) if args.images else list_photos()
    source = args.images or "bundled photographs"
    if len(paths) < args.num_images:
        print(f"note: {source} has {len(paths)} images, fewer than --num-images {args.num_images}; using all")
    size = args.image_size
    dataset = ImageFiles(paths, size=size)
    count = min(len(paths), args.num_images)
    device = common.setup_torch(args)
    thresholds = DEFAULT_THRESHOLDS

    results = {}
    for label, spec in zip(unique_labels(specs), specs):
        torch.manual_seed(args.seed)
        model = build_model(spec)
        name = model.pretrained_cfg.get("architecture", spec.name)
        if spec.checkpoint is None and not args.keep_zero_init:
            reset_zero_init_norms(model)
        model.to(device)
        images = tqdm(dataset, total=count, desc=label, unit="img", leave=True, disable=args.no_progress)
        # Images whose map is not finite are skipped and the next ones taken, as the official script does.
        result = compute_erf(
            model, images, num_images=count, layer=args.layer, grad_checkpointing=args.grad_checkpointing
        )
        images.close()
        del model
        results[label] = (name, spec.checkpoint, result, result.area_ratios(thresholds))

    out = output.create()
    for label, (_, _, result, _) in results.items():
        contribution = result.contribution.astype(np.float32)
        atomic_write(out / f"{_file_stem(label)}.npy", lambda tmp, c=contribution: _save_npy(np, tmp, c))
    rows = [(label, ratios) for label, (_, _, _, ratios) in results.items()]
    print(
        f"\nhigh-contribution area ratio, % of the {size}x{size} input (side in px; ! = not reached), "
        f"over {count} images from {source}:"
    )
    print(_format_table(rows, thresholds))
    # The radial profile: how far the (raw) contribution reaches. It shows the tail the heatmaps' colours hide.
    profiles = {label: radial_profile(result.contribution) for label, (_, _, result, _) in results.items()}
    shares = (0.5, 0.9, 0.99)
    print("\nradius (px from the centre) holding 50% / 90% / 99% of the contribution:")
    width = max(len(label) for label in profiles)
    for label, profile in profiles.items():
        print(f"{label:<{width}}  " + "  ".join(f"{profile.radius_at(share):>5}" for share in shares))

    summary = {
        "size": size,
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
                "radius_holding": {f"{round(100 * p)}%": profiles[label].radius_at(p) for p in shares},
                "radial_profile": profiles[label].cumulative.round(6).tolist(),
            }
            for label, (name, checkpoint, result, ratios) in results.items()
        },
    }
    # Written atomically, so a reader never sees a half-written table.
    atomic_write(out / "area_ratios.csv", lambda tmp: _write_csv(csv, tmp, results, thresholds))
    atomic_write_text(out / "area_ratios.json", json.dumps(summary, indent=2))

    if not args.no_plots:
        from replknet.analysis.erf_plot import plot_erf, plot_erf_comparison

        maps = {label: result.contribution for label, (_, _, result, _) in results.items()}
        ratios = {label: r for label, (_, _, _, r) in results.items()}
        for label, contribution in maps.items():
            plot_erf(contribution, out / f"{_file_stem(label)}.png", title=label, ratios=ratios[label])
        plot_erf_comparison(
            maps,
            out / "comparison.png",
            ratios=ratios,
            title=f"ERF, {count} images at {size}x{size}",
            profiles=profiles,
            decades=3.0,
        )
    print(f"wrote maps (.npy), {'figures (.png), ' if not args.no_plots else ''}area_ratios.json/.csv to {out}")
    return 0


def _save_npy(np, path, array) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append .npy to the temporary name
        np.save(handle, array)


def _write_csv(csv, path, results, thresholds) -> None:
    with open(path, "w", newline="") as handle:
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
