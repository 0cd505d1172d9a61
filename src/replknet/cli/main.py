"""`replknet <command>`: one thin argument parser per command module, over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from replknet.cli._common import HelpFormatter

# command name -> (module under replknet.cli, one-line help). Each module defines
# `add_arguments(parser)` and `run(args) -> int`; heavy imports stay inside `run`.
COMMANDS: dict[str, tuple[str, str]] = {
    "seg-train": ("seg_train", "train RepLKNet-UperNet segmentation (no arguments: the synthetic CPU demo)"),
    "seg-eval": ("seg_eval", "mIoU of a seg-train run on its own data: whole, sliding-window, or multi-scale + flip"),
    "check": ("check", "build a model, fuse it, print params, MACs and the fusion error"),
    "train": ("train", "train or fine-tune (paper recipes as presets); no arguments: the 5-minute CPU demo"),
    "eval": ("eval", "top-1/top-5 of a run on its own validation data, or of any checkpoint on an ImageFolder"),
    "data": ("data", "built-in data: `data synth --output DIR` writes the synthetic shapes as an ImageFolder"),
    "erf": ("erf", "effective receptive fields: contribution maps, figures and the area-ratio table"),
    "shape-bias": ("shape_bias", "shape bias of models on cue-conflict images (Geirhos et al., ICLR 2019)"),
    "predict": ("predict", "top-k classes of image files or folders (a run's class names, or ImageNet's)"),
    "convert": ("convert", "official / mmpretrain checkpoints or runs to safetensors + timm config, checked"),
    "reparam": ("reparam", "fuse a training-form checkpoint or run and save the deploy form, checked"),
    "export": ("export", "export the fused model to ONNX or TorchScript (dynamic batch), checked"),
    "bench": ("bench", "params, MACs and images/s of RepLKNet (or a run's model) next to timm peers"),
    "study": ("study", "the paper's guidelines as experiments: arms x seeds on tasks where receptive field decides"),
}


def build_parser() -> argparse.ArgumentParser:
    from replknet import __version__

    parser = argparse.ArgumentParser(prog="replknet", description="RepLKNet: large-kernel CNNs, fast and exact.")
    parser.add_argument("--version", action="version", version=f"replknet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"replknet.cli.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    from replknet.runtime import keep_freed_memory

    keep_freed_memory(respect_env=True)  # large tensors stop page-faulting (replknet.runtime)
    try:
        return int(args._run(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        # Library errors already name the problem (an unreadable image is a ValueError naming the file, an
        # output path that cannot be used an OSError naming it): show them as one line, without a traceback.
        _close_progress_bars()
        print(f"replknet {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 2


def _close_progress_bars() -> None:
    """Close the progress bars an error left open, so that the error starts a line of its own."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
        bar.close()


def describe_error(error: BaseException) -> str:
    """The message of ``error`` for the command line, with the path it concerns.

    An ``OSError`` raised by the system (``errno``, ``strerror``, ``filename``) reads "strerror: path"; an error
    re-raised by a DataLoader from a worker process carries the worker's whole traceback as its text, of which
    the last line is the original error.
    """
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.strerror or type(error).__name__}: {error.filename}"
        if error.filename2 is not None:
            message += f" -> {error.filename2}"
        return message
    message = str(error)
    if "DataLoader worker process" in message and "Traceback" in message:
        lines = [line for line in message.splitlines() if line.strip()]
        return lines[-1].strip()
    return message


if __name__ == "__main__":
    sys.exit(main())
