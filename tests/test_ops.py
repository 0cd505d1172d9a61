"""Correctness of every depthwise convolution implementation against a float64 ``F.conv2d`` reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import replknet.ops as ops
from replknet.ops import cpu as ops_cpu
from replknet.testing import randomize_bn_stats, relative_error

CPU_IMPLS = ("reference", "native_nchw", "native_cl", "fft", "hybrid", "toeplitz", "auto")
KERNELS = (1, 3, 5, 7, 13, 27, 29, 31, 51)


def _random_shape(kernel_size: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A small (B, C, H, W): B=1 and H, W < K and non-square all occur over the kernel sizes."""
    batch = int(torch.randint(1, 3, (1,), generator=generator))
    channels = int(torch.randint(1, 5, (1,), generator=generator))
    height = int(torch.randint(1, 20, (1,), generator=generator))
    width = int(torch.randint(1, 20, (1,), generator=generator))
    return batch, channels, height, width


def _float64_reference(x, weight, bias, grad_output):
    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    y = F.conv2d(x64, w64, b64, padding=weight.shape[-1] // 2, groups=x.shape[1])
    y.backward(grad_output.double())
    return y.detach(), x64.grad, w64.grad, b64.grad


def _run(impl, x, weight, bias, grad_output):
    x = x.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_()
    y = ops.dwconv2d(x, weight, bias, impl=impl)
    y.backward(grad_output)
    return y.detach(), x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("kernel_size", KERNELS)
def test_matches_float64_reference(impl: str, kernel_size: int) -> None:
    generator = torch.Generator().manual_seed(1000 + kernel_size)
    shapes = [_random_shape(kernel_size, generator) for _ in range(2)]
    shapes.append((1, 3, max(1, kernel_size // 2), kernel_size + 2))  # B=1, H < K, non-square
    for batch, channels, height, width in shapes:
        x = torch.randn(batch, channels, height, width, generator=generator)
        weight = torch.randn(channels, 1, kernel_size, kernel_size, generator=generator)
        bias = torch.randn(channels, generator=generator)
        grad_output = torch.randn(batch, channels, height, width, generator=generator)
        expected = _float64_reference(x, weight, bias, grad_output)
        got = _run(impl, x, weight, bias, grad_output)
        for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
            assert g.dtype == torch.float32, name
            assert g.shape == e.shape, name
            err = relative_error(g, e)
            assert err < 2e-5, f"{impl} K={kernel_size} {tuple(x.shape)} {name}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_memory_format_is_kept(impl: str, channels_last: bool) -> None:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 9, 11).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(8, 1, 7, 7, requires_grad=True)
    y = ops.dwconv2d(x, weight, impl=impl)
    assert y.is_contiguous(memory_format=memory_format)
    y.backward(torch.randn_like(y))
    assert x.grad.shape == x.shape
    expected = F.conv2d(x.detach().double(), weight.detach().double(), padding=3, groups=8)
    assert relative_error(y, expected) < 2e-5


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_strided_views_take_the_layout_aten_suggests(impl: str) -> None:
    """A channel slice of NHWC activations permuted to NCHW (timm's MambaOut) is neither layout; like ``F.conv2d``
    the op treats it by its stride order (channels_last) and returns channels_last, and every value is right."""
    nhwc = torch.randn(2, 9, 11, 24)
    x = nhwc[..., 8:16].permute(0, 3, 1, 2).requires_grad_()
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 1, 7, 7, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    y = ops.dwconv2d(x, weight, bias, impl=impl)
    aten = F.conv2d(x.detach(), weight.detach(), padding=3, groups=8)
    assert y.is_contiguous(memory_format=torch.channels_last) == aten.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last)
    grad_output = torch.randn(y.shape, dtype=torch.float64)
    y.backward(grad_output.float())
    expected = _float64_reference(x, weight, bias, grad_output)
    assert relative_error(y, expected[0]) < 2e-5
    assert relative_error(x.grad, expected[1]) < 2e-5 and relative_error(weight.grad, expected[2]) < 2e-5
    # A plain NCHW tensor with a transposed plane is NCHW-ordered: it stays in the contiguous format.
    transposed = torch.randn(2, 8, 11, 9).transpose(2, 3)
    assert ops.dwconv2d(transposed, weight.detach(), impl=impl).is_contiguous()


# The native impls are aten's own autograd (checked against float64 above); gradcheck the hand-written backwards.
@pytest.mark.parametrize("impl", ["fft", "hybrid", "toeplitz"])
@pytest.mark.parametrize("shape,kernel_size", [((1, 2, 4, 3), 5), ((2, 1, 3, 3), 7)])
def test_gradcheck(impl: str, shape: tuple[int, int, int, int], kernel_size: int) -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(shape[1], 1, kernel_size, kernel_size, dtype=torch.float64, generator=generator)
    bias = torch.randn(shape[1], dtype=torch.float64, generator=generator, requires_grad=True)
    weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: ops.dwconv2d(a, b, c, impl=impl), (x, weight, bias), fast_mode=True)


# Documented tolerances (docs/ops.md): relative error of a low-precision result against float64 on the
# same (rounded) inputs. The fast paths compute in float32 and round once, so they sit at the format's
# rounding error; the reference bf16/fp16 convolution accumulates in low precision and is looser.
LOW_PRECISION_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("impl", ["fft", "hybrid", "toeplitz", "native_cl", "native_nchw", "auto"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kernel_size", [5, 13, 31])
def test_low_precision(impl: str, dtype: torch.dtype, kernel_size: int) -> None:
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 12, 10, generator=generator).to(dtype)
    weight = (torch.randn(4, 1, kernel_size, kernel_size, generator=generator) / kernel_size).to(dtype)
    bias = torch.randn(4, generator=generator).to(dtype)
    grad_output = torch.randn(2, 4, 12, 10, generator=generator).to(dtype)
    expected = _float64_reference(x, weight, bias, grad_output)
    got = _run(impl, x, weight, bias, grad_output)
    for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
        assert g.dtype == dtype, name
        err = relative_error(g, e)
        assert err < LOW_PRECISION_TOLERANCE[dtype], f"{impl} {dtype} {name}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", ["fft", "hybrid", "toeplitz", "native_cl", "auto"])
def test_autocast_bfloat16_follows_conv2d(impl: str) -> None:
    x = torch.randn(2, 4, 16, 16)
    weight = (torch.randn(4, 1, 13, 13) / 13).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.dwconv2d(x, weight, impl=impl)
        y_reference = ops.dwconv2d(x, weight, impl="reference")
    assert y.dtype == y_reference.dtype == torch.bfloat16
    y.float().sum().backward()
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    expected = F.conv2d(x.bfloat16().double(), weight.detach().bfloat16().double(), padding=6, groups=4)
    assert relative_error(y, expected) < LOW_PRECISION_TOLERANCE[torch.bfloat16]


def test_module_state_dict_is_that_of_conv2d() -> None:
    module = ops.DepthwiseConv2d(6, 9, bias=True)
    conv = nn.Conv2d(6, 6, 9, padding=4, groups=6, bias=True)
    assert {k: v.shape for k, v in module.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    module.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 6, 11, 8)
    assert relative_error(module(x), conv(x).double()) < 2e-5
    assert isinstance(module, nn.Conv2d)


def test_replknet_tiny_same_with_reference_and_auto() -> None:
    import replknet

    torch.manual_seed(0)
    model = replknet.create_model("replknet_tiny", num_classes=10)
    randomize_bn_stats(model)
    model.eval()  # running statistics: every parameter, BN biases included, gets a non-trivial gradient
    x = torch.randn(2, 3, 64, 64)

    def output_and_grads(impl: str):
        model.zero_grad()
        with ops.impl_override(impl):
            y = model(x)
        y.square().sum().backward()
        return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    y_ref, grads_ref = output_and_grads("reference")
    y_auto, grads_auto = output_and_grads("auto")
    assert relative_error(y_auto, y_ref) < 1e-4
    assert grads_ref.keys() == grads_auto.keys() and len(grads_ref) == len(list(model.parameters()))
    for name, grad in grads_ref.items():
        assert relative_error(grads_auto[name], grad) < 1e-3, name


def test_auto_rule_picks_registered_cpu_impls() -> None:
    for kernel_size in KERNELS + (63,):
        for size in (7, 14, 28, 56):
            for grad in (False, True):
                x = torch.empty(16, 64, size, size, requires_grad=grad)
                weight = torch.empty(64, 1, kernel_size, kernel_size)
                choice = ops_cpu.cpu_auto_rule(x, weight)
                assert choice in ops.available_impls()


@pytest.mark.parametrize(
    "batch,channels,size,kernel_size,expected",
    [
        (32, 512, 14, 27, "toeplitz"),  # RepLKNet-31B stage 3 at B=32: the matrices pay
        (8, 512, 14, 27, "native_cl"),  # stage 3 at B=8: oneDNN's channels_last forward still ahead
        (1, 512, 14, 27, "native_cl"),  # B=1 inference: building the matrices would dominate
        (32, 1024, 7, 13, "native_nchw"),  # stage 4: oneDNN's NCHW kernel covers K=13 (AVX-512)
        (32, 1024, 7, 27, "toeplitz"),  # a kernel beyond it on a tiny plane
        (16, 128, 56, 31, "fft"),  # stage 1
        (8, 256, 28, 29, "fft"),  # stage 2, NCHW float32: the FFT, level with oneDNN
        (16, 64, 14, 13, "native_nchw"),  # kernel smaller than twice the plane: no Toeplitz
    ],
)
def test_auto_rule_on_replknet_stage_shapes(batch, channels, size, kernel_size, expected, monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the thresholds measured with one thread
    monkeypatch.setattr(ops_cpu, "_NCHW_FORWARD_MAX_KERNEL", 13)  # AVX-512's jit_dw limit, on any machine
    x = torch.empty(batch, channels, size, size)
    weight = torch.empty(channels, 1, kernel_size, kernel_size)
    assert ops_cpu.cpu_auto_rule(x, weight) == expected
    channels_last = x.contiguous(memory_format=torch.channels_last)
    if expected == "toeplitz" or (expected == "fft" and size == 28):  # channels_last input keeps oneDNN's kernel
        assert ops_cpu.cpu_auto_rule(channels_last, weight) == "native_cl"


@pytest.mark.parametrize(
    "batch,channels,size,kernel_size,grad,expected",
    [
        (8, 128, 56, 31, False, "fft"),  # stage 1: the FFT still beats oneDNN's bf16 forward
        (8, 256, 28, 29, False, "native_cl"),  # stage 2 inference: oneDNN bf16 ahead of the float32 FFT
        (8, 256, 28, 29, True, "hybrid"),  # stage 2 training: bf16 oneDNN passes, FFT grad_weight
        (8, 512, 14, 27, False, "native_cl"),  # stage 3 inference at B=8: the bf16 forward beats the matrices
        (8, 512, 14, 27, True, "hybrid"),  # stage 3 training at B=8: swapped-role grad_weight
        (32, 512, 14, 27, True, "toeplitz"),  # at B=32 the bf16 GEMMs pay for their matrices
        (32, 1024, 7, 13, True, "hybrid"),  # 7x7: NCHW forward and Toeplitz grad_weight, no forward matrices
        (8, 512, 14, 5, True, "hybrid"),  # the 5x5 re-param branch: swapped-role grad_weight
        (8, 512, 14, 3, True, "native_nchw"),  # 3x3: aten's own
    ],
)
def test_auto_rule_in_bfloat16_on_bf16_hardware(batch, channels, size, kernel_size, grad, expected, monkeypatch):
    from replknet.ops import precision

    monkeypatch.setattr(precision, "bf16_hardware", lambda: True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(ops_cpu, "_NCHW_FORWARD_MAX_KERNEL", 13)
    x = torch.empty(batch, channels, size, size, dtype=torch.bfloat16, requires_grad=grad)
    weight = torch.empty(channels, 1, kernel_size, kernel_size, dtype=torch.bfloat16)
    assert ops_cpu.cpu_auto_rule(x, weight) == expected
    monkeypatch.setattr(precision, "bf16_hardware", lambda: False)  # bf16 computed in float32: the float32 rule
    assert ops_cpu.cpu_auto_rule(x, weight) == ops_cpu.cpu_auto_rule(x.detach().float().requires_grad_(grad), weight)


@pytest.mark.parametrize(
    "kernel_size,size,batch,expected",
    [(5, 56, 8, "swapped"), (13, 56, 8, "fft"), (31, 56, 32, "fft"), (27, 28, 8, "swapped"), (31, 28, 8, "fft")]
    + [(27, 14, 8, "swapped"), (27, 14, 32, "toeplitz"), (13, 14, 32, "swapped")]  # 13x13 does not cover 14x14
    + [(7, 7, 32, "swapped"), (13, 7, 8, "toeplitz")],
)
def test_hybrid_grad_weight_rule(kernel_size: int, size: int, batch: int, expected: str) -> None:
    assert ops_cpu._grad_weight_method(kernel_size, size * size, batch) == expected


def test_toeplitz_needs_a_larger_batch_with_more_threads(monkeypatch) -> None:
    weight = torch.empty(512, 1, 27, 27)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert ops_cpu.cpu_auto_rule(torch.empty(24, 512, 14, 14), weight) == "toeplitz"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert ops_cpu.cpu_auto_rule(torch.empty(24, 512, 14, 14), weight) == "native_cl"
    assert ops_cpu.cpu_auto_rule(torch.empty(36, 512, 14, 14), weight) == "toeplitz"


def test_toeplitz_refuses_planes_whose_matrices_would_not_fit() -> None:
    x, weight = torch.randn(1, 2, 65, 64), torch.randn(2, 1, 31, 31)
    with pytest.raises(ValueError, match=r"65x64 plane needs 66 MiB per channel.*impl='auto'"):
        ops.dwconv2d(x, weight, impl="toeplitz")


def test_toeplitz_batch_larger_than_a_chunk_of_channels() -> None:
    # more channels than one cache-sized chunk of matrices holds: every chunk must land on its own channels
    x = torch.randn(9, 40, 14, 14, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 1, 27, 27, dtype=torch.float64, requires_grad=True)
    grad_output = torch.randn(9, 40, 14, 14, dtype=torch.float64)
    y = ops.dwconv2d(x, weight, impl="toeplitz")
    y.backward(grad_output)
    expected = F.conv2d(x, weight, padding=13, groups=40)
    gx, gw = torch.autograd.grad(expected, (x, weight), grad_output)
    assert relative_error(y, expected) < 1e-12
    assert relative_error(x.grad, gx) < 1e-12 and relative_error(weight.grad, gw) < 1e-12


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_uses_reference_convolution() -> None:
    module = ops.DepthwiseConv2d(4, 31)
    traced = torch.jit.trace(module, torch.randn(1, 4, 20, 20))
    assert "aten::_convolution" in str(traced.inlined_graph) or "aten::conv2d" in str(traced.inlined_graph)
    x = torch.randn(1, 4, 20, 20)
    assert relative_error(traced(x), module(x).double()) < 2e-5


def test_bad_input_is_named() -> None:
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="odd kernel"):
        ops.dwconv2d(x, torch.randn(4, 1, 4, 4))
    with pytest.raises(ValueError, match="weight of shape"):
        ops.dwconv2d(x, torch.randn(3, 1, 5, 5))
    with pytest.raises(ValueError, match="4-D input"):
        ops.dwconv2d(x[0], torch.randn(4, 1, 5, 5))
    with pytest.raises(ValueError, match="unknown depthwise conv impl"):
        ops.dwconv2d(x, torch.randn(4, 1, 5, 5), impl="nope")
    with pytest.raises(ValueError, match="unknown depthwise conv impl"), ops.impl_override("nope"):
        pass


@pytest.mark.parametrize(
    "shape,kernel_size",
    [((2, 3, 14, 14), 5), ((1, 2, 7, 9), 13), ((3, 2, 6, 5), 3), ((2, 4, 4, 4), 27), ((1, 1, 1, 1), 7)],
)
@pytest.mark.parametrize("chunk_bytes", [None, 1])  # None: the default chunks; 1: one sample per oneDNN call
def test_swapped_grad_weight_matches_float64(shape, kernel_size: int, chunk_bytes: int | None, monkeypatch) -> None:
    if chunk_bytes is not None:
        monkeypatch.setattr(ops_cpu, "_SWAPPED_CHUNK_BYTES", chunk_bytes)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator)
    grad_output = torch.randn(*shape, dtype=torch.float64, generator=generator)
    weight_shape = (shape[1], 1, kernel_size, kernel_size)
    expected = torch.nn.grad.conv2d_weight(x, weight_shape, grad_output, padding=kernel_size // 2, groups=shape[1])
    for layout in (torch.contiguous_format, torch.channels_last):
        got = ops_cpu.swapped_grad_weight(x.contiguous(memory_format=layout), grad_output, kernel_size)
        assert got.shape == weight_shape and got.dtype == torch.float64
        assert relative_error(got, expected) < 1e-12


@pytest.mark.parametrize("method", ["toeplitz", "swapped", "fft"])
def test_hybrid_grad_weight_methods(method: str, monkeypatch) -> None:
    # every weight-gradient method the hybrid can pick, forced on one shape: gradcheck in float64, bf16 tolerance
    monkeypatch.setattr(ops_cpu, "_grad_weight_method", lambda kernel_size, pixels, batch: method)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(3, 1, 7, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.dwconv2d(a, b, impl="hybrid"), (x, weight), fast_mode=True)
    x = torch.randn(2, 4, 9, 11, generator=generator).bfloat16()
    weight = (torch.randn(4, 1, 7, 7, generator=generator) / 7).bfloat16()
    bias = torch.randn(4, generator=generator).bfloat16()
    grad_output = torch.randn(2, 4, 9, 11, generator=generator).bfloat16()
    expected = _float64_reference(x, weight, bias, grad_output)
    got = _run("hybrid", x, weight, bias, grad_output)
    for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
        assert g.dtype == torch.bfloat16, name
        assert relative_error(g, e) < LOW_PRECISION_TOLERANCE[torch.bfloat16], f"{method} {name}"


@pytest.mark.parametrize("bf16_hardware", [False, True])
@pytest.mark.parametrize("impl", ["hybrid", "toeplitz", "native_cl", "native_nchw"])
def test_bfloat16_matrix_passes_with_and_without_bf16_hardware(impl: str, bf16_hardware: bool, monkeypatch) -> None:
    # with bf16 instructions the oneDNN and GEMM passes compute in bf16 (float32 accumulation), without them in
    # float32: both within the bf16 tolerance, and the dtype that reaches the convolution/GEMM is the one chosen
    from replknet.ops import precision

    generator = torch.Generator().manual_seed(13)
    x = torch.randn(3, 4, 7, 6, generator=generator).bfloat16()
    weight = (torch.randn(4, 1, 9, 9, generator=generator) / 9).bfloat16()
    bias = torch.randn(4, generator=generator).bfloat16()
    grad_output = torch.randn(3, 4, 7, 6, generator=generator).bfloat16()
    expected = _float64_reference(x, weight, bias, grad_output)
    monkeypatch.setattr(precision, "bf16_hardware", lambda: bf16_hardware)
    seen: set[torch.dtype] = set()
    real_conv2d, real_bmm = F.conv2d, torch.bmm

    def conv2d(inp, *args, **kwargs):
        seen.add(inp.dtype)
        return real_conv2d(inp, *args, **kwargs)

    def bmm(a, *args, **kwargs):
        seen.add(a.dtype)
        return real_bmm(a, *args, **kwargs)

    monkeypatch.setattr(ops_cpu.F, "conv2d", conv2d)
    monkeypatch.setattr(torch, "bmm", bmm)
    got = _run(impl, x, weight, bias, grad_output)
    assert seen == {torch.bfloat16 if bf16_hardware else torch.float32}
    for name, g, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected, strict=True):
        assert g.dtype == torch.bfloat16, name
        assert relative_error(g, e) < LOW_PRECISION_TOLERANCE[torch.bfloat16], f"{impl} {name}"


@pytest.mark.parametrize("stride,kernel_size,size", [(2, 3, (9, 8)), (2, 3, (8, 8)), (2, 5, (11, 7)), (3, 3, (10, 10))])
def test_strided_depthwise_backward_gradcheck(stride: int, kernel_size: int, size: tuple[int, int]) -> None:
    # the zero-insertion grad_input and aten's grad_weight, in float64, on odd and even sides
    generator = torch.Generator().manual_seed(17)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(3, 1, kernel_size, kernel_size, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=generator, requires_grad=True)
    padding = kernel_size // 2

    def conv(a, b, c):
        return ops_cpu._StridedDepthwiseConv.apply(a, b, c, stride, padding)

    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=3)
    assert relative_error(conv(x, weight, bias), expected) < 1e-12
    assert torch.autograd.gradcheck(conv, (x, weight, bias), fast_mode=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_depthwise_bfloat16_on_bf16_hardware(channels_last: bool, monkeypatch) -> None:
    from replknet.ops import precision

    monkeypatch.setattr(precision, "bf16_hardware", lambda: True)  # the zero-insertion path on any CPU
    generator = torch.Generator().manual_seed(19)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = ops.StridedDepthwiseConv2d(6, 3, stride=2, padding=1, bias=True)
    assert {k: v.shape for k, v in module.state_dict().items()} == {
        k: v.shape for k, v in nn.Conv2d(6, 6, 3, 2, 1, groups=6).state_dict().items()
    }
    x = torch.randn(2, 6, 13, 12, generator=generator).to(memory_format=memory_format).requires_grad_()
    grad_output = torch.randn(2, 6, 7, 6, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=memory_format)
    assert y.grad_fn.name() == "_StridedDepthwiseConvBackward"
    y.backward(grad_output.bfloat16())
    assert x.grad.is_contiguous(memory_format=memory_format)
    x64 = x.detach().bfloat16().double().requires_grad_()
    w64 = module.weight.detach().bfloat16().double().requires_grad_()
    b64 = module.bias.detach().bfloat16().double().requires_grad_()
    expected = F.conv2d(x64, w64, b64, stride=2, padding=1, groups=6)
    expected.backward(grad_output.bfloat16().double())
    for name, got, ref in (
        ("output", y, expected),
        ("grad_input", x.grad, x64.grad),
        ("grad_weight", module.weight.grad, w64.grad),
        ("grad_bias", module.bias.grad, b64.grad),
    ):
        assert relative_error(got, ref) < LOW_PRECISION_TOLERANCE[torch.bfloat16], name
    with ops.impl_override("reference"), torch.autocast("cpu", dtype=torch.bfloat16):  # plain nn.Conv2d there
        assert module(x).grad_fn.name() == nn.Conv2d.forward(module, x).grad_fn.name()
