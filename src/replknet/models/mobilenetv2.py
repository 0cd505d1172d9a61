"""MobileNetV2 with large depthwise kernels: the models of the RepLKNet paper's guideline experiments.

The paper (Sec. 3) studies MobileNetV2 with every depthwise 3x3 replaced by KxK (3, 7, 9, 13), with and without
the inverted-residual shortcuts (Guideline 2), with and without a parallel 3x3 re-parameterisation branch
(Guideline 3), and with only the last stage's kernels enlarged (Guideline 5: large kernels help even on 7x7 maps).
The body is the standard MobileNetV2 (width 1.0; torchvision's layer sequence).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from replknet.models._registry import ModelFamily, register_model
from replknet.models.layers import ConvBN, ReparamLargeKernelConv
from replknet.reparam import Reparameterizable

__all__ = ["MOBILENETV2", "MOBILENETV2_CONFIGS", "LargeKernelMobileNetV2", "MobileNetV2Backbone", "MobileNetV2Config"]

# (expansion t, output channels c, repeats n, first stride s) per group, as in the MobileNetV2 paper.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# groups -> stages at output strides 2, 4, 8, 16, 32
_STAGE_OF_GROUP = (0, 1, 2, 3, 3, 4, 4)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: the nearest multiple of ``divisor``, never below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise KxK (+ optional small-kernel branch) -> 1x1 project; optional shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        kernel_size: int,
        small_kernel: int | None,
        shortcut: bool,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_shortcut = shortcut and stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            ConvBN(in_channels, hidden, 1, act_layer=nn.ReLU6) if expand_ratio != 1 else nn.Identity()
        )
        self.depthwise = ReparamLargeKernelConv(hidden, kernel_size, small_kernel, deploy=deploy, stride=stride)
        self.act = nn.ReLU6()
        self.project = ConvBN(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.act(self.depthwise(self.expand(x))))
        return x + out if self.use_shortcut else out


class LargeKernelMobileNetV2(nn.Module, Reparameterizable):
    """MobileNetV2 (width 1.0) whose depthwise convolutions are re-parameterisable large kernels.

    Args:
        kernel_size: depthwise kernel size.
        last_stage_kernel_size: kernel size in the stride-32 stage only (``None``: ``kernel_size``).
        shortcut: keep the inverted-residual shortcuts.
        small_kernel: parallel small kernel fused at deploy time (``None``: none). Only used where it is smaller
            than the block's kernel.
        num_classes: classifier outputs (``0``: pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier (MobileNetV2 uses 0.2).
        small_kernel_merged: build the deploy (fused) form directly.
        width_multiplier: scales every width (rounded to multiples of 8, torchvision's rule; the 1280-wide head
            conv is kept for multipliers below 1). 1.0 is the paper's model; ``replknet study`` uses smaller
            widths to fit a CPU.
    """

    def __init__(
        self,
        kernel_size: int = 3,
        last_stage_kernel_size: int | None = None,
        shortcut: bool = True,
        small_kernel: int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        small_kernel_merged: bool = False,
        global_pool: str = "avg",
        width_multiplier: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__()
        kwargs.pop("drop_path_rate", None)  # timm passes it to every model; MobileNetV2 has no drop path
        if kwargs:
            raise TypeError(f"LargeKernelMobileNetV2 got unexpected arguments: {sorted(kwargs)}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"only global_pool 'avg' is supported, got {global_pool!r}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        stem_channels = _make_divisible(32 * width_multiplier)
        self.stem = ConvBN(in_chans, stem_channels, 3, stride=2, act_layer=nn.ReLU6)
        stages: list[list[nn.Module]] = [[] for _ in range(5)]
        in_channels = stem_channels
        stage_channels = [0] * 5
        for group, (t, c, n, s) in enumerate(_INVERTED_RESIDUAL_SETTING):
            c = _make_divisible(c * width_multiplier)
            stage = _STAGE_OF_GROUP[group]
            k = last_stage_kernel_size if (stage == 4 and last_stage_kernel_size is not None) else kernel_size
            small = small_kernel if small_kernel is not None and small_kernel < k else None
            for i in range(n):
                stride = s if i == 0 else 1
                stages[stage].append(
                    InvertedResidual(in_channels, c, stride, t, k, small, shortcut, deploy=small_kernel_merged)
                )
                in_channels = c
            stage_channels[stage] = c
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.feature_info = [
            dict(num_chs=c, reduction=2 ** (i + 1), module=f"stages.{i}") for i, c in enumerate(stage_channels)
        ]
        self.num_features = self.head_hidden_size = _make_divisible(1280 * max(1.0, width_multiplier))
        self.conv_head = ConvBN(in_channels, self.num_features, 1, act_layer=nn.ReLU6)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        device = self.stem.conv.weight.device
        self.classifier = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"input {tuple(x.shape[-2:])} is too small: MobileNetV2 downsamples by 32")

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Outputs of the five stages (strides 2..32), timm's ``forward_intermediates``."""
        from timm.models._features import feature_take_indices

        if output_fmt != "NCHW":
            raise ValueError(f"only NCHW features, got output_fmt={output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = max_index if stop_early else len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        for i in range(last + 1):
            x = self._run_stage(self.stages[i], x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.conv_head(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ):
        from timm.models._features import feature_take_indices

        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.conv_head = nn.Identity()
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return self.conv_head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reparameterize(self, deep: bool = False) -> None:
        """Nothing at model level: the depthwise branches and conv-BN pairs fuse in their own modules."""


_DEFAULTS = {name: p.default for name, p in inspect.signature(LargeKernelMobileNetV2.__init__).parameters.items()}


@dataclass(frozen=True)
class MobileNetV2Config:
    """A registered large-kernel MobileNetV2 variant (defaults: the constructor's, read from its signature)."""

    # depthwise kernel size of every block, except those in the last stage when last_stage_kernel_size is set
    kernel_size: int = _DEFAULTS["kernel_size"]
    # kernel of the stride-32 stage (the 160- and 320-channel groups, 7x7 maps at 224); None: same as kernel_size
    last_stage_kernel_size: int | None = _DEFAULTS["last_stage_kernel_size"]
    # the inverted-residual identity shortcuts (Guideline 2 removes them)
    shortcut: bool = _DEFAULTS["shortcut"]
    # parallel small depthwise kernel merged by re-parameterisation (Guideline 3 uses 3x3); None for none
    small_kernel: int | None = _DEFAULTS["small_kernel"]

    def kwargs(self) -> dict:
        return asdict(self)


def _variants() -> dict[str, MobileNetV2Config]:
    configs: dict[str, MobileNetV2Config] = {}
    for k in (3, 7, 9, 13):
        configs[f"mbv2_lk_k{k}"] = MobileNetV2Config(kernel_size=k)
        configs[f"mbv2_lk_k{k}_noshortcut"] = MobileNetV2Config(kernel_size=k, shortcut=False)
        if k > 3:
            configs[f"mbv2_lk_k{k}_rep3"] = MobileNetV2Config(kernel_size=k, small_kernel=3)
    for k in (7, 13):
        configs[f"mbv2_lk_last{k}"] = MobileNetV2Config(last_stage_kernel_size=k)
        configs[f"mbv2_lk_last{k}_rep3"] = MobileNetV2Config(last_stage_kernel_size=k, small_kernel=3)
    return configs


MOBILENETV2_CONFIGS: dict[str, MobileNetV2Config] = _variants()


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.conv",
        "classifier": "classifier",
        "paper_ids": "arXiv:2203.06717",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in MOBILENETV2_CONFIGS})


def _create_mobilenetv2(variant: str, pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    options = MOBILENETV2_CONFIGS[variant].kwargs()
    options.update(kwargs)
    return build_model_with_cfg(
        LargeKernelMobileNetV2,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3, 4)),
        **options,
    )


def _is_deploy_state_dict(state_dict) -> bool:
    from replknet.checkpoint import is_deploy_state_dict

    return is_deploy_state_dict(state_dict)


class MobileNetV2Backbone(nn.Module):
    """A large-kernel MobileNetV2 as a 4-level backbone: its stride 4, 8, 16 and 32 stage outputs.

    The paper's Cityscapes experiments of guidelines 3-5 put MobileNetV2 under a segmentation head; so does
    ``replknet.seg`` with this module. The 1280-wide head conv is dropped (a DDP run refuses unused parameters).
    """

    def __init__(self, model: LargeKernelMobileNetV2) -> None:
        super().__init__()
        model.prune_intermediate_layers([1, 2, 3, 4], prune_head=True)
        self.model = model
        self.out_indices = (0, 1, 2, 3)
        self.feature_info = [dict(info) for info in model.feature_info[1:]]  # strides 4..32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def _build_backbone(info, **options) -> MobileNetV2Backbone:
    """The features form for segmentation heads: stages at strides 4..32 (``replknet.seg``)."""
    return MobileNetV2Backbone(LargeKernelMobileNetV2(**{**info.config.kwargs(), **options, "num_classes": 0}))


MOBILENETV2 = ModelFamily(
    name="mobilenetv2",
    model_cls=LargeKernelMobileNetV2,
    configs=MOBILENETV2_CONFIGS,
    paper="the MobileNetV2 experiments of Scaling Up Your Kernels to 31x31 (Ding et al., CVPR 2022)",
    fusible=True,
    deploy_arg="small_kernel_merged",
    is_deploy_state_dict=_is_deploy_state_dict,
    feature_strides=(2, 4, 8, 16, 32),
    backbone=_build_backbone,
)


@register_model(MOBILENETV2)
def mbv2_lk_k3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with every depthwise kernel 3x3."""
    return _create_mobilenetv2("mbv2_lk_k3", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k3_noshortcut(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 3x3 depthwise kernels and no identity shortcuts (Guideline 2)."""
    return _create_mobilenetv2("mbv2_lk_k3_noshortcut", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k7(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with every depthwise kernel 7x7."""
    return _create_mobilenetv2("mbv2_lk_k7", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k7_noshortcut(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 7x7 depthwise kernels and no identity shortcuts (Guideline 2)."""
    return _create_mobilenetv2("mbv2_lk_k7_noshortcut", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k7_rep3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 7x7 depthwise kernels and a parallel 3x3 re-param branch (Guideline 3)."""
    return _create_mobilenetv2("mbv2_lk_k7_rep3", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k9(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with every depthwise kernel 9x9."""
    return _create_mobilenetv2("mbv2_lk_k9", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k9_noshortcut(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 9x9 depthwise kernels and no identity shortcuts (Guideline 2)."""
    return _create_mobilenetv2("mbv2_lk_k9_noshortcut", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k9_rep3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 9x9 depthwise kernels and a parallel 3x3 re-param branch (Guideline 3)."""
    return _create_mobilenetv2("mbv2_lk_k9_rep3", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k13(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with every depthwise kernel 13x13."""
    return _create_mobilenetv2("mbv2_lk_k13", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k13_noshortcut(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 13x13 depthwise kernels and no identity shortcuts (Guideline 2)."""
    return _create_mobilenetv2("mbv2_lk_k13_noshortcut", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_k13_rep3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 13x13 depthwise kernels and a parallel 3x3 re-param branch (Guideline 3)."""
    return _create_mobilenetv2("mbv2_lk_k13_rep3", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_last7(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 7x7 kernels in the stride-32 stage only, 3x3 elsewhere (Guideline 5)."""
    return _create_mobilenetv2("mbv2_lk_last7", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_last7_rep3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """mbv2_lk_last7 with a parallel 3x3 re-param branch (Guideline 5)."""
    return _create_mobilenetv2("mbv2_lk_last7_rep3", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_last13(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """MobileNetV2 with 13x13 kernels in the stride-32 stage only, 3x3 elsewhere (Guideline 5)."""
    return _create_mobilenetv2("mbv2_lk_last13", pretrained, **kwargs)


@register_model(MOBILENETV2)
def mbv2_lk_last13_rep3(pretrained: bool = False, **kwargs) -> LargeKernelMobileNetV2:
    """mbv2_lk_last13 with a parallel 3x3 re-param branch (Guideline 5)."""
    return _create_mobilenetv2("mbv2_lk_last13_rep3", pretrained, **kwargs)
