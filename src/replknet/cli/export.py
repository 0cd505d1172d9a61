"""`replknet export --format onnx|torchscript`: the fused model with a dynamic batch, checked after writing."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name (optional when --checkpoint is a converted folder)")
    parser.add_argument("--checkpoint", help="checkpoint file or converted folder (default: random weights)")
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="default: onnx")
    parser.add_argument("--output", "-o", help="output file (default: <model>.onnx / <model>.pt)")
    parser.add_argument("--img-size", type=int, help="input resolution baked into the graph (default: the model's)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 17 (default: 18)")
    parser.add_argument("--no-fuse", action="store_true", help="export the training form as it is")
    parser.add_argument(
        "--shallow", action="store_true", help="fuse the large kernels only (official form), keep the BNs"
    )
    parser.add_argument(
        "--legacy-exporter", action="store_true", help="ONNX through the TorchScript-based exporter, not torch.export"
    )
    parser.add_argument("--no-check", action="store_true", help="skip running the exported file")


def run(args: argparse.Namespace) -> int:
    import logging

    import replknet
    from replknet.deploy import export_model, load_model
    from replknet.deploy.loading import model_input_size

    if args.checkpoint is not None:
        model = load_model(args.checkpoint, args.model)
    elif args.model is not None:
        logging.getLogger("replknet.cli.export").warning("no --checkpoint: exporting random weights")
        model = replknet.create_model(args.model).eval()
    else:
        raise ValueError("give --model, --checkpoint, or both")
    name = model.pretrained_cfg.get("architecture", args.model)
    output = args.output or f"{name}.{'onnx' if args.format == 'onnx' else 'pt'}"
    result = export_model(
        model,
        output,
        args.format,
        input_size=model_input_size(model, args.img_size),
        opset=args.opset,
        fuse=not args.no_fuse,
        deep=not args.shallow,
        dynamo=not args.legacy_exporter,
        check=not args.no_check,
    )
    print(f"wrote {result.path} ({result.format}, dynamic batch)")
    if result.max_abs_diff is not None:
        runtime = "onnxruntime" if result.format == "onnx" else "torch.jit.load"
        print(
            f"{runtime} vs PyTorch at batch {result.check_batch_size}: max |diff| {result.max_abs_diff:.3e} "
            f"(relative {result.relative_diff:.2e})"
        )
        if result.relative_diff > 1e-4:
            print("FAILED: relative difference above 1e-4")
            return 1
    return 0
