"""Re-parameterisable large-kernel convolutions as parts for any model (2-D, NCHW).

Each is an ordinary ``nn.Module`` that trains in its multi-branch form and turns into one convolution with
``reparameterize()`` (in place, idempotent; exact in eval mode). ``replknet.reparameterize(model)`` fuses every
such layer of a whole model, whatever the model is::

    from replknet.layers import DilatedReparamBlock, ReparamLargeKernelConv

    block.conv2 = ReparamLargeKernelConv(64, 7, small_kernel=3, groups=1)  # a dense 7x7 + 3x3 in a ResNet
    mixer = DilatedReparamBlock(256, 13)  # depthwise 13x13 + dilated 5/7/3/3/3 branches (UniRepLKNet)
    model = replknet.reparameterize(model)  # every branch and BN merged

- ``ReparamLargeKernelConv``: RepLKNet's large kernel + BN with a parallel small kernel + BN
  (``small_kernel``; ``None`` for none), any stride, depthwise by default (``groups``/``out_channels`` for others).
- ``DilatedReparamBlock``: UniRepLKNet's large kernel + BN with parallel dilated small kernels + BN; the branches
  are the official table for the kernel size (``DILATED_BRANCHES``) or your own ``branches=[(k, r), ...]``.
- ``ConvBN``: conv (no bias) + BN (+ activation); ``reparameterize(deep=True)`` folds the BN.

Stride-1 depthwise large kernels run through ``replknet.ops.DepthwiseConv2d`` (the fast CPU/GPU paths).
"""

from replknet.models.layers import ConvBN, ReparamLargeKernelConv
from replknet.models.unireplknet import DILATED_BRANCHES, DilatedReparamBlock

__all__ = ["DILATED_BRANCHES", "ConvBN", "DilatedReparamBlock", "ReparamLargeKernelConv"]
