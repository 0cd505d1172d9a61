"""Dilated depthwise convolution (UniRepLKNet's branches): every implementation against float64 ``F.conv2d``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import replknet.ops as ops
from replknet.ops import cpu_dilated
from replknet.testing import relative_error

# every (k, r) of UniRepLKNet's DilatedReparamBlock table with r > 1, and the r = 1 branch
BRANCHES = ((3, 2), (3, 3), (3, 4), (3, 5), (3, 7), (5, 2), (7, 2), (9, 2), (5, 1))
DILATED_IMPLS = ("reference", "native_nchw", "native_cl", "dense", "polyphase", "hybrid", "auto")
# implementations without a dilated form run on the dense equivalent kernel
DENSE_ONLY_IMPLS = ("fft", "toeplitz")


def _float64_reference(x, weight, bias, grad_output, dilation):
    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    padding = dilation * (weight.shape[-1] - 1) // 2
    y = F.conv2d(x64, w64, b64, padding=padding, dilation=dilation, groups=x.shape[1])
    y.backward(grad_output.double())
    return y.detach(), x64.grad, w64.grad, b64.grad


def _run(impl, x, weight, bias, grad_output, dilation):
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_()
    y = ops.dwconv2d(x, weight, bias, impl=impl, dilation=dilation)
    y.backward(grad_output)
    return y.detach(), x.grad, weight.grad, bias.grad


def _shapes(extent: int) -> list[tuple[int, int, int, int]]:
    # larger than the extent, non-square with H and W not multiples of r, smaller than the extent (taps cropped),
    # and a plane smaller than the dilation itself
    return [(2, 3, extent + 4, extent + 1), (1, 2, 7, 5), (1, 4, max(1, extent // 2), extent + 2), (2, 2, 2, 3)]


@pytest.mark.parametrize("impl", DILATED_IMPLS + DENSE_ONLY_IMPLS)
@pytest.mark.parametrize(("kernel_size", "dilation"), BRANCHES)
def test_matches_float64_reference(impl: str, kernel_size: int, dilation: int) -> None:
    generator = torch.Generator().manual_seed(100 * kernel_size + dilation)
    for batch, channels, height, width in _shapes(dilation * (kernel_size - 1) + 1):
        x = torch.randn(batch, channels, height, width, generator=generator)
        weight = torch.randn(channels, 1, kernel_size, kernel_size, generator=generator)
        bias = torch.randn(channels, generator=generator)
        grad_output = torch.randn(batch, channels, height, width, generator=generator)
        expected = _float64_reference(x, weight, bias, grad_output, dilation)
        got = _run(impl, x, weight, bias, grad_output, dilation)
        for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
            assert g.dtype == torch.float32 and g.shape == e.shape, name
            err = relative_error(g, e)
            assert err < 2e-5, f"{impl} k={kernel_size} r={dilation} {tuple(x.shape)} {name}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", ["dense", "polyphase", "hybrid"])
@pytest.mark.parametrize(("shape", "kernel_size", "dilation"), [((1, 2, 7, 6), 3, 2), ((2, 1, 5, 9), 3, 3)])
def test_gradcheck(impl: str, shape: tuple[int, int, int, int], kernel_size: int, dilation: int) -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(shape[1], 1, kernel_size, kernel_size, dtype=torch.float64, generator=generator)
    bias = torch.randn(shape[1], dtype=torch.float64, generator=generator, requires_grad=True)
    weight.requires_grad_()

    def conv(a, b, c):
        return ops.dwconv2d(a, b, c, impl=impl, dilation=dilation)

    assert torch.autograd.gradcheck(conv, (x, weight, bias), fast_mode=True)


@pytest.mark.parametrize("impl", DILATED_IMPLS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_memory_format_is_kept(impl: str, channels_last: bool) -> None:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 9, 11).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(8, 1, 3, 3, requires_grad=True)
    y = ops.dwconv2d(x, weight, impl=impl, dilation=3)
    assert y.is_contiguous(memory_format=memory_format)
    y.backward(torch.randn_like(y))
    assert x.grad.shape == x.shape and x.grad.is_contiguous(memory_format=memory_format)
    expected = F.conv2d(x.detach().double(), weight.detach().double(), padding=3, dilation=3, groups=8)
    assert relative_error(y, expected) < 2e-5


LOW_PRECISION_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("impl", ["native_nchw", "native_cl", "dense", "polyphase", "hybrid", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 5), (7, 2), (9, 2)])
def test_low_precision(impl: str, dtype: torch.dtype, kernel_size: int, dilation: int) -> None:
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 12, 10, generator=generator).to(dtype)
    weight = (torch.randn(4, 1, kernel_size, kernel_size, generator=generator) / kernel_size).to(dtype)
    bias = torch.randn(4, generator=generator).to(dtype)
    grad_output = torch.randn(2, 4, 12, 10, generator=generator).to(dtype)
    expected = _float64_reference(x, weight, bias, grad_output, dilation)
    got = _run(impl, x, weight, bias, grad_output, dilation)
    for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
        assert g.dtype == dtype, name
        err = relative_error(g, e)
        assert err < LOW_PRECISION_TOLERANCE[dtype], f"{impl} {dtype} {name}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", ["native_nchw", "dense", "polyphase", "hybrid", "auto"])
def test_autocast_bfloat16_follows_conv2d(impl: str) -> None:
    x = torch.randn(2, 4, 16, 16)
    weight = (torch.randn(4, 1, 5, 5) / 5).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.dwconv2d(x, weight, impl=impl, dilation=2)
        y_reference = ops.dwconv2d(x, weight, impl="reference", dilation=2)
    assert y.dtype == y_reference.dtype == torch.bfloat16
    y.float().sum().backward()
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    expected = F.conv2d(x.bfloat16().double(), weight.detach().bfloat16().double(), padding=4, dilation=2, groups=4)
    assert relative_error(y, expected) < LOW_PRECISION_TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize(("kernel_size", "dilation"), [(3, 2), (7, 2), (3, 5)])
def test_module_state_dict_is_that_of_conv2d(kernel_size: int, dilation: int) -> None:
    padding = dilation * (kernel_size - 1) // 2
    module = ops.DepthwiseConv2d(6, kernel_size, bias=True, dilation=dilation)
    conv = nn.Conv2d(6, 6, kernel_size, padding=padding, dilation=dilation, groups=6, bias=True)
    assert {k: v.shape for k, v in module.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    assert (module.padding, module.dilation) == (conv.padding, conv.dilation)
    module.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 6, 15, 12)
    assert relative_error(module(x), conv(x).double()) < 2e-5
    assert f"dilation=({dilation}, {dilation})" in repr(module)


def test_unreachable_taps_are_cropped_and_get_zero_gradient() -> None:
    weight = torch.randn(4, 1, 3, 3)
    assert cpu_dilated.reachable_kernel(weight, 7, 7, 7).shape[-1] == 1  # offsets of +-7 miss a 7x7 plane
    assert cpu_dilated.reachable_kernel(weight, 7, 7, 8) is weight  # a width of 8 reaches them
    assert cpu_dilated.reachable_kernel(torch.randn(2, 1, 9, 9), 2, 5, 5).shape[-1] == 5  # reach (5 - 1) // 2 = 2
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    weight.requires_grad_()
    ops.dwconv2d(x, weight, impl="hybrid", dilation=7).sum().backward()
    ring = weight.grad.clone()
    ring[:, :, 1, 1] = 0
    assert torch.count_nonzero(ring) == 0 and torch.count_nonzero(weight.grad[:, :, 1, 1]) == 4


def test_space_to_batch_round_trip() -> None:
    x = torch.randn(2, 3, 11, 7)
    for dilation in (1, 2, 3, 5):
        sub = cpu_dilated.space_to_batch(x, dilation)
        assert sub.shape == (2 * dilation**2, 3, -(-11 // dilation), -(-7 // dilation))
        assert torch.equal(cpu_dilated.batch_to_space(sub, dilation, 11, 7), x)
    # sub-grid (s, t) of sample n is batch entry (n r + s) r + t
    assert torch.equal(cpu_dilated.space_to_batch(x, 2)[4 + 2 + 1, :, :5, :3], x[1, :, 1::2, 1::2])


def test_dilate_kernel_places_the_taps() -> None:
    weight = torch.randn(2, 1, 3, 3)
    dense = ops.dilate_kernel(weight, 3)
    assert dense.shape == (2, 1, 7, 7)
    assert torch.equal(dense[:, :, ::3, ::3], weight) and torch.count_nonzero(dense) == torch.count_nonzero(weight)
    assert ops.dilate_kernel(weight, 1) is weight


def test_override_of_a_composite_impl_does_not_recurse() -> None:
    x, weight = torch.randn(1, 2, 9, 9), torch.randn(2, 1, 3, 3)
    for name in ("polyphase", "dense", "hybrid"):
        with ops.impl_override(name):
            for dilation in (1, 2):
                y = ops.dwconv2d(x, weight, dilation=dilation)
                expected = F.conv2d(x.double(), weight.double(), padding=dilation, dilation=dilation, groups=2)
                assert relative_error(y, expected) < 2e-5, (name, dilation)


def test_auto_rule() -> None:
    rule = cpu_dilated.cpu_dilated_auto_rule
    limit = cpu_dilated._JIT_DW_MAX_EXTENT
    for kernel_size, dilation in BRANCHES:
        if dilation == 1:
            continue  # the dispatcher asks the dilation-1 rule
        weight = torch.empty(64, 1, kernel_size, kernel_size)
        extent = dilation * (kernel_size - 1) + 1
        for plane, channels_last in ((28, False), (14, True), (28, True)):
            x = torch.empty(16, 64, plane, plane)
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            native = "native_cl" if channels_last else "native_nchw"
            forward = native if extent <= limit or kernel_size == 3 else "polyphase"
            assert rule(x, weight, dilation) == forward
            train = "hybrid" if extent <= limit or kernel_size > 3 else "polyphase"
            if channels_last and plane == 28 and kernel_size == 3:
                train = "native_cl"
            assert rule(x.requires_grad_(), weight, dilation) == train, (kernel_size, dilation, plane, channels_last)
            with torch.no_grad():
                assert rule(x, weight, dilation) == forward
    # channels_last input keeps its layout only while the extent fits in the plane
    x = torch.empty(1, 256, 7, 7).contiguous(memory_format=torch.channels_last)
    assert rule(x, torch.empty(256, 1, 3, 3), 3) == "native_cl"
    assert rule(x, torch.empty(256, 1, 3, 3), 4) == "native_nchw"
    # a 3x3 kernel at dilation 7 on a 7x7 plane is cropped to its centre, a 1x1 kernel: kept dilated (oneDNN) where
    # aten would send an undilated one to its slow path (batch < 16, one thread), the dilation-1 rule elsewhere
    assert rule(torch.empty(1, 8, 7, 7, requires_grad=True), torch.empty(8, 1, 3, 3), 7) == "native_nchw"
    assert rule(torch.empty(16, 8, 7, 7, requires_grad=True), torch.empty(8, 1, 3, 3), 7) == "dense"


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_uses_reference_convolution() -> None:
    module = ops.DepthwiseConv2d(4, 3, dilation=3)
    traced = torch.jit.trace(module, torch.randn(1, 4, 20, 20))
    graph = str(traced.inlined_graph)
    assert "aten::_convolution" in graph or "aten::conv2d" in graph
    x = torch.randn(1, 4, 20, 20)
    assert relative_error(traced(x), module(x).double()) < 2e-5


def test_bad_dilation_is_named() -> None:
    x, weight = torch.randn(1, 4, 8, 8), torch.randn(4, 1, 3, 3)
    for dilation in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="dilation"):
            ops.dwconv2d(x, weight, dilation=dilation)
    with pytest.raises(ValueError, match="dilation"):
        ops.DepthwiseConv2d(4, 3, dilation=0)
    with pytest.raises(ValueError, match="unknown depthwise conv impl"):
        ops.dwconv2d(x, weight, impl="nope", dilation=2)


# ``hybrid_nchw``: the dilated hybrid at dilation 1, a dilation-1 implementation of its own


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 13, 27])
@pytest.mark.parametrize("channels_last", [False, True])
def test_hybrid_nchw_matches_float64_reference(kernel_size: int, channels_last: bool) -> None:
    generator = torch.Generator().manual_seed(kernel_size)
    # planes above and below the Toeplitz grad_weight's 64 pixels, smaller than the kernel, non-square
    for batch, channels, height, width in [(2, 3, 12, 9), (1, 4, 5, 7), (3, 2, 4, 3)]:
        x = torch.randn(batch, channels, height, width, generator=generator)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        weight = torch.randn(channels, 1, kernel_size, kernel_size, generator=generator)
        bias = torch.randn(channels, generator=generator)
        grad_output = torch.randn(batch, channels, height, width, generator=generator)
        expected = _float64_reference(x, weight, bias, grad_output, 1)
        got = _run("hybrid_nchw", x, weight, bias, grad_output, 1)
        assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
            err = relative_error(g, e)
            assert err < 2e-5, f"K={kernel_size} {tuple(x.shape)} {name}: relative error {err:.2e}"


def test_hybrid_nchw_gradcheck_and_low_precision() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, generator=generator, requires_grad=True)
    conv = lambda a, b, c: ops.dwconv2d(a, b, c, impl="hybrid_nchw")  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, weight, bias), fast_mode=True)
    for dtype, tolerance in LOW_PRECISION_TOLERANCE.items():
        xl, wl = x.detach().to(dtype), (weight.detach() / 5).to(dtype)
        bl, gl = bias.detach().to(dtype), torch.randn(2, 2, 5, 4, generator=generator).to(dtype)
        expected = _float64_reference(xl, wl, bl, gl, 1)
        for g, e in zip(_run("hybrid_nchw", xl, wl, bl, gl, 1), expected, strict=True):
            assert g.dtype == dtype and relative_error(g, e) < tolerance


def test_avx512_auto_rule_routes(monkeypatch) -> None:
    from replknet.ops import cpu as ops_cpu

    monkeypatch.setattr(ops_cpu, "_NCHW_FORWARD_MAX_KERNEL", 13)  # AVX-512's jit_dw limit, on any machine
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    rule = ops_cpu.cpu_auto_rule

    def choose(batch, channels, size, kernel_size, channels_last=False, grad=False):
        x = torch.empty(batch, channels, size, size, requires_grad=grad)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        return rule(x, torch.empty(channels, 1, kernel_size, kernel_size))

    # UniRepLKNet's stages (S widths): jit_dw up to K = 13 before the FFT, Toeplitz and channels_last brdgmm
    assert choose(1, 96, 56, 13) == "native_nchw"  # the FFT's plane size
    assert choose(16, 768, 7, 13) == "native_nchw"  # the Toeplitz batch and plane
    assert choose(16, 192, 28, 13, channels_last=True) == "native_nchw"  # brdgmm's K = 13
    assert choose(16, 192, 28, 11, channels_last=True) == "native_cl"
    # training: aten's own for K = 3, else the hybrid (jit_dw forward where it covers K, swapped-role or Toeplitz
    # grad_weight; it does hybrid_nchw's work with a faster grad_weight, docs/ops.md)
    assert choose(16, 96, 56, 3, grad=True) == "native_nchw"
    for kernel_size in (5, 7, 13):
        assert choose(16, 192, 28, kernel_size, grad=True) == "hybrid"
        assert choose(16, 768, 7, kernel_size, grad=True) == "hybrid"
        assert choose(16, 192, 28, kernel_size, channels_last=True, grad=True) == "hybrid"
    assert choose(16, 96, 56, 13, grad=True) == "hybrid"  # level with the FFT
    # beyond K = 13
    assert choose(32, 512, 14, 27) == "toeplitz" and choose(16, 128, 56, 31, grad=True) == "fft"
