"""RepLKNet + UperNet for semantic segmentation, the paper's downstream setup (spec section 8).

The backbone is RepLKNet in the official backbone mode (``num_classes=None, out_indices=(0, 1, 2, 3)``), so
official classifier checkpoints load into it (head and final norm are dropped, as the official segmentation code
does). The decode head is mmsegmentation's ``UPerHead`` (channels 512, pool scales 1, 2, 3, 6) and the auxiliary
head mmsegmentation's ``FCNHead`` on stage 2 (256 channels, loss weight 0.4).

The UPerHead body (PPM on the last level, lateral 1x1 and FPN 3x3 conv-BN-ReLU, top-down sum, 3x3 fusion conv
over the concatenation at stride 4) is segmentation-models-pytorch's ``UPerNetDecoder``: it computes the same
function. Parts that differ from mmsegmentation are replaced here, each marked ``NOTE:``.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegmentorConfig", "FCNHead", "UperNetHead", "RepLKNetUperNet", "build_segmentor", "backbone_features"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentorConfig:
    """A RepLKNet-UperNet segmentor. Defaults are the paper's ADE20K setup (``RepLKNet_upernet.py``)."""

    backbone: str = "replknet_31b"
    # constructor options on top of the registered backbone's (e.g. large_kernel_sizes for a kernel-size study)
    backbone_kwargs: dict = field(default_factory=dict)
    num_classes: int = 150
    # UPerHead width; 512 in every paper config. The CPU demo uses 64 on the tiny backbone.
    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    # FCNHead on the stage-2 output (third stage), 256 channels, loss weight 0.4; aux_channels=0 removes it.
    aux_channels: int = 256
    aux_in_index: int = 2
    aux_loss_weight: float = 0.4
    # The official configs use 0.5 (31B-1K), 0.3 (31B-22K, 31L), 0.5 (XL) for segmentation.
    drop_path_rate: float = 0.3
    # True only for RepLKNet-XL in the paper (a BN on every stage output).
    norm_intermediate_features: bool = False
    use_checkpoint: bool = False
    align_corners: bool = False

    def __post_init__(self) -> None:
        # Lists (from JSON or a checkpoint) and tuples mean the same kernel sizes: keep one form, so that a resumed
        # run compares equal to the config it was started with.
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(self.backbone_kwargs).items()}
        object.__setattr__(self, "backbone_kwargs", kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SegmentorConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "pool_scales" in known:
            known["pool_scales"] = tuple(known["pool_scales"])
        return cls(**known)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BN -> ReLU: mmcv's ``ConvModule`` with ``norm_cfg=BN``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class FCNHead(nn.Module):
    """mmsegmentation's ``FCNHead`` as configured by the paper: 3x3 conv-BN-ReLU, dropout 0.1, 1x1 classifier.

    (``num_convs=1, concat_input=False``.) Not in segmentation-models-pytorch, so written here.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class UperNetHead(nn.Module):
    """mmsegmentation's ``UPerHead``: smp's UPerNet decoder, with the differences below, and the classifier.

    Args:
        in_channels: channels of the four backbone levels (strides 4, 8, 16, 32).
        channels: width of every PPM/FPN/fusion conv (512 in the paper).
        num_classes: output classes.
        pool_scales: PPM bins on the last level.
        dropout: ``Dropout2d`` before the 1x1 classifier.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        channels: int,
        num_classes: int,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from segmentation_models_pytorch.decoders.upernet.decoder import PSPModule, UPerNetDecoder

        if len(in_channels) != 4:
            raise ValueError(f"UperNetHead needs 4 backbone levels, got in_channels={in_channels}")
        # smp expects the encoder's channel list from the input (stride 1) and stride 2 onwards; it drops those two.
        self.decoder = UPerNetDecoder(encoder_channels=(3, 0, *in_channels), encoder_depth=5, decoder_channels=channels)
        # NOTE: smp applies a LayerNorm2d to every encoder feature before the head; mmseg's UPerHead does not (and
        # the paper's backbone has its own optional BN, norm_intermediate_features). Removed.
        self.decoder.feature_norms = nn.ModuleList([nn.Identity() for _ in in_channels])
        if tuple(pool_scales) != (1, 2, 3, 6):
            # smp hard-codes the paper's pool scales; other scales get a PSP module built with them.
            self.decoder.psp = PSPModule(in_channels[-1], channels, sizes=tuple(pool_scales))
        # NOTE: smp's SegmentationHead has no dropout and upsamples by a fixed x4 with align_corners=True; mmseg
        # applies Dropout2d(0.1) then a 1x1 conv, and the segmentor resizes the logits to the input size
        # (bilinear, align_corners=False), which also handles sizes that are not multiples of 32.
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Four maps (strides 4..32) -> logits at stride 4 ``(N, num_classes, H/4, W/4)``."""
        fused = self.decoder([None, None, *features])  # smp skips the first two (stride 1, 2) entries
        return self.classifier(self.dropout(fused))


def backbone_features(backbone: nn.Module) -> list[dict]:
    """Channels and stride of each map the backbone returns (``[{"num_chs", "reduction", "module"}, ...]``)."""
    out_indices = getattr(backbone, "out_indices", None)
    indices = out_indices if out_indices is not None else range(len(backbone.feature_info))
    return [dict(backbone.feature_info[i]) for i in indices]


def _build_backbone(config: SegmentorConfig) -> nn.Module:
    from replknet.models import find_model_info, list_models

    backbones = [name for name in list_models() if find_model_info(name).family.backbone is not None]
    info = find_model_info(config.backbone)
    if info is None or info.family.backbone is None:
        raise ValueError(f"unknown backbone {config.backbone!r}; backbones: {', '.join(backbones)}")
    options: dict = {"drop_path_rate": config.drop_path_rate, **config.backbone_kwargs}
    if config.norm_intermediate_features:
        if "norm_intermediate_features" not in inspect.signature(info.family.model_cls.__init__).parameters:
            raise ValueError(
                f"norm_intermediate_features is a RepLKNet option; {config.backbone} ({info.family.name}) builds its "
                "own backbone-mode norms"
            )
        options["norm_intermediate_features"] = True
    backbone = info.family.backbone(info, **options)
    if len(backbone_features(backbone)) != 4:
        raise ValueError(
            f"UperNet needs a backbone with 4 levels (strides 4..32); {config.backbone} with {config.backbone_kwargs} "
            f"gives {len(backbone_features(backbone))}"
        )
    return backbone


class RepLKNetUperNet(nn.Module):
    """A registered backbone (any family with a backbone builder) + UperNet decode head + auxiliary FCN head (mmseg's ``EncoderDecoder``).

    ``forward`` returns logits resized to the input size, ``(N, num_classes, H, W)``; ``forward_train`` also
    returns the auxiliary logits. Any input size works (it is padded to nothing; the backbone needs >= 32 px).
    """

    def __init__(self, config: SegmentorConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None or kwargs:
            config = SegmentorConfig(**{**(config.to_dict() if config is not None else {}), **kwargs})
        if config.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
        if not 0 <= config.aux_in_index < 4:
            raise ValueError(f"aux_in_index must be a stage index 0..3, got {config.aux_in_index}")
        self.config = config
        self.num_classes = config.num_classes
        self.backbone = _build_backbone(config)
        if config.use_checkpoint:
            self.backbone.set_grad_checkpointing(True)
        in_channels = tuple(info["num_chs"] for info in backbone_features(self.backbone))
        self.decode_head = UperNetHead(
            in_channels, config.channels, config.num_classes, config.pool_scales, config.dropout
        )
        self.auxiliary_head = (
            FCNHead(in_channels[config.aux_in_index], config.aux_channels, config.num_classes, config.dropout)
            if config.aux_channels > 0
            else None
        )

    def _resize(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.config.align_corners)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(main logits, auxiliary logits or None)``, both at the input size."""
        features = self.backbone(x)  # 4 maps, strides 4, 8, 16, 32
        size = tuple(x.shape[-2:])
        main = self._resize(self.decode_head(features), size)
        aux = None
        if self.auxiliary_head is not None:
            aux = self._resize(self.auxiliary_head(features[self.config.aux_in_index]), size)
        return main, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self._resize(self.decode_head(features), tuple(x.shape[-2:]))

    def loss(
        self, x: torch.Tensor, target: torch.Tensor, ignore_index: int = 255
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the main logits plus ``aux_loss_weight`` times that of the auxiliary head.

        Returns:
            the total loss and its parts (``loss_main``, ``loss_aux``) as floats for logging.
        """
        main, aux = self.forward_train(x)
        loss_main = F.cross_entropy(main.float(), target, ignore_index=ignore_index)
        parts = {"loss_main": loss_main.item()}
        total = loss_main
        if aux is not None:
            loss_aux = F.cross_entropy(aux.float(), target, ignore_index=ignore_index)
            total = total + self.config.aux_loss_weight * loss_aux
            parts["loss_aux"] = loss_aux.item()
        return total, parts

    def _backbone_only_keys(self) -> set[str]:
        """Keys of the backbone form that the classifier form of the same architecture lacks (stage-output norms:
        RepLKNet's ``norm_intermediate_features`` BNs, UniRepLKNet's ``norm0..norm3``)."""
        from replknet.models import get_model_info

        info = get_model_info(self.config.backbone)
        with torch.device("meta"):
            classifier = info.family.model_cls(**info.config.kwargs())
        return set(self.backbone.state_dict()) - set(classifier.state_dict())

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Load a checkpoint (official classifier or backbone, mmpretrain, this library) into the backbone.

        Classifier head and final norm are dropped; the stage-output norms a classifier checkpoint lacks keep
        their initial values (the official code loads with ``strict=False`` for this). Any other missing or
        mismatched key is an error.
        """
        from replknet.checkpoint import check_state_dict, convert_state_dict, read_checkpoint

        state_dict = convert_state_dict(read_checkpoint(path), self.backbone)
        missing_norms = sorted(k for k in self._backbone_only_keys() if k not in state_dict)
        if missing_norms:
            _logger.info("%s has no stage-output norms; %d entries keep their init", path, len(missing_norms))
            current = self.backbone.state_dict()
            state_dict = {**{k: current[k] for k in missing_norms}, **state_dict}
        try:
            check_state_dict(self.backbone, state_dict)
        except ValueError as error:
            raise type(error)(f"{path}: {error}") from None
        self.backbone.load_state_dict(state_dict)


def build_segmentor(
    backbone: str = "replknet_31b",
    num_classes: int = 150,
    backbone_checkpoint: str | os.PathLike | None = None,
    **kwargs,
) -> RepLKNetUperNet:
    """Build a RepLKNet-UperNet (``SegmentorConfig`` fields as keyword arguments), optionally loading a backbone."""
    model = RepLKNetUperNet(SegmentorConfig(backbone=backbone, num_classes=num_classes, **kwargs))
    if backbone_checkpoint is not None:
        model.load_backbone(backbone_checkpoint)
    return model
