"""`replknet check`: build a model, fuse it, and show that fusion is exact."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="replknet_31b", help="registered model name")
    common.add_image_size(parser, "input resolution for MACs and the check", square_only=True)
    parser.set_defaults(image_size=224)
    parser.add_argument("--batch-size", type=common.positive_int, default=1, help="images in the check batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, BN statistics and input")
    parser.add_argument("--deep", action="store_true", help="also fold every conv-BN pair and the pre-BNs")


def run(args: argparse.Namespace) -> int:
    import torch

    import replknet
    from replknet.testing import randomize_affine

    torch.manual_seed(args.seed)
    model = replknet.create_model(args.model).eval()
    randomize_affine(model)  # every BN, LayerNorm, layer scale and GRN, so that no fold is trivial
    fused = replknet.reparameterize(model, deep=args.deep)
    x = torch.randn(args.batch_size, model.in_chans, args.image_size, args.image_size)
    with torch.no_grad():
        reference, output = model(x), fused(x)
    max_diff = (output - reference).abs().max().item()
    relative = max_diff / reference.abs().max().item()
    print(f"model               {args.model}  (input {args.image_size}x{args.image_size})")
    print(f"params (train form) {replknet.count_params(model):,}")
    print(f"params (fused)      {replknet.count_params(fused):,}")
    print(f"GMACs (fused)       {replknet.count_macs(fused, args.image_size) / 1e9:.2f}")
    print(f"max |diff|          {max_diff:.3e}  (relative {relative:.2e})")
    return 0 if relative < 1e-5 else 1
