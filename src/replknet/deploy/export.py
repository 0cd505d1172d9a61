"""Exporting the fused model to ONNX or TorchScript with a dynamic batch dimension, checked against a runtime.

The official code's ``torch.onnx.export(create_RepLKNet31B())`` fails (official issue #60; its factories turn
gradient checkpointing on by default). Here the model is exported from an eval-mode copy with gradient
checkpointing switched off and the depthwise op forced to its reference (plain ``F.conv2d``) implementation.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from replknet.checkpoint import atomic_write

_logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    """An exported file and how closely the exported program reproduces the PyTorch model.

    Attributes:
        path: the file written.
        format: ``"onnx"`` or ``"torchscript"``.
        max_abs_diff: max |exported - PyTorch| on the check batch (None when not checked).
        relative_diff: ``max_abs_diff / max |PyTorch output|`` (None when not checked).
        check_batch_size: batch size of the check, different from the export batch to prove it is dynamic.
    """

    path: Path
    format: str
    max_abs_diff: float | None
    relative_diff: float | None
    check_batch_size: int | None


def prepare_for_export(model: nn.Module, fuse: bool = True, deep: bool = True) -> nn.Module:
    """An eval-mode copy of ``model``, fused, with gradient checkpointing disabled everywhere.

    Args:
        model: any model; RepLKNet models are re-parameterised.
        fuse: re-parameterise (merge the small kernels into the large ones).
        deep: also fold every BN into its conv (exact in eval mode; fewer nodes in the exported graph).
    """
    import replknet

    model = copy.deepcopy(model).eval()
    # NOTE: gradient checkpointing is a training-time device; the official export failure (#60) is blamed on it.
    # Every module that carries the flag gets it cleared, whatever set_grad_checkpointing did.
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(False)
    for module in model.modules():
        if getattr(module, "grad_checkpointing", False):
            module.grad_checkpointing = False
    if fuse:
        model = replknet.reparameterize(model, inplace=True, deep=deep)
    return model


def _check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: give {MIN_OPSET} or newer")


def _export_onnx(model: nn.Module, example: torch.Tensor, path: str, opset: int, dynamo: bool) -> None:
    if dynamo:
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
            # NOTE: weights kept inside the .onnx file (one file to ship); the largest model (XL, 1.3 GB) is
            # under protobuf's 2 GB limit.
            external_data=False,
            verbose=False,
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter warns that it is deprecated and about shape ifs
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: str) -> None:
    # NOTE: traced, not scripted: the op dispatcher is plain Python. Tracing records only tensor ops, and the
    # convolutions are batch-size agnostic, so the traced module accepts any batch (checked below).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; TorchScript was asked for
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, path)


def run_exported(path: str | os.PathLike, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file on ``x`` (onnxruntime on CPU for ONNX, ``torch.jit.load`` for TorchScript)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise RuntimeError("checking an ONNX export needs onnxruntime: pip install 'replknet[export]'") from error
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(output)
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(x)
    raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    input_size: tuple[int, int] = (224, 224),
    opset: int = 18,
    fuse: bool = True,
    deep: bool = True,
    dynamo: bool = True,
    check: bool = True,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` (fused, eval, no gradient checkpointing) with a dynamic batch dimension.

    Args:
        model: the model to export (left unchanged).
        path: output file, written atomically.
        fmt: ``"onnx"`` or ``"torchscript"``.
        input_size: ``(H, W)`` of the example input; the spatial size is fixed in the exported graph.
        opset: ONNX opset, at least 17.
        fuse: re-parameterise first; ``deep`` also folds every BN.
        dynamo: ONNX through ``torch.export`` (the default exporter of current PyTorch); ``False`` uses the
            legacy TorchScript-based exporter, which is faster to run.
        check: run the exported file (onnxruntime / ``torch.jit.load``) at a different batch size than the export
            and compare with the PyTorch model.
        seed: seed of the example and check inputs.

    Raises:
        ValueError: unknown format or an opset below 17.
    """
    from replknet.ops import impl_override

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "onnx":
        _check_opset(opset)
    prepared = prepare_for_export(model, fuse=fuse, deep=deep)
    param = next(prepared.parameters())
    prepared = prepared.to(device="cpu", dtype=torch.float32)
    if param.device.type != "cpu" or param.dtype != torch.float32:
        _logger.info("exporting from a float32 CPU copy of the model")
    generator = torch.Generator().manual_seed(seed)
    in_chans = getattr(prepared, "in_chans", 3)
    # Batch 2, not 1: the exporters specialise a dimension of size 1.
    example = torch.randn(2, in_chans, *input_size, generator=generator)
    path = Path(path)

    def write(tmp: str) -> None:
        # The reference depthwise op is plain F.conv2d, which every exporter and runtime knows.
        with impl_override("reference"), torch.no_grad():
            if fmt == "onnx":
                _export_onnx(prepared, example, tmp, opset, dynamo)
            else:
                _export_torchscript(prepared, example, tmp)

    atomic_write(path, write)
    _logger.info("exported %s to %s", fmt, path)
    if not check:
        return ExportResult(path, fmt, None, None, None)
    check_batch = 3
    x = torch.randn(check_batch, in_chans, *input_size, generator=generator)
    # The reference is the unfused model in float32 on CPU (a copy when it lives elsewhere, so that TF32 or
    # half precision on a GPU does not blur the comparison).
    on_cpu = param.device.type == "cpu" and param.dtype == torch.float32
    reference_model = model if on_cpu else copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    was_training = reference_model.training
    with torch.no_grad():
        reference = reference_model.eval()(x)
    reference_model.train(was_training)
    output = run_exported(path, fmt, x)
    if output.shape != reference.shape:
        raise RuntimeError(f"exported model returned shape {tuple(output.shape)}, expected {tuple(reference.shape)}")
    max_diff = (output.double() - reference.double()).abs().max().item()
    relative = max_diff / max(reference.double().abs().max().item(), 1e-30)
    return ExportResult(path, fmt, max_diff, relative, check_batch)


__all__ = ["FORMATS", "ExportResult", "export_model", "prepare_for_export", "run_exported"]
