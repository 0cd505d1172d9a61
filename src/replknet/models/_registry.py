"""The model registry: what each of this library's models is and can do, asked by every command.

A model family is one file: its classes, a table of frozen variant configs, one ``ModelFamily`` record and one
explicit factory per variant decorated with ``@register_model(FAMILY)``. The decorator registers the factory with
timm (so ``timm.create_model`` builds it) and records a ``ModelInfo`` here, so commands ask
``get_model_info(name)`` what a model can do (fuse, serve as a backbone, its input size and preprocessing) instead
of testing which config table holds the name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "ModelFamily",
    "ModelInfo",
    "UnknownModelError",
    "family_of",
    "find_model_info",
    "get_model_info",
    "list_families",
    "list_models",
    "register_model",
    "suggest_names",
    "unknown_model_message",
]


class UnknownModelError(ValueError):
    """A model name that neither this library nor timm registers (the message suggests close names)."""


def _never_deploy(state_dict: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family and what every model of it can do.

    Attributes:
        name: family name (``"replknet"``, ``"mobilenetv2"``, ...).
        model_cls: the model class.
        configs: variant name -> frozen architecture config with a ``kwargs()`` method (constructor arguments).
        paper: the paper the family comes from.
        fusible: ``replknet.reparameterize`` turns the training form into a different deploy form.
        deploy_arg: the constructor keyword that builds the deploy (fused) form directly, if any.
        is_deploy_state_dict: tells a deploy-form state dict (or a model's) from a training-form one.
        feature_strides: strides of the feature maps ``features_only`` / ``forward_intermediates`` return.
        backbone: builds the features (backbone) form used by detection and segmentation heads from a variant's
            info and constructor options; ``None`` when the family has no such form.
        torchscript: ``torch.jit.script`` supports the family's models.
    """

    name: str
    model_cls: type[nn.Module]
    configs: Mapping[str, Any]
    paper: str = ""
    fusible: bool = True
    deploy_arg: str | None = None
    is_deploy_state_dict: Callable[[Mapping[str, Any]], bool] = _never_deploy
    feature_strides: tuple[int, ...] = (4, 8, 16, 32)
    backbone: Callable[..., nn.Module] | None = None
    torchscript: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its family, its architecture config and its default preprocessing."""

    name: str
    family: ModelFamily
    config: Any
    doc: str = field(default="", compare=False)

    @property
    def fusible(self) -> bool:
        return self.family.fusible

    @property
    def feature_strides(self) -> tuple[int, ...]:
        return self.family.feature_strides

    def pretrained_cfg(self, tag: str | None = None) -> dict[str, Any]:
        """timm's pretrained config of this model (the default tag unless ``tag`` is given), as a dict."""
        from timm.models import get_pretrained_cfg

        name = self.name if tag is None else f"{self.name}.{tag}"
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
        if cfg is None:
            raise UnknownModelError(f"{name!r} has no pretrained config; tags: {self.tags()}")
        return cfg.to_dict()

    def tags(self) -> list[str]:
        """The pretrained-config tags of this model (``name.TAG`` selects one)."""
        from timm.models import get_arch_pretrained_cfgs

        return sorted(key.split(".", 1)[1] for key in get_arch_pretrained_cfgs(self.name) if "." in key)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the default config evaluates at."""
        return tuple(self.pretrained_cfg()["input_size"])

    @property
    def classifier(self) -> str:
        """The classifier module's name (its ``.weight`` gives a checkpoint's number of classes)."""
        return self.pretrained_cfg().get("classifier", "head")

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The default config's evaluation transform: input size, mean, std, interpolation, crop."""
        cfg = self.pretrained_cfg()
        keys = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
        return {key: cfg[key] for key in keys if key in cfg}


_FAMILIES: dict[str, ModelFamily] = {}
_MODELS: dict[str, ModelInfo] = {}


def register_model(family: ModelFamily) -> Callable[[Callable], Callable]:
    """Decorator for a variant's factory ``def NAME(pretrained=False, **kwargs)``: records it and registers it with timm.

    The function's name is the model name and must be a key of ``family.configs``.
    """
    from timm.models import register_model as timm_register_model

    def decorate(factory: Callable) -> Callable:
        name = factory.__name__
        if name not in family.configs:
            raise ValueError(f"{name} is not a variant of the {family.name} family: {sorted(family.configs)}")
        known = _FAMILIES.setdefault(family.name, family)
        if known is not family:
            raise ValueError(f"two different model families are called {family.name!r}")
        _MODELS[name] = ModelInfo(name, family, family.configs[name], (factory.__doc__ or "").strip())
        return timm_register_model(factory)

    return decorate


def list_families() -> list[str]:
    """Names of the registered model families."""
    return sorted(_FAMILIES)


def list_models(family: str | None = None, fusible: bool | None = None) -> list[str]:
    """Names of this library's registered models, optionally of one family or by whether they fuse."""
    if family is not None and family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; families: {list_families()}")
    return sorted(
        name
        for name, info in _MODELS.items()
        if (family is None or info.family.name == family) and (fusible is None or info.fusible == fusible)
    )


def family_of(model: nn.Module) -> ModelFamily | None:
    """The registered family whose model class ``model`` is an instance of, or None."""
    return next((family for family in _FAMILIES.values() if isinstance(model, family.model_cls)), None)


def find_model_info(name: str) -> ModelInfo | None:
    """The info of one of this library's models (``name`` may carry a ``.tag``), or None for any other name."""
    return _MODELS.get(name.split(".")[0])


def suggest_names(name: str, limit: int = 3) -> list[str]:
    """Registered names (ours first, then timm's) close to ``name``."""
    import timm

    base = name.split(".")[0]
    ours = difflib.get_close_matches(base, list(_MODELS), n=limit, cutoff=0.6)
    others = [n for n in difflib.get_close_matches(base, timm.list_models(), n=limit, cutoff=0.75) if n not in ours]
    return (ours + others)[:limit]


def unknown_model_message(name: str) -> str:
    """``unknown model 'x'; did you mean ...?`` with the closest registered names."""
    suggestions = suggest_names(name)
    hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return f"unknown model {name!r}{hint} (replknet models: `replknet.list_models()`, or any timm model name)"


def get_model_info(name: str) -> ModelInfo:
    """The info of one of this library's models; ``UnknownModelError`` (with close names) for any other name."""
    info = find_model_info(name)
    if info is None:
        import timm

        if name.split(".")[0] in timm.list_models():
            raise UnknownModelError(f"{name!r} is a timm model, not one of replknet's: {', '.join(list_models())}")
        raise UnknownModelError(unknown_model_message(name))
    return info
