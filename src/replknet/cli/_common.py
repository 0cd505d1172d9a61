"""The options every command spells the same way, their checks, and the helpers behind them.

One name per concept: ``--checkpoint`` (a run folder or a weights file), ``--output`` (what the command writes),
``--image-size`` (one size, or H W), ``--json PATH`` (``-`` for stdout), ``--device``, ``--threads``,
``--no-progress``, ``--memory-format``, ``--overwrite``. Bad values are refused by argparse with one line, before
anything runs. Nothing here imports torch at module level, so ``replknet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEVICE_HELP = "cpu, cuda, cuda:N, or auto (CUDA when available)"


# ---------------------------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type: a number of at least 0."""
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    kind, _, index = text.partition(":")
    if text == "auto" or (kind in ("cpu", "cuda") and (not index or (kind == "cuda" and index.isdigit()))):
        return text
    raise argparse.ArgumentTypeError(f"not a device: {text!r} (give {DEVICE_HELP})")


class ImageSizeAction(argparse.Action):
    """``--image-size S`` (square) or ``--image-size H W``; stored as ``(H, W)``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if len(values) not in (1, 2):
            parser.error(f"{option_string} takes one size or two (H W), got {len(values)} values")
        sizes = [positive_int(v) if isinstance(v, str) else v for v in values]
        setattr(namespace, self.dest, (sizes[0], sizes[-1]))


# ---------------------------------------------------------------------------------------------- options
def add_checkpoint(parser: argparse.ArgumentParser, required: bool = False, what: str = "") -> None:
    parser.add_argument(
        "--checkpoint",
        required=required,
        metavar="RUN|FILE",
        help="a run folder (train, seg-train), a converted folder, or a weights file"
        + (f"; {what}" if what else " (official, mmpretrain, this library's)"),
    )


def add_model(parser: argparse.ArgumentParser, what: str = "") -> None:
    parser.add_argument(
        "--model",
        help="registered model name, optionally NAME.TAG for a pretrained config (not needed with a run folder)"
        + (f"; {what}" if what else ""),
    )


def add_image_size(parser: argparse.ArgumentParser, help_text: str, square_only: bool = False) -> None:
    if square_only:
        parser.add_argument("--image-size", type=positive_int, metavar="SIZE", help=help_text)
    else:
        parser.add_argument(
            "--image-size", nargs="+", type=positive_int, action=ImageSizeAction, metavar="SIZE", help=help_text
        )


def add_device(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", type=device_name, default=default, help=DEVICE_HELP)


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's, one per core)")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_json(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument("--json", metavar="PATH", help=f"write {what} as JSON to PATH ('-' for stdout)")


def add_memory_format(parser: argparse.ArgumentParser, default: str | None = "auto", what: str = "") -> None:
    from_help = "auto: channels_last on CPU (faster there), contiguous (NCHW) on GPU"
    parser.add_argument(
        "--memory-format",
        choices=("auto", "channels_last", "contiguous"),
        default=default,
        help=from_help + (f"; {what}" if what else ""),
    )


def add_overwrite(parser: argparse.ArgumentParser, what: str = "a finished run in --output") -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} (refused without it)")


# ---------------------------------------------------------------------------------------------- run time
def setup_torch(args: argparse.Namespace):
    """Apply ``--threads`` and resolve ``--device``; returns the ``torch.device``."""
    apply_threads(args)
    return resolve_device(getattr(args, "device", "auto"))


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(--threads)`` when given."""
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def resolve_device(name: str | None):
    """``auto`` (or None) -> CUDA when available, else CPU; a CUDA device that is not there is refused."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_json_output(destination: str | None):
    """Check ``--json PATH`` before any work (nothing for ``-`` or None); returns the checked path or None."""
    if destination in (None, "-"):
        return None
    from replknet.outputs import check_output_file

    return check_output_file(destination, what="--json").path


def write_json(data: Any, destination: str | None) -> None:
    """``data`` as JSON to ``destination``: stdout for ``-``, else the file (atomically, its folder created)."""
    if destination is None:
        return
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    if destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from replknet.checkpoint import atomic_write_text

    atomic_write_text(destination, text)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def say(args: argparse.Namespace, *parts: object) -> None:
    """Print a human-readable line, unless the JSON goes to stdout (it would be corrupted)."""
    if getattr(args, "json", None) == "-":
        print(*parts, file=sys.stderr)
    else:
        print(*parts)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with ``(default: X)`` added to every option that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.option_strings == []
            and action.nargs in ("*", "?")
            and not default
        ):
            return text
        shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"
