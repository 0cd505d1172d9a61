"""`replknet predict IMAGES... --checkpoint RUN`: the top-k classes of image files or folders, by name."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image files and/or folders (searched recursively); default: the photographs bundled with the package",
    )
    common.add_checkpoint(parser, what="a run folder brings its class names and input size")
    common.add_model(parser, what="for a weights file that does not name its model")
    parser.add_argument("--top-k", type=common.positive_int, default=5, help="classes per image")
    parser.add_argument("--batch-size", type=common.positive_int, default=16, help="images per forward pass")
    common.add_image_size(parser, "input resolution, one size or H W (default: the run's, else the model's)")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="report image files that cannot be read and classify the rest, instead of stopping at the first",
    )
    common.add_device(parser)
    common.add_threads(parser)
    common.add_json(parser, "the predictions")
    common.add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from replknet.deploy import load_model, predict

    if args.checkpoint is None:
        raise ValueError("give --checkpoint RUN (a run folder, a converted folder or a weights file)")
    images = args.images
    if not images:
        from replknet.data.photos import list_photos

        images = [str(p) for p in list_photos()]
    common.check_json_output(args.json)
    device = common.setup_torch(args)
    model = load_model(args.checkpoint, args.model)
    predictions = predict(
        model,
        images,
        top_k=args.top_k,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=device,
        progress=not args.no_progress,
        skip_bad_images=args.skip_bad_images,
    )
    common.write_json([p.to_dict() for p in predictions], args.json)
    if args.json == "-":
        return 0
    for prediction in predictions:
        print(prediction.path)
        if prediction.error is not None:
            print(f"  skipped: {prediction.error}")
        for rank, score in enumerate(prediction.top, 1):
            label = score.label if score.label is not None else f"class {score.index}"
            print(f"  {rank}. {score.probability:7.2%}  {label}  [{score.index}]")
    if args.json:
        print(f"wrote {args.json}")
    return 0
