"""RepLKNet: "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs" (Ding et al., CVPR 2022).

Module structure, layer order and state-dict keys follow the official PyTorch code (DingXiaoH/RepLKNet-pytorch,
``replknet.py``), so official checkpoints load with ``strict=True``. Differences from it, each marked ``NOTE:``:
plain BatchNorm (convert to SyncBN in the trainer, not through a module-global flag), the fast depthwise op through
``replknet.ops.DepthwiseConv2d``, and timm's model conventions on top.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch
import torch.utils.checkpoint
from timm.layers import DropPath
from torch import nn

from replknet.models._registry import ModelFamily, register_model
from replknet.models.layers import ConvBN, ReparamLargeKernelConv
from replknet.reparam import Reparameterizable, bn_affine, fold_bn_into_next_1x1

__all__ = [
    "REPLKNET",
    "REPLKNET_CONFIGS",
    "ConvFFN",
    "RepLKBlock",
    "RepLKNet",
    "RepLKNetConfig",
    "RepLKNetStage",
]


def _fold_pre_bn(pre_bn: nn.Module, conv_bn: ConvBN) -> nn.Module:
    """Fold ``pre_bn`` into the (already BN-fused) 1x1 ``conv_bn`` after it; returns the replacement pre-BN."""
    if isinstance(pre_bn, nn.Identity):
        return pre_bn
    conv_bn.reparameterize(deep=True)
    scale, shift = bn_affine(pre_bn)
    weight, bias = fold_bn_into_next_1x1(scale, shift, conv_bn.conv.weight, conv_bn.conv.bias)
    conv_bn.conv.weight.data.copy_(weight)
    conv_bn.conv.bias.data.copy_(bias)
    return nn.Identity()


class RepLKBlock(nn.Module, Reparameterizable):
    """Pre-BN -> 1x1 conv-BN-ReLU -> depthwise large kernel (+ small kernel) -> ReLU -> 1x1 conv-BN, residual."""

    def __init__(
        self,
        in_channels: int,
        dw_channels: int,
        block_lk_size: int,
        small_kernel: int | None,
        drop_path: float,
        small_kernel_merged: bool = False,
    ) -> None:
        super().__init__()
        # Registration order matches the official module (pw1, pw2, large_kernel, lk_nonlinear, prelkb_bn).
        self.pw1 = ConvBN(in_channels, dw_channels, 1, act_layer=nn.ReLU)
        self.pw2 = ConvBN(dw_channels, in_channels, 1)
        self.large_kernel = ReparamLargeKernelConv(dw_channels, block_lk_size, small_kernel, deploy=small_kernel_merged)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn: nn.Module = nn.BatchNorm2d(in_channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelkb_bn(x)
        out = self.pw1(out)
        out = self.large_kernel(out)
        out = self.lk_nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)

    def reparameterize(self, deep: bool = False) -> None:
        if deep:
            self.prelkb_bn = _fold_pre_bn(self.prelkb_bn, self.pw1)


class ConvFFN(nn.Module, Reparameterizable):
    """Pre-BN -> 1x1 conv-BN (C -> ffn_ratio*C) -> GELU -> 1x1 conv-BN, residual."""

    def __init__(self, in_channels: int, internal_channels: int, out_channels: int, drop_path: float) -> None:
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.preffn_bn: nn.Module = nn.BatchNorm2d(in_channels)
        self.pw1 = ConvBN(in_channels, internal_channels, 1)
        self.pw2 = ConvBN(internal_channels, out_channels, 1)
        self.nonlinear = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.preffn_bn(x)
        out = self.pw1(out)
        out = self.nonlinear(out)
        out = self.pw2(out)
        return x + self.drop_path(out)

    def reparameterize(self, deep: bool = False) -> None:
        if deep:
            self.preffn_bn = _fold_pre_bn(self.preffn_bn, self.pw1)


class RepLKNetStage(nn.Module):
    """``num_blocks`` pairs of (RepLKBlock, ConvFFN) in one ``blocks`` list, then ``norm`` (BN or identity)."""

    def __init__(
        self,
        channels: int,
        num_blocks: int,
        stage_lk_size: int,
        drop_path: list[float],
        small_kernel: int | None,
        dw_ratio: float = 1,
        ffn_ratio: float = 4,
        small_kernel_merged: bool = False,
        norm_intermediate_features: bool = False,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(num_blocks):
            # NOTE: both blocks of a pair share one drop-path rate, as in the official code.
            block_drop_path = drop_path[i]
            blocks.append(
                RepLKBlock(
                    channels,
                    int(channels * dw_ratio),
                    stage_lk_size,
                    small_kernel,
                    block_drop_path,
                    small_kernel_merged=small_kernel_merged,
                )
            )
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), channels, block_drop_path))
        self.blocks = nn.ModuleList(blocks)
        self.norm: nn.Module = nn.BatchNorm2d(channels) if norm_intermediate_features else nn.Identity()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class RepLKNet(nn.Module, Reparameterizable):
    """RepLKNet classifier or backbone.

    Args:
        large_kernel_sizes: depthwise kernel size per stage.
        layers: number of (RepLKBlock, ConvFFN) pairs per stage.
        channels: width per stage.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        small_kernel: size of the parallel re-parameterisation kernel, or ``None``.
        dw_ratio: depthwise width relative to the stage width.
        ffn_ratio: ConvFFN hidden width relative to the stage width.
        in_channels: input channels (``in_chans`` is accepted too, as timm passes it).
        num_classes: classes of the linear head; ``0`` for no head (pooled features); ``None`` for the official
            backbone mode, which needs ``out_indices``.
        out_indices: backbone mode: ``forward`` returns the listed stage outputs (after ``stages[i].norm``).
        use_checkpoint: gradient checkpointing of the stem and every block (``set_grad_checkpointing``).
        small_kernel_merged: build the deploy (fused) form directly.
        norm_intermediate_features: a BN after each stage's output in backbone mode (RepLKNet-XL downstream).
    """

    def __init__(
        self,
        large_kernel_sizes: tuple[int, ...] = (31, 29, 27, 13),
        layers: tuple[int, ...] = (2, 2, 18, 2),
        channels: tuple[int, ...] = (128, 256, 512, 1024),
        drop_path_rate: float = 0.3,
        small_kernel: int | None = 5,
        dw_ratio: float = 1,
        ffn_ratio: float = 4,
        in_channels: int = 3,
        num_classes: int | None = 1000,
        out_indices: tuple[int, ...] | None = None,
        use_checkpoint: bool = False,
        small_kernel_merged: bool = False,
        norm_intermediate_features: bool = False,
        in_chans: int | None = None,
        global_pool: str = "avg",
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"RepLKNet got unexpected arguments: {sorted(kwargs)}")
        if not (len(large_kernel_sizes) == len(layers) == len(channels)):
            raise ValueError("large_kernel_sizes, layers and channels must have one entry per stage")
        if num_classes is None and out_indices is None:
            raise ValueError("give num_classes (classifier) or out_indices (backbone), not neither")
        if num_classes is not None and out_indices is not None:
            raise ValueError("give num_classes (classifier) or out_indices (backbone), not both")
        if norm_intermediate_features and out_indices is None:
            raise ValueError("norm_intermediate_features is only used with out_indices (backbone mode)")
        if global_pool not in ("avg", ""):
            raise ValueError(f"RepLKNet supports global_pool 'avg' only, got {global_pool!r}")
        in_channels = in_chans if in_chans is not None else in_channels
        self.num_classes = num_classes if num_classes is not None else 0
        self.out_indices = tuple(out_indices) if out_indices is not None else None
        self.num_stages = len(layers)
        self.large_kernel_sizes = tuple(large_kernel_sizes)
        self.in_chans = in_channels
        self.num_features = self.head_hidden_size = channels[-1]
        self.grad_checkpointing = False

        base_width = channels[0]
        # NOTE: ReLU modules are not in-place, as in the official code (checkpointing re-runs them).
        self.stem = nn.ModuleList(
            [
                ConvBN(in_channels, base_width, 3, stride=2, act_layer=nn.ReLU),
                ConvBN(base_width, base_width, 3, groups=base_width, act_layer=nn.ReLU),
                ConvBN(base_width, base_width, 1, act_layer=nn.ReLU),
                ConvBN(base_width, base_width, 3, stride=2, groups=base_width, act_layer=nn.ReLU),
            ]
        )
        dpr = torch.linspace(0, drop_path_rate, sum(layers), device="cpu").tolist()
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i in range(self.num_stages):
            start = sum(layers[:i])
            self.stages.append(
                RepLKNetStage(
                    channels[i],
                    layers[i],
                    large_kernel_sizes[i],
                    dpr[start : start + layers[i]],
                    small_kernel,
                    dw_ratio=dw_ratio,
                    ffn_ratio=ffn_ratio,
                    small_kernel_merged=small_kernel_merged,
                    norm_intermediate_features=norm_intermediate_features,
                )
            )
            if i < self.num_stages - 1:
                self.transitions.append(
                    nn.Sequential(
                        ConvBN(channels[i], channels[i + 1], 1, act_layer=nn.ReLU),
                        ConvBN(
                            channels[i + 1], channels[i + 1], 3, stride=2, groups=channels[i + 1], act_layer=nn.ReLU
                        ),
                    )
                )
        self.feature_info = [
            dict(num_chs=channels[i], reduction=4 * 2**i, module=f"stages.{i}") for i in range(self.num_stages)
        ]
        if self.out_indices is None:
            # NOTE: the final BN acts before pooling, as in the official code.
            self.norm: nn.Module = nn.BatchNorm2d(channels[-1])
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.head: nn.Module = nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()
        if use_checkpoint:
            self.set_grad_checkpointing(True)

    # ------------------------------------------------------------------ timm conventions
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay: stem, then each stage with the transition into it."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^transitions\.(\d+)", (0,))],
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if self.out_indices is not None:
            raise ValueError("a backbone-mode RepLKNet (out_indices) has no classifier")
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"RepLKNet supports global_pool 'avg' only, got {global_pool!r}")
        self.num_classes = num_classes
        device = self.stem[0].conv.weight.device
        self.head = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"RepLKNet expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"RepLKNet was built for {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        min_size = 2 ** (self.num_stages + 1)
        if x.shape[-2] < min_size or x.shape[-1] < min_size:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is too small: RepLKNet downsamples by {min_size}, give at least "
                f"{min_size}x{min_size}"
            )

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem[0](x)
        for stem_layer in self.stem[1:]:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(stem_layer, x, use_reentrant=False)
            else:
                x = stem_layer(x)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs (before each transition, after ``stages[i].norm``), timm's ``forward_intermediates``.

        Args:
            indices: stage indices to return, or ``n`` for the last ``n`` stages; default all.
            norm: apply the final ``norm`` to the last stage's output when it is returned.
        """
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"RepLKNet produces NCHW features only, got output_fmt={output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        x = self._run_stem(x)
        last = max_index if stop_early else self.num_stages - 1
        for i in range(last + 1):
            x = self.stages[i](x)
            if i in take_indices:
                feature = self.stages[i].norm(x)
                if norm and i == self.num_stages - 1 and self.out_indices is None:
                    feature = self.norm(feature)
                intermediates.append(feature)
            if i < self.num_stages - 1 and i < last:
                x = self.transitions[i](x)
        if intermediates_only:
            return intermediates
        if last == self.num_stages - 1 and self.out_indices is None:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        """Drop stages after the last requested index (and the head), as timm's feature wrapper asks."""
        from timm.models._features import feature_take_indices

        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        self.stages = self.stages[: max_index + 1]
        self.transitions = self.transitions[:max_index]
        self.num_stages = max_index + 1
        if self.out_indices is None:
            if prune_norm or max_index < len(self.feature_info) - 1:
                self.norm = nn.Identity()
            if prune_head:
                self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and transitions, then the final BN: ``(N, C_last, H/32, W/32)``."""
        self._check_input(x)
        x = self._run_stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < self.num_stages - 1:
                x = self.transitions[i](x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        if self.out_indices is not None:
            return self.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def reparameterize(self, deep: bool = False) -> None:
        """The large-kernel merges happen in the submodules; ``deep`` also folds ``norm`` into the head."""
        if (
            deep
            and self.out_indices is None
            and isinstance(self.norm, nn.BatchNorm2d)
            and isinstance(self.head, nn.Linear)
        ):
            # BN before global average pooling commutes with it: fold its affine into the linear head.
            scale, shift = bn_affine(self.norm)
            weight, bias = fold_bn_into_next_1x1(scale, shift, self.head.weight, self.head.bias)
            self.head.weight.data.copy_(weight)
            self.head.bias.data.copy_(bias)
            self.norm = nn.Identity()


# ---------------------------------------------------------------------- checkpoints, configs, registered factories
_DEFAULTS = {name: p.default for name, p in inspect.signature(RepLKNet.__init__).parameters.items()}


@dataclass(frozen=True)
class RepLKNetConfig:
    """One registered RepLKNet variant: the official constructor's architecture arguments.

    Defaults are the constructor's (RepLKNet-31B), read from its signature so they live in one place.
    """

    large_kernel_sizes: tuple[int, ...]
    layers: tuple[int, ...] = _DEFAULTS["layers"]
    channels: tuple[int, ...] = _DEFAULTS["channels"]
    # 5x5 re-parameterisation branch beside each large kernel; None for none (XL, and 3x3 kernels).
    small_kernel: int | None = _DEFAULTS["small_kernel"]
    # depthwise width = dw_ratio * stage width (XL widens the large-kernel layers by 1.5).
    dw_ratio: float = _DEFAULTS["dw_ratio"]
    ffn_ratio: float = _DEFAULTS["ffn_ratio"]
    # the official factories' default; the paper trains 31B on ImageNet-1K with 0.5 (see train presets).
    drop_path_rate: float = _DEFAULTS["drop_path_rate"]

    def kwargs(self) -> dict:
        return asdict(self)


REPLKNET_CONFIGS: dict[str, RepLKNetConfig] = {
    "replknet_31b": RepLKNetConfig(large_kernel_sizes=(31, 29, 27, 13)),
    "replknet_31l": RepLKNetConfig(large_kernel_sizes=(31, 29, 27, 13), channels=(192, 384, 768, 1536)),
    "replknet_xl": RepLKNetConfig(
        large_kernel_sizes=(27, 27, 27, 13), channels=(256, 512, 1024, 2048), small_kernel=None, dw_ratio=1.5
    ),
    # The kernel-size study of the paper (Table 5) on the 31B body. NOTE: a 5x5 branch cannot sit inside a
    # 3x3 kernel, so the 3x3 model has no re-parameterisation branch (the official code asserts small <= large).
    "replknet_31b_k3": RepLKNetConfig(large_kernel_sizes=(3, 3, 3, 3), small_kernel=None),
    "replknet_31b_k7": RepLKNetConfig(large_kernel_sizes=(7, 7, 7, 7)),
    "replknet_31b_k13": RepLKNetConfig(large_kernel_sizes=(13, 13, 13, 13)),
    "replknet_31b_k25": RepLKNetConfig(large_kernel_sizes=(25, 25, 25, 13)),
    "replknet_31b_k31": RepLKNetConfig(large_kernel_sizes=(31, 29, 27, 13)),
    # Small models for CPU work (the built-in training demo, tests): the official tiny fixture's shape.
    "replknet_tiny": RepLKNetConfig(
        large_kernel_sizes=(31, 29, 27, 13), layers=(1, 1, 2, 1), channels=(16, 32, 64, 128), drop_path_rate=0.0
    ),
    "replknet_tiny_k3": RepLKNetConfig(
        large_kernel_sizes=(3, 3, 3, 3),
        layers=(1, 1, 2, 1),
        channels=(16, 32, 64, 128),
        small_kernel=None,
        drop_path_rate=0.0,
    ),
}


def checkpoint_filter_fn(state_dict: dict, model: RepLKNet) -> dict:
    """Official, ``module.``-prefixed, wrapped (``model``/``state_dict``/``model_ema``) or mmpretrain checkpoints."""
    from replknet.checkpoint import convert_state_dict

    return convert_state_dict(state_dict, model)


def _cfg(input_size: int = 224, **kwargs) -> dict:
    # Official eval: resize to size/0.875 + centre crop below 384; a direct (squash) resize at 384 and above.
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
        "first_conv": "stem.0.conv",
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2203.06717",
        **kwargs,
    }


def _build_default_cfgs() -> dict:
    from timm.models import generate_default_cfgs

    cfgs = {
        # Released checkpoints of the paper (load them from a local file: pretrained_cfg_overlay=dict(file=...)).
        "replknet_31b.in1k": _cfg(224),
        "replknet_31b.in1k_384": _cfg(384),
        "replknet_31b.in22k": _cfg(224, num_classes=21841),
        "replknet_31b.in22k_ft_in1k": _cfg(224),
        "replknet_31b.in22k_ft_in1k_384": _cfg(384),
        "replknet_31l.in22k_ft_in1k_384": _cfg(384),
        "replknet_31l.in22k": _cfg(224, num_classes=21841),
        # NOTE: RepLKNet-XL was evaluated with mean/std 0.5 (official README, "Evaluation").
        "replknet_xl.meg73m_ft_in1k_320": _cfg(320, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    }
    for name in REPLKNET_CONFIGS:
        if not any(key.split(".")[0] == name for key in cfgs):
            cfgs[name] = _cfg(224)
    return generate_default_cfgs(cfgs)


default_cfgs = _build_default_cfgs()


def _create_replknet(variant: str, pretrained: bool = False, **kwargs) -> RepLKNet:
    from timm.models import build_model_with_cfg

    config = REPLKNET_CONFIGS[variant].kwargs()
    config.update(kwargs)
    if config.get("out_indices") is not None and not config.get("features_only", False):
        # Backbone mode: timm drops num_classes=None and would fill in the pretrained config's 1000, which the
        # official constructor rejects next to out_indices.
        config["num_classes"] = None
    return build_model_with_cfg(
        RepLKNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **config,
    )


def _build_backbone(info, **options) -> RepLKNet:
    """The official backbone mode: ``num_classes=None`` with the four stage outputs (strides 4..32)."""
    # NOTE: built directly rather than through timm: timm's factory replaces num_classes=None with the default
    # config's 1000, and the official backbone mode needs num_classes=None with out_indices.
    kwargs = {**info.config.kwargs(), **options}
    kwargs.setdefault("out_indices", (0, 1, 2, 3))
    return RepLKNet(**kwargs, num_classes=None)


def _is_deploy_state_dict(state_dict) -> bool:
    from replknet.checkpoint import is_deploy_state_dict

    return is_deploy_state_dict(state_dict)


REPLKNET = ModelFamily(
    name="replknet",
    model_cls=RepLKNet,
    configs=REPLKNET_CONFIGS,
    paper="Scaling Up Your Kernels to 31x31 (Ding et al., CVPR 2022)",
    fusible=True,
    deploy_arg="small_kernel_merged",
    is_deploy_state_dict=_is_deploy_state_dict,
    feature_strides=(4, 8, 16, 32),
    backbone=_build_backbone,
    torchscript=False,  # trace only (forward_intermediates and timm's feature helpers are not scriptable)
)


@register_model(REPLKNET)
def replknet_31b(pretrained: bool = False, **kwargs) -> RepLKNet:
    """RepLKNet-31B: kernels 31/29/27/13 with 5x5 re-param branches, channels 128..1024 (the paper's base model)."""
    return _create_replknet("replknet_31b", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31l(pretrained: bool = False, **kwargs) -> RepLKNet:
    """RepLKNet-31L: the 31B body at channels 192..1536."""
    return _create_replknet("replknet_31l", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_xl(pretrained: bool = False, **kwargs) -> RepLKNet:
    """RepLKNet-XL: kernels 27/27/27/13 without small kernels, depthwise width x1.5, channels 256..2048."""
    return _create_replknet("replknet_xl", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31b_k3(pretrained: bool = False, **kwargs) -> RepLKNet:
    """The 31B body with 3x3 depthwise kernels (the paper's kernel-size study, Table 5)."""
    return _create_replknet("replknet_31b_k3", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31b_k7(pretrained: bool = False, **kwargs) -> RepLKNet:
    """The 31B body with 7x7 depthwise kernels (Table 5)."""
    return _create_replknet("replknet_31b_k7", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31b_k13(pretrained: bool = False, **kwargs) -> RepLKNet:
    """The 31B body with 13x13 depthwise kernels (Table 5)."""
    return _create_replknet("replknet_31b_k13", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31b_k25(pretrained: bool = False, **kwargs) -> RepLKNet:
    """The 31B body with kernels 25/25/25/13 (Table 5)."""
    return _create_replknet("replknet_31b_k25", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_31b_k31(pretrained: bool = False, **kwargs) -> RepLKNet:
    """The 31B body with kernels 31/29/27/13 (Table 5; the same architecture as replknet_31b)."""
    return _create_replknet("replknet_31b_k31", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_tiny(pretrained: bool = False, **kwargs) -> RepLKNet:
    """A CPU-sized RepLKNet (kernels 31/29/27/13 + 5x5, layers 1/1/2/1, channels 16..128): demo and tests."""
    return _create_replknet("replknet_tiny", pretrained, **kwargs)


@register_model(REPLKNET)
def replknet_tiny_k3(pretrained: bool = False, **kwargs) -> RepLKNet:
    """replknet_tiny with 3x3 depthwise kernels and no re-param branch (the small-kernel baseline)."""
    return _create_replknet("replknet_tiny_k3", pretrained, **kwargs)
