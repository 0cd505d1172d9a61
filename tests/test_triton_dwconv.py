"""The Triton depthwise convolution: registration, fallback, and kernels vs float64 under TRITON_INTERPRET=1.

The kernel checks run in one subprocess with ``TRITON_INTERPRET=1`` in its environment (the interpreter must be on
before triton is imported, and must not leak into other tests), at tiny shapes: the interpreter is ~1e4x slower.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from replknet.ops import available_impls, dwconv2d, reference_dwconv2d, triton_dwconv

HAS_TRITON = importlib.util.find_spec("triton") is not None

# (N, C, H, W, K, dtype, channels_last, bias): several tiles and channel blocks, K=1, non-square maps, H < K.
CASES = {
    "f32-nchw-k7-multitile": (2, 3, 12, 12, 7, "float32", False, True),
    "f32-nchw-k1": (1, 2, 8, 8, 1, "float32", False, False),
    "f32-cl-k3": (1, 4, 8, 8, 3, "float32", True, True),
    "f32-nchw-k13-nonsquare-h<k": (1, 4, 5, 9, 13, "float32", False, True),
    "f32-cl-k7-nonsquare": (1, 3, 6, 10, 7, "float32", True, False),
    "f16-nchw-k7": (1, 2, 8, 8, 7, "float16", False, True),
    "bf16-cl-k7": (1, 2, 8, 8, 7, "bfloat16", True, True),
    "f16-cl-k13-h<k": (1, 2, 4, 6, 13, "float16", True, True),
}
# The dot (tensor-core) path tiles 16 x 16 under the interpreter: a larger map for several tiles (cheap there).
DOT_ONLY_CASES = {"f32-cl-k7-dot-multitile": (1, 3, 20, 18, 7, "float32", True, True)}
RUNS = [(name, "direct") for name in CASES] + [(name, "dot") for name in {**CASES, **DOT_ONLY_CASES}]

IMPORT_CHECK = (
    "import sys, replknet.ops as ops; from replknet.ops import dispatch; "
    "IMPORTED = ['triton' in ops.available_impls(), 'cuda' in dispatch._AUTO_RULES, "
    "'replknet.ops.triton_kernels' in sys.modules]\n"
)

WORKER = (
    IMPORT_CHECK
    + r"""
import json, sys, time, torch
from replknet.ops import DepthwiseConv2d, dwconv2d
from replknet.ops import triton_kernels
from replknet.ops.triton_check import compare_with_float64
from replknet.ops.triton_dwconv import triton_dwconv2d

cases, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {"import": IMPORTED}
for name, path in runs:
    n, c, h, w, k, dtype, channels_last, bias = cases[name]
    triton_kernels.INTERPRET_PATH = path
    tic = time.perf_counter()
    result = compare_with_float64(
        triton_dwconv2d, (n, c, h, w), k, getattr(torch, dtype), channels_last=channels_last, bias=bias, seed=len(name)
    )
    results[f"{name}/{path}"] = dict(result, seconds=time.perf_counter() - tic)
triton_kernels.INTERPRET_PATH = "direct"
# the models' module through the dispatcher, and the mixed-dtype error
torch.manual_seed(0)
conv = DepthwiseConv2d(3, 5, bias=True, impl="triton")
x = torch.randn(1, 3, 6, 6)
results["module"] = {"matches": bool(torch.allclose(conv(x), dwconv2d(x, conv.weight, conv.bias, impl="reference"),
                                                    atol=1e-5, rtol=1e-5))}
try:
    triton_dwconv2d(x.half(), conv.weight, None)
    results["mixed_dtype"] = {"raised": False, "message": ""}
except ValueError as error:
    results["mixed_dtype"] = {"raised": True, "message": str(error)}
print("RESULTS " + json.dumps(results))
"""
)


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    if not HAS_TRITON:
        pytest.skip("triton is not installed: the Triton kernels cannot be checked")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps({**CASES, **DOT_ONLY_CASES}), json.dumps(RUNS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"interpreter worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS ") :])


@pytest.mark.parametrize(("name", "path"), RUNS)
def test_kernels_match_float64(interpreter_results: dict, name: str, path: str) -> None:
    result = interpreter_results[f"{name}/{path}"]
    tolerance = result["tolerance"]
    for key in ("out", "grad_input", "grad_weight", "grad_bias"):
        if key in result:
            assert result[key] <= tolerance, f"{name}: {key} relative error {result[key]:.3g} > {tolerance:.3g}"
    assert result["layout_kept"], f"{name}: output or grad_input lost the input's memory format"
    assert result["dtypes_kept"], f"{name}: output or gradients changed dtype"


def test_module_through_dispatcher_and_dtype_error(interpreter_results: dict) -> None:
    assert interpreter_results["module"]["matches"]
    assert interpreter_results["mixed_dtype"]["raised"]
    assert "one dtype" in interpreter_results["mixed_dtype"]["message"]


def test_checker_catches_a_wrong_convolution() -> None:
    """The float64 check the kernel tests rely on must fail for a subtly wrong convolution (kernel rotated)."""
    from replknet.ops.triton_check import compare_with_float64

    def rotated(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return reference_dwconv2d(x, weight.flip(-1, -2), bias)

    wrong = compare_with_float64(rotated, (1, 2, 6, 6), 3, channels_last=True)
    assert min(wrong["out"], wrong["grad_input"], wrong["grad_weight"]) > 100 * wrong["tolerance"]
    right = compare_with_float64(reference_dwconv2d, (1, 2, 6, 6), 3, channels_last=True)
    assert max(right["out"], right["grad_input"], right["grad_weight"]) < right["tolerance"]


def test_import_registers_without_importing_kernels(request: pytest.FixtureRequest) -> None:
    if HAS_TRITON:  # the worker checked it first thing, before any kernel ran
        imported = request.getfixturevalue("interpreter_results")["import"]
    else:
        code = IMPORT_CHECK + "print(*IMPORTED)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = [word == "True" for word in proc.stdout.split()]
    assert imported == [True, True, False]  # "triton" and the CUDA rule registered; the kernels (triton) not loaded


def test_cpu_without_interpreter_falls_back_to_reference(monkeypatch, caplog) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_dwconv, "_logged", set())
    x, weight, bias = torch.randn(2, 3, 9, 9), torch.randn(3, 1, 5, 5), torch.randn(3)
    with caplog.at_level(logging.WARNING, logger="replknet.ops.triton_dwconv"):
        out = dwconv2d(x, weight, bias, impl="triton")
        dwconv2d(x, weight, bias, impl="triton")
    assert torch.equal(out, reference_dwconv2d(x, weight, bias))
    messages = [r.getMessage() for r in caplog.records if "using the reference" in r.getMessage()]
    assert len(messages) == 1 and "TRITON_INTERPRET" in messages[0]  # logged once, naming the reason


@pytest.mark.parametrize(
    ("x", "kernel_size", "expected"),
    [
        (torch.zeros(1, 2, 4, 4, dtype=torch.float64), 3, "dtype"),
        (torch.zeros(1, 2, 4, 4), 65, "kernel size 65"),
        (torch.zeros(0, 2, 4, 4), 3, "empty"),
    ],
)
def test_unsupported_reasons(monkeypatch, x: torch.Tensor, kernel_size: int, expected: str) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # only the argument checks run here, no kernel
    weight = torch.zeros(x.shape[1], 1, kernel_size, kernel_size, dtype=x.dtype)
    assert expected in triton_dwconv.unsupported_reason(x, weight)


def test_cpu_auto_dispatch_is_not_triton() -> None:
    assert "triton" in available_impls()
    x, weight = torch.randn(1, 2, 6, 6), torch.randn(2, 1, 3, 3)
    assert triton_dwconv.cuda_auto_rule(x, weight) is None  # the CUDA rule never claims a CPU tensor
    assert torch.allclose(dwconv2d(x, weight), reference_dwconv2d(x, weight))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_kernels_match_float64(dtype: torch.dtype, channels_last: bool) -> None:
    from replknet.ops.triton_check import compare_with_float64

    result = compare_with_float64(
        triton_dwconv.triton_dwconv2d, (4, 32, 28, 28), 29, dtype, channels_last=channels_last, device="cuda"
    )
    for key in ("out", "grad_input", "grad_weight", "grad_bias"):
        assert result[key] <= result["tolerance"], (key, result)
    assert result["layout_kept"] and result["dtypes_kept"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_auto_rule_picks_the_measured_winner() -> None:
    triton_dwconv.clear_auto_decisions()
    x = torch.randn(8, 64, 28, 28, device="cuda")
    weight = torch.randn(64, 1, 27, 27, device="cuda")
    choice = triton_dwconv.cuda_auto_rule(x, weight)
    (decision,) = triton_dwconv.auto_decisions()
    assert (choice == "triton") == decision.use_triton
    assert not decision.use_triton or decision.triton_ms < decision.reference_ms


def _compile_for_hopper(kernel, pointer_types: list[str], constexprs: dict, num_warps: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for index, name in enumerate(kernel.arg_names):
        signature[name] = pointer_types[index] if index < len(pointer_types) else "i32"
        if name in constexprs:
            signature[name] = "constexpr"
    source = ASTSource(kernel, signature, constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") != "0", reason="kernels are interpreted in this process")
def test_kernels_compile_for_hopper_without_a_gpu() -> None:
    """Ahead-of-time compile to sm_90 (PTX and cubin): catches GPU-only codegen errors the interpreter cannot see,
    and checks that the dot paths really use tensor-core instructions for half precision."""
    from replknet.ops import triton_kernels as tk

    flags = {"FLIP": True, "HAS_BIAS": True, "DOT_IEEE": False}
    fp32_flags = {**flags, "DOT_IEEE": True}
    direct = _compile_for_hopper(
        tk._dwconv_tile_kernel, ["*bf16"] * 4, {**tk._TILE_CONFIGS_CHANNELS_LAST[0].kwargs, **flags}, 4
    )
    assert direct.asm["cubin"] and "ld.global" in direct.asm["ptx"]
    dot = _compile_for_hopper(tk._dwconv_tile_kernel, ["*bf16"] * 4, {**tk._DOT_TILES[1].kwargs, **flags}, 4)
    assert "mma" in dot.asm["ptx"]
    wgrad_meta = {**tk._DOT_WGRAD[1].kwargs, "DOT_IEEE": False}
    wgrad = _compile_for_hopper(tk._dwconv_weight_grad_kernel, ["*fp16", "*fp16", "*fp32"], wgrad_meta, 4)
    assert "mma" in wgrad.asm["ptx"] and "st.global" in wgrad.asm["ptx"]
    exact = _compile_for_hopper(tk._dwconv_tile_kernel, ["*fp32"] * 4, {**tk._DOT_TILES[0].kwargs, **fp32_flags}, 4)
    assert exact.asm["cubin"]  # fp32 through the dot path: input_precision="ieee"


# The CUDA rule's correctness check, on the CPU: a deliberately wrong kernel injected through the impl registry.


class _RightForwardWrongWeightGrad(torch.autograd.Function):
    """The right forward; the weight gradient of the 180-degree-rotated kernel (wrong only in training)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return reference_dwconv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        with torch.enable_grad():
            x_, w_ = x.detach().requires_grad_(), weight.detach().requires_grad_()
            grad_input, grad_weight = torch.autograd.grad(reference_dwconv2d(x_, w_), (x_, w_), grad_output)
        return grad_input, grad_weight.flip(-1, -2), None


WRONG_KERNELS = {
    "rotated": lambda x, w, b: reference_dwconv2d(x, w.flip(-1, -2), b),
    "ignores_bias": lambda x, w, b: reference_dwconv2d(x, w, None),
    "off_by_1e-4": lambda x, w, b: reference_dwconv2d(x, w, b) * (1 + 1e-4),  # beyond float32's 1e-5
    "wrong_weight_grad": lambda x, w, b: _RightForwardWrongWeightGrad.apply(x, w, b),
}


@pytest.fixture
def fresh_decisions(monkeypatch):
    monkeypatch.setattr(triton_dwconv, "_DECISIONS", {})


def _inject(monkeypatch, fn) -> None:
    from replknet.ops import dispatch

    monkeypatch.setitem(dispatch._IMPLS, "triton", fn)


@pytest.mark.parametrize("name", sorted(WRONG_KERNELS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_auto_check_rejects_a_wrong_kernel(fresh_decisions, monkeypatch, caplog, name, channels_last) -> None:
    _inject(monkeypatch, WRONG_KERNELS[name])
    x = torch.randn(2, 4, 9, 7)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    weight = torch.randn(4, 1, 5, 5)
    backward = name == "wrong_weight_grad"  # its forward is right: only a training check can catch it
    with caplog.at_level(logging.WARNING, logger="replknet.ops.triton_dwconv"):
        decision = triton_dwconv.decide(x, weight, backward)
        again = triton_dwconv.decide(x, weight, backward)
    assert again is decision  # cached per shape key: checked once
    assert decision.correct is False and not decision.use_triton
    assert max(decision.errors.values()) > decision.tolerance == 1e-5
    warnings = [r.getMessage() for r in caplog.records if "differs from the reference" in r.getMessage()]
    assert len(warnings) == 1 and "cuDNN" in warnings[0]


def test_auto_check_covers_gradients_only_when_training(fresh_decisions, monkeypatch) -> None:
    _inject(monkeypatch, WRONG_KERNELS["wrong_weight_grad"])
    x, weight = torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3)
    inference = triton_dwconv.decide(x, weight, backward=False)
    assert inference.correct and set(inference.errors) == {"out", "out_bias"}
    assert inference.triton_ms > 0 and inference.reference_ms > 0  # timed (wall clock on the CPU)
    training = triton_dwconv.decide(x, weight, backward=True)
    assert training.correct is False and not training.use_triton
    assert training.errors["grad_weight"] > 1e-3 and training.errors["grad_input"] < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_auto_check_passes_a_right_kernel_within_the_dtype_tolerance(fresh_decisions, monkeypatch, dtype) -> None:
    from replknet.ops import dispatch
    from replknet.ops.triton_check import TOLERANCES

    _inject(monkeypatch, dispatch._IMPLS["native_cl"])  # float32 compute, one rounding to the storage dtype
    x, weight = torch.randn(2, 4, 10, 10).to(dtype), (torch.randn(4, 1, 7, 7) / 7).to(dtype)
    decision = triton_dwconv.decide(x, weight, backward=True)
    assert decision.correct and decision.tolerance == TOLERANCES[dtype]
    assert set(decision.errors) == {"out", "out_bias", "grad_input", "grad_weight"}
    # the same kernel 0.5% off: inside bfloat16's tolerance (1.6e-2), outside float16's (2e-3) and float32's
    _inject(monkeypatch, lambda x, w, b: dispatch._IMPLS["native_cl"](x, w, b) * 1.005)
    off = triton_dwconv.decide(x, weight, backward=False)
    assert off.correct == (dtype == torch.bfloat16)


def test_auto_check_under_autocast_uses_the_autocast_dtype(fresh_decisions, monkeypatch) -> None:
    from replknet.ops import dispatch
    from replknet.ops.triton_check import TOLERANCES

    _inject(monkeypatch, dispatch._IMPLS["native_cl"])
    x, weight = torch.randn(1, 4, 10, 10), torch.randn(4, 1, 5, 5) / 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decision = triton_dwconv.decide(x, weight, backward=False)
    assert decision.correct and decision.tolerance == TOLERANCES[torch.bfloat16]
    assert "torch.bfloat16" in decision.key  # a separate verdict from the float32 one
    assert triton_dwconv.decide(x, weight, backward=False).key != decision.key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_auto_rule_falls_back_from_a_wrong_kernel(fresh_decisions, monkeypatch) -> None:
    _inject(monkeypatch, WRONG_KERNELS["rotated"])
    x, weight = torch.randn(4, 32, 28, 28, device="cuda"), torch.randn(32, 1, 13, 13, device="cuda")
    assert triton_dwconv.cuda_auto_rule(x, weight) is None
    (decision,) = triton_dwconv.auto_decisions()
    assert decision.correct is False
    assert torch.allclose(dwconv2d(x, weight), reference_dwconv2d(x, weight))
