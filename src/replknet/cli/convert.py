"""`replknet convert --checkpoint FILE|RUN`: any checkpoint to a folder of safetensors + config.json, checked."""

from __future__ import annotations

import argparse
import json

from replknet.cli import _common as common


def parse_model_args(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs (VALUE as JSON, else a string) as constructor arguments."""
    values = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-args takes KEY=VALUE pairs (e.g. layers=[2,2,18,2]), got {item!r}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(
        parser,
        required=True,
        what="official (plain, wrapped, module.-prefixed, training or deploy form), mmpretrain, or a run folder",
    )
    common.add_model(parser, what="needed for official and mmpretrain files")
    parser.add_argument(
        "--model-args",
        nargs="+",
        metavar="KEY=VALUE",
        help="constructor arguments of a custom architecture on top of --model's (VALUE as JSON, e.g. "
        "layers=[2,2,18,2] large_kernel_sizes=[31,29,27,13]); recorded in config.json",
    )
    parser.add_argument(
        "--output", metavar="DIR", help="output folder (default: <checkpoint>_replknet, or _reparam, beside the input)"
    )
    common.add_overwrite(parser, "an output folder that already holds a model")
    parser.add_argument("--reparam", action="store_true", help="store the fused (deploy) form")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights (a run's model_ema, a checkpoint's)")
    common.add_image_size(
        parser, "input resolution of the check, one size or H W (default: the run's, else the model's)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip comparing the output with the source")
    parser.add_argument(
        "--tolerance", type=common.positive_float, default=1e-4, help="largest relative difference accepted"
    )
    common.add_threads(parser)


def holds_model(folder) -> bool:
    """True when ``folder`` already holds a converted or trained model."""
    return (folder / "model.safetensors").is_file() or (folder / "config.json").is_file()


def check_output(args: argparse.Namespace, suffix: str):
    """The checked output folder (nothing created): a file in the way or a folder with a model is refused."""
    from replknet.deploy.convert import default_output
    from replknet.outputs import check_output_dir
    from replknet.runs import read_run

    read_run(args.checkpoint)  # a missing checkpoint is named before anything else
    output = args.output or default_output(args.checkpoint, suffix)
    return check_output_dir(output, overwrite=args.overwrite, finished=holds_model, what="--output").path


def run(args: argparse.Namespace) -> int:
    from replknet.deploy.convert import convert_checkpoint

    model_args = parse_model_args(args.model_args)
    common.apply_threads(args)
    output = check_output(args, "_reparam" if args.reparam else "_replknet")
    print(f"converting {args.checkpoint} ...", flush=True)
    result = convert_checkpoint(
        args.checkpoint,
        output,
        args.model,
        reparam=args.reparam,
        use_ema=args.ema,
        check=not args.no_check,
        check_size=args.image_size,
        **model_args,
    )
    form = "fused (deploy)" if result.fused else "training"
    print(f"wrote {result.output}/model.safetensors and config.json ({result.model_name}, {form} form)")
    print(f"load with timm.create_model('local-dir:{result.output}', pretrained=True)")
    if result.max_abs_diff is None:
        return 0
    height, width = result.input_size
    print(
        f"output vs source on a random {height}x{width} batch: max |diff| {result.max_abs_diff:.3e} "
        f"(relative {result.relative_diff:.2e})"
    )
    if result.relative_diff > args.tolerance:
        print(f"FAILED: relative difference above the tolerance {args.tolerance:g}")
        return 1
    return 0
