"""`replknet export --checkpoint RUN`: the fused model as ONNX or TorchScript (dynamic batch), checked after writing."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser, what="a run folder brings its input size")
    common.add_model(parser, what="with no --checkpoint: random weights")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="file format")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="file to write (default: model.onnx / model.pt in the run folder, else <model>.onnx / <model>.pt)",
    )
    common.add_image_size(
        parser, "input resolution baked into the graph, one size or H W (default: the run's, else the model's)"
    )
    parser.add_argument("--opset", type=common.positive_int, default=18, help="ONNX opset, at least 17")
    parser.add_argument("--no-fuse", action="store_true", help="export the training form as it is")
    parser.add_argument(
        "--shallow", action="store_true", help="fuse the large kernels only (official form), keep the BNs"
    )
    parser.add_argument(
        "--legacy-exporter", action="store_true", help="ONNX through the TorchScript-based exporter, not torch.export"
    )
    parser.add_argument("--no-check", action="store_true", help="skip running the exported file")
    parser.add_argument(
        "--tolerance", type=common.positive_float, default=1e-4, help="largest relative difference accepted"
    )
    common.add_threads(parser)


def default_output(checkpoint: str | None, name: str, fmt: str) -> str:
    """model.onnx / model.pt inside a run or converted folder, else <name>.onnx / <name>.pt here."""
    from pathlib import Path

    from replknet.runs import find_run

    suffix = "onnx" if fmt == "onnx" else "pt"
    folder = find_run(checkpoint) if checkpoint is not None and Path(checkpoint).exists() else None
    return str(folder / f"model.{suffix}") if folder is not None else f"{name}.{suffix}"


def run(args: argparse.Namespace) -> int:
    import logging

    import replknet
    from replknet.deploy import export_model, load_model
    from replknet.deploy.loading import model_input_size
    from replknet.outputs import check_output_file

    if args.checkpoint is None and args.model is None:
        raise ValueError("give --checkpoint RUN (a run folder needs nothing else), or --model NAME")
    if args.format == "onnx" and args.opset < 17:
        raise ValueError(f"opset {args.opset} is too old: give 17 or newer")
    common.apply_threads(args)
    if args.checkpoint is not None:
        model = load_model(args.checkpoint, args.model)
    else:
        logging.getLogger("replknet.cli.export").warning("no --checkpoint: exporting random weights")
        model = replknet.create_model(args.model).eval()
    name = model.pretrained_cfg.get("architecture", args.model)
    output = args.output or default_output(args.checkpoint, name, args.format)
    check_output_file(output, what="--output")
    input_size = model_input_size(model, args.image_size)
    form = "training form" if args.no_fuse else ("fused, BNs kept" if args.shallow else "fused")
    print(f"exporting {name} ({form}) at {input_size[0]}x{input_size[1]} to {output} ...", flush=True)
    result = export_model(
        model,
        output,
        args.format,
        input_size=input_size,
        opset=args.opset,
        fuse=not args.no_fuse,
        deep=not args.shallow,
        dynamo=not args.legacy_exporter,
        check=not args.no_check,
    )
    print(f"wrote {result.path} ({result.format}, dynamic batch, {input_size[0]}x{input_size[1]})")
    if result.max_abs_diff is not None:
        runtime = "onnxruntime" if result.format == "onnx" else "torch.jit.load"
        print(
            f"{runtime} vs the eager model at batch {result.check_batch_size}, {input_size[0]}x{input_size[1]}: "
            f"max |diff| {result.max_abs_diff:.3e} (relative {result.relative_diff:.2e})"
        )
        if result.relative_diff > args.tolerance:
            print(f"FAILED: relative difference above the tolerance {args.tolerance:g}")
            return 1
    return 0
