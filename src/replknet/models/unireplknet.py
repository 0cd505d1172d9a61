"""UniRepLKNet: "A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image
Recognition" (Ding et al., CVPR 2024).

Module structure, layer order and state-dict keys follow the official code (AILab-CVC/UniRepLKNet, root
``unireplknet.py``), so official checkpoints (training and deploy form) load with ``strict=True``; the architecture
is stated in ``../shared/reference/unireplknet-spec.md``. Differences from the official code, each marked ``NOTE:``:
every stride-1 depthwise convolution, the dilated branches included, goes through ``replknet.ops.DepthwiseConv2d``
(the same keys as ``nn.Conv2d``), the features (backbone) mode needs no mmseg/mmdet, nothing is printed,
unknown constructor arguments are an error, and timm's model conventions sit on top.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch import nn

from replknet.models._registry import ModelFamily, register_model
from replknet.ops import DepthwiseConv2d
from replknet.reparam import Reparameterizable, dilated_to_dense, fuse_conv_bn, pad_kernel_to

__all__ = [
    "DEFAULT_KERNEL_SIZES",
    "DILATED_BRANCHES",
    "UNIREPLKNET",
    "UNIREPLKNET_CONFIGS",
    "DilatedReparamBlock",
    "GRNwithNHWC",
    "SEBlock",
    "UniRepLKNet",
    "UniRepLKNetBlock",
    "UniRepLKNetConfig",
]

_logger = logging.getLogger(__name__)

# Large kernel K -> (branch kernel sizes, dilations) of the Dilated Reparam Block, as in the official code (its
# comment: "default settings, not tuned carefully"). Every branch's equivalent size r * (k - 1) + 1 is at most K.
DILATED_BRANCHES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),  # a block never builds it (K = 5 blocks use a plain conv); usable on its own
}

# Per-block kernel sizes of the official variants, keyed by depths (the constructor's default for those depths).
DEFAULT_KERNEL_SIZES: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3, 3), (13, 13), (13,) * 6, (13, 13)),  # A, F, P
    (2, 2, 8, 2): ((3, 3), (13, 13), (13,) * 8, (13, 13)),  # N
    (3, 3, 18, 3): ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13)),  # T
    (3, 3, 27, 3): ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13)),  # S, B, L, XL
}


def _bn(channels: int, use_sync_bn: bool) -> nn.Module:
    return nn.SyncBatchNorm(channels) if use_sync_bn else nn.BatchNorm2d(channels)


class GRNwithNHWC(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on ``(N, H, W, C)``: ``(gamma * N(x) + 1) * x + beta``.

    ``N(x)`` is each channel's L2 norm over H and W divided by the mean of those norms over channels (+ 1e-6).
    ``beta`` is absent in the deploy form (folded into the next linear layer).
    """

    def __init__(self, dim: int, use_bias: bool = True) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta: nn.Parameter | None = nn.Parameter(torch.zeros(1, 1, 1, dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, H, W, C)
        norms = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        normalized = norms / (norms.mean(dim=-1, keepdim=True) + 1e-6)
        out = (self.gamma * normalized + 1) * x
        return out + self.beta if self.beta is not None else out


class NCHWtoNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class SEBlock(nn.Module):
    """Squeeze-and-excitation on NCHW: avg pool -> 1x1 ``down`` -> ReLU -> 1x1 ``up`` -> sigmoid -> scale."""

    def __init__(self, channels: int, internal_channels: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, internal_channels, 1, bias=True)
        self.up = nn.Conv2d(internal_channels, channels, 1, bias=True)
        self.nonlinear = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.up(self.nonlinear(self.down(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class DilatedReparamBlock(nn.Module, Reparameterizable):
    """``K x K`` conv + BN in parallel with dilated small-kernel convs + BN, summed (depthwise by default).

    Training form: ``lk_origin`` (no bias), ``origin_bn`` and, per branch ``(k, r)``, ``dil_conv_k{k}_{r}`` /
    ``dil_bn_k{k}_{r}`` (official key names). Deploy form: ``lk_origin`` with bias only; a dilated ``k x k`` kernel
    equals a dense ``r(k-1)+1`` kernel with zeros between the taps, so every branch merges into the large kernel
    exactly (at any stride: every branch pads by half its equivalent size, so all stay centred on one pixel).

    Args:
        channels: input channels (and output channels unless ``out_channels`` is given).
        kernel_size: large kernel ``K`` (odd).
        deploy: build the merged form directly.
        use_sync_bn: ``SyncBatchNorm`` instead of ``BatchNorm2d`` (same keys).
        impl: ``replknet.ops`` implementation of a stride-1 depthwise large kernel (``"auto"``: fastest).
        branches: ``(k, r)`` pairs (kernel size, dilation) of the parallel branches; default the official table
            for ``K`` (``DILATED_BRANCHES``). Each needs ``r (k - 1) + 1 <= K``.
        stride: stride of every branch.
        out_channels: output channels (default ``channels``).
        groups: convolution groups (default ``channels``: depthwise, as in UniRepLKNet).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        deploy: bool = False,
        use_sync_bn: bool = False,
        impl: str = "auto",
        *,
        branches: Sequence[tuple[int, int]] | None = None,
        stride: int = 1,
        out_channels: int | None = None,
        groups: int | None = None,
    ) -> None:
        super().__init__()
        if branches is None:
            if kernel_size not in DILATED_BRANCHES:
                raise ValueError(
                    f"the Dilated Reparam Block has no branch table for kernel size {kernel_size}; "
                    f"kernel sizes: {sorted(DILATED_BRANCHES)} (or give branches=[(k, r), ...])"
                )
            branches = tuple(zip(*DILATED_BRANCHES[kernel_size]))
        branches = tuple((int(k), int(r)) for k, r in branches)
        if kernel_size % 2 != 1:
            raise ValueError(f"the large kernel size must be odd, got {kernel_size}")
        for k, r in branches:
            if k % 2 != 1 or r < 1 or r * (k - 1) + 1 > kernel_size:
                raise ValueError(f"branch (k={k}, r={r}) must have an odd k, r >= 1 and r (k - 1) + 1 <= {kernel_size}")
        if len(set(branches)) != len(branches):
            raise ValueError(f"branches repeat a (k, r) pair: {branches}")
        self.channels = channels
        self.out_channels = channels if out_channels is None else out_channels
        self.groups = channels if groups is None else groups
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups {self.groups} must divide channels {channels} and out_channels {self.out_channels}"
            )
        self.kernel_size = kernel_size
        self.stride = stride
        self.kernel_sizes = tuple(k for k, _ in branches)
        self.dilates = tuple(r for _, r in branches)
        self.impl = impl
        self.lk_origin = self._conv(kernel_size, 1, bias=deploy)
        self.origin_bn: nn.Module | None = None
        self.branch_names: list[str] = []
        if not deploy:
            self.origin_bn = _bn(self.out_channels, use_sync_bn)
            for k, r in branches:
                self.add_module(f"dil_conv_k{k}_{r}", self._conv(k, r, bias=False))
                self.add_module(f"dil_bn_k{k}_{r}", _bn(self.out_channels, use_sync_bn))
                self.branch_names.append(f"k{k}_{r}")

    def _conv(self, kernel_size: int, dilation: int, bias: bool) -> nn.Conv2d:
        depthwise = self.groups == self.channels == self.out_channels
        if depthwise and self.stride == 1:
            return DepthwiseConv2d(self.channels, kernel_size, bias=bias, impl=self.impl, dilation=dilation)
        padding = dilation * (kernel_size - 1) // 2
        return nn.Conv2d(
            self.channels,
            self.out_channels,
            kernel_size,
            self.stride,
            padding,
            dilation=dilation,
            groups=self.groups,
            bias=bias,
        )

    @property
    def fused(self) -> bool:
        return self.origin_bn is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.origin_bn is None:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for name in self.branch_names:
            out = out + getattr(self, f"dil_bn_{name}")(getattr(self, f"dil_conv_{name}")(x))
        return out

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel ``(C_out, C_in / groups, K, K)`` and bias ``(C_out,)`` of the single conv equal in eval mode."""
        if self.origin_bn is None:
            return self.lk_origin.weight, self.lk_origin.bias
        kernel, bias = fuse_conv_bn(self.lk_origin.weight, self.lk_origin.bias, self.origin_bn)
        for name, r in zip(self.branch_names, self.dilates):
            branch_kernel, branch_bias = fuse_conv_bn(
                getattr(self, f"dil_conv_{name}").weight, None, getattr(self, f"dil_bn_{name}")
            )
            kernel = kernel + pad_kernel_to(dilated_to_dense(branch_kernel, r), self.kernel_size)
            bias = bias + branch_bias
        return kernel, bias

    def reparameterize(self, deep: bool = False) -> None:
        if self.origin_bn is None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        merged = self._conv(self.kernel_size, 1, bias=True)
        merged.to(device=kernel.device, dtype=kernel.dtype)
        merged.weight.data.copy_(kernel)
        merged.bias.data.copy_(bias)
        self.lk_origin = merged
        self.origin_bn = None
        for name in self.branch_names:
            delattr(self, f"dil_conv_{name}")
            delattr(self, f"dil_bn_{name}")
        self.branch_names = []


class UniRepLKNetBlock(nn.Module, Reparameterizable):
    """``x + drop_path(gamma * FFN(SE(BN(dwconv(x)))))``; the FFN is Linear -> GELU -> GRN -> Linear -> BN.

    ``kernel_size``: ``>= 7`` a Dilated Reparam Block, 3 or 5 a plain depthwise conv, 0 no token mixer (and no BN).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        deploy: bool = False,
        use_sync_bn: bool = False,
        ffn_factor: int = 4,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, use_sync_bn=use_sync_bn, impl=impl)
        elif kernel_size in (3, 5):
            self.dwconv = DepthwiseConv2d(dim, kernel_size, bias=deploy, impl=impl)
        else:
            raise ValueError(f"UniRepLKNet blocks take kernel size 0, 3, 5 or one of 7..17 (odd), got {kernel_size}")
        self.norm: nn.Module = nn.Identity() if deploy or kernel_size == 0 else _bn(dim, use_sync_bn)
        self.se = SEBlock(dim, dim // 4)
        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(NCHWtoNHWC(), nn.Linear(dim, ffn_dim))
        self.act = nn.Sequential(nn.GELU(), GRNwithNHWC(ffn_dim, use_bias=not deploy))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim), NHWCtoNCHW())
        else:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim, bias=False), NHWCtoNCHW(), _bn(dim, use_sync_bn))
        use_scale = not deploy and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma: nn.Parameter | None = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_scale else None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))  # (N, C, H, W) -> (N, H, W, 4C) -> (N, C, H, W)
        if self.gamma is not None:
            y = self.gamma.view(1, -1, 1, 1) * y
        return self.drop_path(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and x.requires_grad and not torch.jit.is_scripting():
            return x + torch.utils.checkpoint.checkpoint(self.residual, x, use_reentrant=False)
        return x + self.residual(x)

    def reparameterize(self, deep: bool = False) -> None:
        """The official ``reparameterize``: merge the dwconv branches, fold BN, layer scale and GRN's beta."""
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            self._fold_norm_into_dwconv()
        if len(self.pwconv2) == 3:
            self._fold_into_pwconv2()

    def _fold_norm_into_dwconv(self) -> None:
        conv = self.dwconv.lk_origin if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
        weight, bias = fuse_conv_bn(conv.weight, conv.bias, self.norm)
        fused = DepthwiseConv2d(conv.out_channels, conv.kernel_size[0], bias=True, impl=conv.impl)
        fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.data.copy_(weight)
        fused.bias.data.copy_(bias)
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.lk_origin = fused
        else:
            self.dwconv = fused
        self.norm = nn.Identity()

    def _fold_into_pwconv2(self) -> None:
        # y = gamma * BN(W (z + beta)) = (W * s * gamma) z + gamma * (bn.bias + (W beta - mean) * s), s = bn.w / std
        linear, bn = self.pwconv2[0], self.pwconv2[2]
        grn = self.act[1]
        std = (bn.running_var + bn.eps).sqrt()
        scale = bn.weight / std
        layer_scale = self.gamma if self.gamma is not None else torch.ones_like(scale)
        linear_bias = linear.bias if linear.bias is not None else torch.zeros_like(scale)
        if grn.beta is not None:
            linear_bias = linear_bias + linear.weight @ grn.beta.reshape(-1)
        fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
        fused.to(device=linear.weight.device, dtype=linear.weight.dtype)
        fused.weight.data.copy_(linear.weight * (scale * layer_scale).view(-1, 1))
        fused.bias.data.copy_((bn.bias + (linear_bias - bn.running_mean) * scale) * layer_scale)
        self.pwconv2 = nn.Sequential(fused, self.pwconv2[1])
        grn.beta = None
        self.gamma = None


class UniRepLKNet(nn.Module, Reparameterizable):
    """UniRepLKNet classifier, or the official features (backbone) mode.

    Args:
        in_chans: input channels.
        num_classes: classes of the linear head (``0``: pooled, normalised features); ``None`` builds the official
            features mode: no ``norm``/``head``, a channels-first LayerNorm ``norm{i}`` on each stage output, and
            ``forward`` returns the four maps (strides 4, 8, 16, 32).
        depths: blocks per stage (four stages).
        dims: width per stage.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale_init_value: initial layer scale ``gamma``; ``None`` or ``<= 0`` for none.
        head_init_scale: factor on the head's initial weight and bias (the official 22K -> 1K finetunes use 0.001).
        kernel_sizes: one tuple of kernel sizes per stage, one per block; ``None``: the official default for
            ``depths`` (``DEFAULT_KERNEL_SIZES``).
        deploy: build the re-parameterised (inference) structure directly.
        with_cp: gradient checkpointing of every block (``set_grad_checkpointing``).
        init_cfg: the official OpenMMLab switch to the features mode (needs ``num_classes=None``); a ``checkpoint``
            entry names a classifier or backbone checkpoint loaded non-strictly, as the official code does.
        attempt_use_lk_impl: the official switch to a fast large-kernel implementation: here ``True`` lets
            ``replknet.ops`` pick the fastest depthwise implementation for each shape (``impl="auto"``), ``False``
            uses plain ``F.conv2d`` (``impl="reference"``), which is what the official code runs without its CUDA
            extension.
        use_sync_bn: ``SyncBatchNorm`` everywhere (same keys).
        global_pool: timm's pooling argument; only ``"avg"`` (the official pooling).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int | None = 1000,
        depths: tuple[int, ...] = (3, 3, 27, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        kernel_sizes: tuple[tuple[int, ...], ...] | None = None,
        deploy: bool = False,
        with_cp: bool = False,
        init_cfg: dict | None = None,
        attempt_use_lk_impl: bool = True,
        use_sync_bn: bool = False,
        global_pool: str = "avg",
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            # NOTE: the official constructor silently ignores unknown arguments; a misspelt option is an error here.
            raise TypeError(f"UniRepLKNet got unexpected arguments: {sorted(kwargs)}")
        depths, dims = tuple(depths), tuple(dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"UniRepLKNet has four stages: got depths={depths}, dims={dims}")
        if kernel_sizes is None:
            if depths not in DEFAULT_KERNEL_SIZES:
                raise ValueError(
                    f"no default kernel sizes for depths {depths} (defaults exist for {sorted(DEFAULT_KERNEL_SIZES)}); "
                    "give kernel_sizes, one tuple per stage with one size per block, e.g. "
                    "((3, 3), (13, 13), (13, 13, 13, 13, 13, 13), (13, 13))"
                )
            kernel_sizes = DEFAULT_KERNEL_SIZES[depths]
        kernel_sizes = tuple(tuple(stage) for stage in kernel_sizes)
        if len(kernel_sizes) != 4 or any(len(k) != d for k, d in zip(kernel_sizes, depths)):
            raise ValueError(f"kernel_sizes {kernel_sizes} do not match depths {depths} (one size per block)")
        if init_cfg is not None and num_classes is not None:
            raise ValueError("init_cfg selects the official features mode, which needs num_classes=None")
        if global_pool not in ("avg", ""):
            raise ValueError(f"UniRepLKNet supports global_pool 'avg' only, got {global_pool!r}")
        self.depths, self.dims, self.kernel_sizes = depths, dims, kernel_sizes
        self.in_chans = in_chans
        self.features_mode = num_classes is None
        self.num_classes = num_classes if num_classes is not None else 0
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        impl = "auto" if attempt_use_lk_impl else "reference"

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(dims[0] // 2, eps=1e-6),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
                LayerNorm2d(dims[0], eps=1e-6),
            )
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=3, stride=2, padding=1),
                    LayerNorm2d(dims[i + 1], eps=1e-6),
                )
            )
        dp_rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            blocks = [
                UniRepLKNetBlock(
                    dims[i],
                    kernel_sizes[i][j],
                    drop_path=dp_rates[cur + j],
                    layer_scale_init_value=layer_scale_init_value,
                    deploy=deploy,
                    use_sync_bn=use_sync_bn,
                    impl=impl,
                )
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
            cur += depths[i]
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}") for i in range(4)]

        if self.features_mode:
            # NOTE: the official features mode keeps PyTorch's default init (its trunc-normal pass only runs for
            # the classifier); kept, so a backbone trained from scratch starts as the official one does.
            for i in range(4):
                self.add_module(f"norm{i}", LayerNorm2d(dims[i], eps=1e-6))
            if init_cfg is not None and init_cfg.get("checkpoint") is not None:
                self._load_init_checkpoint(init_cfg["checkpoint"])
        else:
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head: nn.Module = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
            self.apply(self._init_weights)
            if isinstance(self.head, nn.Linear):
                self.head.weight.data.mul_(head_init_scale)
                self.head.bias.data.mul_(head_init_scale)
        if with_cp:
            self.set_grad_checkpointing(True)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _load_init_checkpoint(self, path) -> None:
        """The official features mode's ``init_weights``: a non-strict load that reports what did not match."""
        from replknet.checkpoint import convert_state_dict, read_checkpoint

        state_dict = convert_state_dict(read_checkpoint(path), self)
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            _logger.warning("%s: missing keys %s; unexpected keys %s", path, missing, unexpected)

    # ------------------------------------------------------------------ timm conventions
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            for block in stage:
                block.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups: the stem, then each stage with the downsampling layer into it."""
        return dict(
            stem=r"^downsample_layers\.0",
            blocks=r"^(?:stages|downsample_layers)\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.(\d+)", None),
                (r"^downsample_layers\.(\d+)", (0,)),
                (r"^norm(\d+)", (99999,)),
            ],
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if self.features_mode:
            raise ValueError("a features-mode UniRepLKNet (num_classes=None) has no classifier")
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"UniRepLKNet supports global_pool 'avg' only, got {global_pool!r}")
        self.num_classes = num_classes
        device = self.norm.weight.device if isinstance(self.norm, nn.LayerNorm) else None
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"UniRepLKNet expects input (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}")

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs (strides 4..32), timm's ``forward_intermediates``.

        In the features mode each output passes its ``norm{i}`` (the official backbone outputs). ``norm`` has no
        effect: the classifier's final LayerNorm acts on the pooled vector, not on a map.
        """
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"UniRepLKNet produces NCHW features only, got output_fmt={output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = max_index if stop_early else len(self.stages) - 1
        intermediates = []
        for i in range(last + 1):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in take_indices:
                intermediates.append(getattr(self, f"norm{i}")(x) if self.features_mode else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        """Drop the stages after the last requested index (and the head), as timm's feature wrapper asks."""
        from timm.models._features import feature_take_indices

        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        if not self.features_mode and prune_head:
            self.norm = nn.Identity()
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, downsampling layers and stages: ``(N, dims[-1], H/32, W/32)`` (the final norm acts after pooling)."""
        self._check_input(x)
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean([-2, -1]))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        if self.features_mode:
            return self.forward_intermediates(x, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def reparameterize(self, deep: bool = False) -> None:
        """Blocks fuse themselves; ``deep`` also folds the final LayerNorm's affine into the head (exact)."""
        if (
            deep
            and not self.features_mode
            and isinstance(self.head, nn.Linear)
            and isinstance(self.norm, nn.LayerNorm)
            and self.norm.elementwise_affine
        ):
            # head(n * w + b) = (W * w) n + (W b + bias), n the normalised pooled vector.
            weight = self.head.weight * self.norm.weight.view(1, -1)
            bias = self.head.weight @ self.norm.bias + self.head.bias
            self.head.weight.data.copy_(weight)
            self.head.bias.data.copy_(bias)
            plain = nn.LayerNorm(self.num_features, eps=self.norm.eps, elementwise_affine=False)
            self.norm = plain.to(device=weight.device)

    def reparameterize_unireplknet(self) -> None:
        """The official method name: re-parameterise in place (``replknet.reparameterize(model, inplace=True)``)."""
        from replknet.reparam import reparameterize

        reparameterize(self, inplace=True)


# ---------------------------------------------------------------------- checkpoints, configs, registered factories
_DEFAULTS = {name: p.default for name, p in inspect.signature(UniRepLKNet.__init__).parameters.items()}


@dataclass(frozen=True)
class UniRepLKNetConfig:
    """One registered UniRepLKNet variant: what the official factory passes (depths and dims).

    Defaults are the constructor's, read from its signature so they live in one place.
    """

    depths: tuple[int, ...] = _DEFAULTS["depths"]
    dims: tuple[int, ...] = _DEFAULTS["dims"]
    # None: the official per-block table for these depths (DEFAULT_KERNEL_SIZES), so overriding depths alone works.
    kernel_sizes: tuple[tuple[int, ...], ...] | None = _DEFAULTS["kernel_sizes"]

    def kwargs(self) -> dict:
        return asdict(self)


UNIREPLKNET_CONFIGS: dict[str, UniRepLKNetConfig] = {
    "unireplknet_a": UniRepLKNetConfig(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "unireplknet_f": UniRepLKNetConfig(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "unireplknet_p": UniRepLKNetConfig(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "unireplknet_n": UniRepLKNetConfig(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "unireplknet_t": UniRepLKNetConfig(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640)),
    "unireplknet_s": UniRepLKNetConfig(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "unireplknet_b": UniRepLKNetConfig(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "unireplknet_l": UniRepLKNetConfig(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    "unireplknet_xl": UniRepLKNetConfig(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
}


def checkpoint_filter_fn(state_dict: dict, model: UniRepLKNet) -> dict:
    """Official checkpoints: plain, wrapped (``model``/``state_dict``/``model_ema``) or ``module.``-prefixed."""
    from replknet.checkpoint import convert_state_dict

    return convert_state_dict(state_dict, model)


def _cfg(input_size: int = 224, **kwargs) -> dict:
    # Official eval (datasets.build_transform): bicubic resize to size / 0.875 + centre crop below 384; a direct
    # (squashing) resize at 384 and above; ImageNet default mean/std (imagenet_default_mean_and_std=True).
    big = input_size >= 384
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, input_size, input_size),
        "pool_size": (input_size // 32, input_size // 32),
        "crop_pct": 1.0 if big else 0.875,
        "crop_mode": "squash" if big else "center",
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "downsample_layers.0.0",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2311.15599",
        **kwargs,
    }


def _build_default_cfgs() -> dict:
    from timm.models import generate_default_cfgs

    # The released checkpoints (official README tables; load a local file: pretrained_cfg_overlay=dict(file=...)).
    # The first tag of a model is its default. 22K pretraining: L and XL at 192 (the README's resolution column).
    in22k = dict(num_classes=21841)
    return generate_default_cfgs(
        {
            "unireplknet_a.in1k": _cfg(224),
            "unireplknet_f.in1k": _cfg(224),
            "unireplknet_p.in1k": _cfg(224),
            "unireplknet_n.in1k": _cfg(224),
            "unireplknet_t.in1k": _cfg(224),
            "unireplknet_s.in1k": _cfg(224),
            "unireplknet_s.in22k_ft_in1k_384": _cfg(384),
            "unireplknet_s.in22k": _cfg(224, **in22k),
            "unireplknet_b.in22k_ft_in1k_384": _cfg(384),
            "unireplknet_b.in22k": _cfg(224, **in22k),
            "unireplknet_l.in22k_ft_in1k_384": _cfg(384),
            "unireplknet_l.in22k": _cfg(192, **in22k),
            "unireplknet_xl.in22k_ft_in1k_384": _cfg(384),
            "unireplknet_xl.in22k": _cfg(192, **in22k),
        }
    )


default_cfgs = _build_default_cfgs()


def _create_unireplknet(variant: str, pretrained: bool = False, **kwargs) -> UniRepLKNet:
    from timm.models import build_model_with_cfg

    # Explicit arguments override the variant's (the official factories pass depths and dims themselves, so
    # timm.create_model('unireplknet_t', depths=...) fails there).
    config = UNIREPLKNET_CONFIGS[variant].kwargs()
    config.update(kwargs)
    if config.get("init_cfg") is not None and not config.get("features_only", False):
        # The official features switch; timm drops num_classes=None and would fill in the config's 1000.
        config["num_classes"] = None
    return build_model_with_cfg(
        UniRepLKNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **config,
    )


def _build_backbone(info, **options) -> UniRepLKNet:
    """The official features mode (``num_classes=None``): ``norm0..norm3`` on the four stage outputs."""
    # NOTE: built directly rather than through timm, which replaces num_classes=None by the config's 1000.
    return UniRepLKNet(**{**info.config.kwargs(), **options}, num_classes=None)


def _is_deploy_state_dict(state_dict) -> bool:
    # The training form's pwconv2 Linear has no bias; the deploy form's carries the folded BN, GRN beta and scale.
    return any(key.endswith("pwconv2.0.bias") for key in state_dict)


UNIREPLKNET = ModelFamily(
    name="unireplknet",
    model_cls=UniRepLKNet,
    configs=UNIREPLKNET_CONFIGS,
    paper="UniRepLKNet: A Universal Perception Large-Kernel ConvNet (Ding et al., CVPR 2024)",
    fusible=True,
    deploy_arg="deploy",
    is_deploy_state_dict=_is_deploy_state_dict,
    feature_strides=(4, 8, 16, 32),
    backbone=_build_backbone,
    # NOTE: the dilated branches keep the official per-instance attribute names (dil_conv_k5_1, ...), which
    # TorchScript cannot iterate; torch.jit.trace works.
    torchscript=False,
)


@register_model(UNIREPLKNET)
def unireplknet_a(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-A: depths 2/2/6/2, dims 40..320 (4.4M deploy parameters, 77.0% ImageNet-1K top-1)."""
    return _create_unireplknet("unireplknet_a", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_f(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-F: depths 2/2/6/2, dims 48..384 (6.2M, 78.6%)."""
    return _create_unireplknet("unireplknet_f", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_p(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-P: depths 2/2/6/2, dims 64..512 (10.7M, 80.2%)."""
    return _create_unireplknet("unireplknet_p", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_n(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-N: depths 2/2/8/2, dims 80..640 (18.3M, 81.6%)."""
    return _create_unireplknet("unireplknet_n", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_t(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-T: depths 3/3/18/3, dims 80..640, 13/3 alternating in stage 3 (31M, 83.2%)."""
    return _create_unireplknet("unireplknet_t", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_s(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-S: depths 3/3/27/3, dims 96..768 (56M; 83.9% 1K, 86.4% 22K->1K at 384)."""
    return _create_unireplknet("unireplknet_s", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_b(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-B: depths 3/3/27/3, dims 128..1024 (98M; 87.4% 22K->1K at 384)."""
    return _create_unireplknet("unireplknet_b", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_l(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-L: depths 3/3/27/3, dims 192..1536 (218M; 87.9% 22K->1K at 384)."""
    return _create_unireplknet("unireplknet_l", pretrained, **kwargs)


@register_model(UNIREPLKNET)
def unireplknet_xl(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    """UniRepLKNet-XL: depths 3/3/27/3, dims 256..2048 (386M; 88.0% 22K->1K at 384)."""
    return _create_unireplknet("unireplknet_xl", pretrained, **kwargs)
