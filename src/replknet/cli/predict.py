"""`replknet predict IMAGES... --model M --checkpoint FILE`: top-k classes of image files or folders."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--model", help="model name (optional when --checkpoint is a converted folder)")
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint file (any supported layout) or converted folder"
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    parser.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON")
    parser.add_argument("--output", help="also write the JSON predictions to this file")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from replknet.deploy import load_model, predict

    model = load_model(args.checkpoint, args.model)
    predictions = predict(
        model,
        args.images,
        top_k=args.top_k,
        batch_size=args.batch_size,
        image_size=args.img_size,
        device=args.device,
    )
    records = [p.to_dict() for p in predictions]
    if args.output:
        Path(args.output).write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for prediction in predictions:
        print(prediction.path)
        for rank, score in enumerate(prediction.top, 1):
            label = score.label if score.label is not None else f"class {score.index}"
            print(f"  {rank}. {score.probability:7.2%}  {label}  [{score.index}]")
    return 0
