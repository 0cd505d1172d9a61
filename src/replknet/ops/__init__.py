"""Depthwise large-kernel convolution: the functional op, its implementations and the models' module."""

from replknet.ops import cpu as _cpu  # noqa: F401  (registers the CPU impls)
from replknet.ops import cpu_dilated as _cpu_dilated  # noqa: F401  (registers the dilated CPU impls)
from replknet.ops.accelerate import AccelerateReport, accelerate
from replknet.ops.conv import DepthwiseConv2d, StridedDepthwiseConv2d
from replknet.ops.dispatch import (
    available_impls,
    dilate_kernel,
    dwconv2d,
    impl_override,
    reference_dwconv2d,
    register_auto_rule,
    register_dilated_auto_rule,
    register_dilated_impl,
    register_impl,
)

__all__ = [
    "AccelerateReport",
    "DepthwiseConv2d",
    "StridedDepthwiseConv2d",
    "accelerate",
    "available_impls",
    "dilate_kernel",
    "dwconv2d",
    "impl_override",
    "reference_dwconv2d",
    "register_auto_rule",
    "register_dilated_auto_rule",
    "register_dilated_impl",
    "register_impl",
]
from replknet.ops import triton_dwconv as _triton_dwconv  # noqa: E402, F401  (registers "triton" + the CUDA auto rule)
