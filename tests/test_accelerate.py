"""``replknet.ops.accelerate``: depthwise convolutions of other libraries' models computed by ``dwconv2d``."""

from __future__ import annotations

import copy
import logging

import pytest
import timm
import torch
import torchvision
from torch import nn

import replknet.ops as ops
from replknet.ops import DepthwiseConv2d, accelerate
from replknet.testing import randomize_bn_stats, relative_error


def _outputs_and_grads(model: nn.Module, x: torch.Tensor, impl: str | None = None):
    model.zero_grad()
    x = x.clone().requires_grad_()
    with ops.impl_override(impl):
        y = model(x)
    y.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads


# small timm models with depthwise kernels of 7 and more (mixnet: 3..9 inside MixedConv2d; tf_mixnet: strided
# Conv2dSame), strided depthwise convolutions (efficientnet), band kernels (inception_next)
TIMM_MODELS = {
    "convnext_atto": 12,
    "mixnet_s": 31,
    "tf_mixnet_s": 31,
    "edgenext_xx_small": 15,
    "efficientnet_b0": 12,
    "inception_next_atto": 12,
}


@pytest.mark.parametrize("name", sorted(TIMM_MODELS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_timm_model_outputs_gradients_and_state_dict_are_kept(name: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    randomize_bn_stats(model)
    model.eval()  # running statistics: the outputs do not depend on the batch
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    original = copy.deepcopy(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    parameters = dict(model.named_parameters())

    report = accelerate(model)

    assert len(report) == TIMM_MODELS[name]
    converted = {n for n, m in model.named_modules() if isinstance(m, DepthwiseConv2d)}
    assert converted == set(report.replaced)
    after = model.state_dict()
    assert list(after) == list(before)  # same keys, same order
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert all(p is parameters[n] for n, p in model.named_parameters())  # the same tensors: optimizers stay valid
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=memory_format)
    expected, expected_input_grad, expected_grads = _outputs_and_grads(original, x)
    got, got_input_grad, got_grads = _outputs_and_grads(model, x)
    assert relative_error(got, expected) < 1e-4
    assert relative_error(got_input_grad, expected_input_grad) < 1e-4
    assert got_grads.keys() == expected_grads.keys() and len(got_grads) == len(parameters)
    for key, grad in expected_grads.items():
        assert relative_error(got_grads[key], grad) < 1e-3, key


def test_every_cpu_impl_computes_the_converted_layers() -> None:
    # the converted model through each implementation (not only the one auto picks at this size)
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = _outputs_and_grads(model, x)
    accelerate(model)
    for impl in ("fft", "hybrid", "native_cl", "toeplitz"):
        output, input_grad, grads = _outputs_and_grads(model, x, impl)
        assert relative_error(output, expected[0]) < 1e-4, impl
        assert relative_error(input_grad, expected[1]) < 1e-4, impl
        assert all(relative_error(grads[k], g) < 1e-3 for k, g in expected[2].items()), impl


@pytest.mark.parametrize(("factory", "expected"), [("mobilenet_v3_small", 7), ("convnext_tiny", 18)])
def test_torchvision_models(factory: str, expected: int) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, factory)(num_classes=10).eval()
    original = copy.deepcopy(model)
    report = accelerate(model)
    assert len(report) == expected
    x = torch.randn(1, 3, 64, 64)
    assert relative_error(model(x).detach(), original(x).detach()) < 1e-4


def test_skipped_layers_are_untouched_and_named() -> None:
    class Conv2dSubclass(nn.Conv2d):
        pass

    model = nn.ModuleDict(
        {
            "strided": nn.Conv2d(8, 8, 7, stride=2, padding=3, groups=8),
            "dense": nn.Conv2d(8, 8, 7, padding=3),
            "grouped": nn.Conv2d(8, 8, 7, padding=3, groups=4),
            "multiplier": nn.Conv2d(8, 16, 7, padding=3, groups=8),
            "even": nn.Conv2d(8, 8, 4, padding="same", groups=8),
            "band": nn.Conv2d(8, 8, (1, 7), padding=(0, 3), groups=8),
            "reflect": nn.Conv2d(8, 8, 7, padding=3, groups=8, padding_mode="reflect"),
            "valid": nn.Conv2d(8, 8, 7, groups=8),
            "uneven_dilation": nn.Conv2d(8, 8, 3, padding=(2, 1), dilation=(2, 1), groups=8),
            "subclass": Conv2dSubclass(8, 8, 7, padding=3, groups=8),
            "small": nn.Conv2d(8, 8, 3, padding=1, groups=8),
            "large": nn.Conv2d(8, 8, 7, padding=3, groups=8, bias=False),
            "same": nn.Conv2d(8, 8, 5, padding="same", groups=8),
            "dilated": nn.Conv2d(8, 8, 3, padding=3, dilation=3, groups=8),
            "one_by_one": nn.Conv2d(8, 8, 1, padding="valid", groups=8),
        }
    )
    types_before = {name: type(m) for name, m in model.items()}
    report = accelerate(model, min_kernel_size=3)
    assert set(report.replaced) == {"small", "large", "same", "dilated"}
    assert set(report.skipped) == set(model) - set(report.replaced)
    for name, module in model.items():
        if name not in report.replaced:
            assert type(module) is types_before[name], name  # untouched
    expected_reasons = {
        "strided": "strided",
        "dense": "not depthwise",
        "grouped": "not depthwise",
        "multiplier": "not depthwise",
        "even": "even kernel",
        "band": "non-square",
        "reflect": "padding_mode 'reflect'",
        "valid": "not same padding",
        "uneven_dilation": "dilation differs",
        "subclass": "subclass",
        "one_by_one": "below min_kernel_size=3",
    }
    for name, reason in expected_reasons.items():
        assert reason in report.skipped[name], (name, report.skipped[name])
    assert "replaced 4 depthwise convolutions" in report.summary()
    x = torch.randn(2, 8, 12, 12)
    for name in report.replaced:
        module = model[name]
        bias = module.bias is not None
        conv = nn.Conv2d(
            8, 8, module.kernel_size, padding=module.padding, dilation=module.dilation, groups=8, bias=bias
        )
        conv.load_state_dict(model[name].state_dict())
        assert relative_error(model[name](x), conv(x).double()) < 1e-5, name
    # a second call finds nothing left to do
    again = accelerate(model)
    assert len(again) == 1 and set(again.replaced) == {"one_by_one"}
    assert all(again.skipped[name] == "already a DepthwiseConv2d" for name in report.replaced)


def test_hooks_and_shared_modules_are_kept(caplog) -> None:
    shared = nn.Conv2d(4, 4, 7, padding=3, groups=4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    calls = []
    shared.register_forward_hook(lambda module, inputs, output: calls.append(type(module).__name__))
    with caplog.at_level(logging.INFO, logger="replknet.ops.accelerate"):
        report = accelerate(model, impl="fft")
    assert list(report.replaced) == ["0"]  # one module, reported under its first name
    assert model[0] is model[2] and isinstance(model[2], DepthwiseConv2d) and model[0].impl == "fft"
    model(torch.randn(1, 4, 9, 9))
    assert calls == ["DepthwiseConv2d", "DepthwiseConv2d"]
    assert any("replaced 1 depthwise convolutions" in r.getMessage() for r in caplog.records)


def test_a_bare_conv_can_be_the_model() -> None:
    conv = nn.Conv2d(3, 3, 9, padding=4, groups=3)
    report = accelerate(conv)
    assert report.replaced == {"<model>": 9} and isinstance(conv, DepthwiseConv2d)


def test_unireplknet_is_built_on_the_op_and_auto_matches_the_reference() -> None:
    # UniRepLKNet's depthwise convolutions (dilated branches included) are DepthwiseConv2d already: accelerate
    # leaves them, and its training form through "auto" (the dilated routes) equals plain F.conv2d
    import replknet

    torch.manual_seed(0)
    model = replknet.create_model("unireplknet_a", num_classes=10)
    randomize_bn_stats(model)
    model.eval()
    depthwise = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert any(m.dilation[0] > 1 for m in depthwise)
    report = accelerate(model)
    assert len(report) == 0
    assert sum(reason == "already a DepthwiseConv2d" for reason in report.skipped.values()) == len(depthwise)
    x = torch.randn(2, 3, 64, 64)
    expected = _outputs_and_grads(model, x, "reference")
    output, input_grad, grads = _outputs_and_grads(model, x, "auto")
    assert relative_error(output, expected[0]) < 1e-4
    assert relative_error(input_grad, expected[1]) < 1e-4
    assert grads.keys() == expected[2].keys()
    for key, grad in expected[2].items():
        assert relative_error(grads[key], grad) < 1e-3, key
