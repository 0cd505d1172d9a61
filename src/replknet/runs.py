"""The run folder: what ``train`` and ``seg-train`` write and what every other command reads.

A run folder holds the weights (``model.safetensors``; a classification run also ``model_fused.safetensors`` and
``model_ema.safetensors`` when it has them), the training checkpoint, the metrics, and a ``config.json`` modelled
on timm's ``pretrained_cfg`` conventions (what ``timm.models.save_config_for_hf`` writes)::

    architecture     registered model name
    num_classes      head width
    model_args       constructor arguments that differ from the registered defaults
    pretrained_cfg   input_size, mean, std, interpolation, crop_pct, crop_mode (the evaluation transform)
    label_names      class names, in head order
    task             "classification" or "segmentation"
    training         the run's settings (data, split, sizes, seed, batch size): what ``eval`` needs to evaluate
                     the run on its own validation data

A classification run folder therefore also loads with ``timm.create_model("local-dir:RUN", pretrained=True)``, and
its weights with ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))``. A folder
written by ``replknet convert`` is the same file without ``training``. A segmentation run names its segmentor
(``segmentor``: backbone and head settings) and the dataset's preprocessing; its ``architecture`` is not a timm
model. Run folders written before this format (``config.json`` = the training options) are still read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "CONFIG_NAME",
    "SEGMENTOR_ARCHITECTURE",
    "WEIGHT_NAMES",
    "RunInfo",
    "find_run",
    "read_run",
    "build_segmentor",
    "run_config",
    "segmentation_run_config",
    "write_run_config",
]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# Weight files a folder may hold, in the order a folder path picks them (timm's local-dir order first).
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
SUMMARY_NAME = "summary.json"
SEG_METRICS_NAME = "metrics.json"
SEG_CHECKPOINT_NAME = "last.pth"
SEGMENTOR_ARCHITECTURE = "replknet_upernet"
TASKS = ("classification", "segmentation")
_PREPROCESSING_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


@dataclass(frozen=True)
class RunInfo:
    """A run folder (or converted folder) as read from its ``config.json``.

    Attributes:
        folder: the folder.
        weights: the weights file to load: the one the caller named, else the folder's ``model.safetensors``
            (for a segmentation run of the old format, ``last.pth``).
        task: ``"classification"`` or ``"segmentation"``.
        architecture: the registered model name (a segmentation run: ``replknet_upernet``).
        model_args: constructor arguments beyond the registered defaults (``num_classes`` included).
        pretrained_cfg: timm's preprocessing entries (``input_size``, ``mean``, ``std``, ...).
        class_names: the classes in head order, or None when the folder does not name them.
        training: the run's training settings, or None for a converted folder.
        segmentor: a segmentation run's ``SegmentorConfig`` entries.
        legacy: the folder was written before this format (its ``config.json`` held the training options only).
    """

    folder: Path
    weights: Path
    task: str
    architecture: str
    model_args: dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    training: dict[str, Any] | None = None
    segmentor: dict[str, Any] | None = None
    legacy: bool = False

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` the run evaluates at."""
        size = self.pretrained_cfg.get("input_size", (3, 224, 224))
        return int(size[-2]), int(size[-1])

    @property
    def num_classes(self) -> int | None:
        value = self.model_args.get("num_classes", self.pretrained_cfg.get("num_classes"))
        return None if value is None else int(value)

    def summary(self) -> dict[str, Any] | None:
        """What the run recorded when it finished (``summary.json``; a segmentation run's ``metrics.json``)."""
        name = SUMMARY_NAME if self.task == "classification" else SEG_METRICS_NAME
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"cannot parse {path}: {error}") from error


# ---------------------------------------------------------------------------------------------- writing
def run_config(
    model: nn.Module,
    *,
    task: str = "classification",
    class_names: Sequence[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a classification model (timm's ``save_config_for_hf`` layout) as a dict.

    Args:
        model: the model (its registered name, head width and constructor arguments are read from it).
        task: what the model does.
        class_names: names of the classes in head order.
        preprocessing: the evaluation transform (``input_size`` as ``(C, H, W)``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ``crop_mode``); missing entries keep the model's own.
        model_args: constructor arguments to record beyond those timm records (e.g. the deploy flag).
        training: the run's settings.
    """
    import tempfile

    from timm.models._hub import save_config_for_hf

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    extra: dict[str, Any] = {"task": task}
    if class_names is not None:
        if len(class_names) != getattr(model, "num_classes", len(class_names)):
            raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
        extra["label_names"] = list(class_names)
    if training is not None:
        extra["training"] = training
    data_config = {k: v for k, v in (preprocessing or {}).items() if k in _PREPROCESSING_KEYS and v is not None}
    # NOTE: timm only writes this layout to a path; it is written to a scratch file and read back, so that the
    # caller writes the run's config.json atomically.
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / CONFIG_NAME
        save_config_for_hf(model, str(path), model_config=extra, model_args=model_args, data_config=data_config)
        return json.loads(path.read_text(encoding="utf-8"))


def write_run_config(folder: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``folder/config.json`` atomically; returns the path."""
    from replknet.checkpoint import atomic_write_text

    return atomic_write_text(Path(folder) / CONFIG_NAME, json.dumps(config, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot parse {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds a JSON {type(values).__name__}, not a model config")
    return values


def _folder_weights(folder: Path, names: Sequence[str] = WEIGHT_NAMES) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def find_run(path: str | os.PathLike) -> Path | None:
    """The run folder of ``path``: the folder itself when it holds a ``config.json`` (or a seg-train
    ``last.pth``), the folder of a file that has one beside it, else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / CONFIG_NAME).is_file() or (path.is_dir() and (folder / SEG_CHECKPOINT_NAME).is_file()):
        return folder
    if path.is_file() and path.name == SEG_CHECKPOINT_NAME:
        return folder
    return None


def read_run(path: str | os.PathLike) -> RunInfo | None:
    """The run (or converted) folder that ``path`` is, or holds the weights file ``path``; None for a bare file.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a folder that is neither a run nor holds weights.
        ValueError: a ``config.json`` that cannot be parsed or names no model.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    folder = find_run(path)
    if folder is None:
        if path.is_dir():
            raise FileNotFoundError(
                f"{path} is a folder without {CONFIG_NAME}: give a run folder (written by train or seg-train), a "
                "converted folder, or a weights file"
            )
        return None
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():  # a seg-train folder from before config.json: its last.pth says everything
        return _read_legacy_segmentation(folder, path)
    config = _read_json(config_path)
    if config.get("task") == "segmentation":
        return _read_segmentation(folder, path, config)
    if "architecture" in config:
        return _read_classification(folder, path, config)
    if "model" in config and "image_size" in config:
        return _read_legacy_classification(folder, path, config)
    if "backbone" in config and "dataset" in config:  # a seg-train options dump
        return _read_legacy_segmentation(folder, path)
    if path.is_file():  # a weights file beside some other program's config.json: the file stands alone
        _logger.debug("%s names no model; %s is read as a bare weights file", config_path, path)
        return None
    raise ValueError(
        f"{config_path} names no model: it has no 'architecture' entry (a run or converted folder's config) nor "
        "'model' and 'image_size' (a run folder from before version 0.2)"
    )


def _weights(folder: Path, path: Path, default_names: Sequence[str] = WEIGHT_NAMES) -> Path:
    if path.is_file():
        return path
    weights = _folder_weights(folder, default_names)
    if weights is None:
        raise FileNotFoundError(f"no weights file ({', '.join(default_names)}) in {folder}")
    return weights


def _read_classification(folder: Path, path: Path, config: dict[str, Any]) -> RunInfo:
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    model_args = dict(config.get("model_args") or {})
    if "num_classes" in config:
        model_args.setdefault("num_classes", config["num_classes"])
    labels = config.get("label_names") or pretrained_cfg.pop("label_names", None)
    if isinstance(labels, dict):  # timm allows {index: name} for heads with gaps
        labels = [labels[key] for key in sorted(labels, key=int)]
    return RunInfo(
        folder=folder,
        weights=_weights(folder, path),
        task=config.get("task", "classification"),
        architecture=str(config["architecture"]),
        model_args=model_args,
        pretrained_cfg=pretrained_cfg,
        class_names=list(labels) if labels else None,
        training=config.get("training"),
    )


def _read_legacy_classification(folder: Path, path: Path, config: dict[str, Any]) -> RunInfo:
    """A run folder whose ``config.json`` is the training options (written before the run-folder format)."""
    import replknet

    name = str(config["model"])
    info = replknet.find_model_info(name)
    defaults = dict(info.preprocessing) if info is not None else {}
    size = int(config["image_size"])
    synthetic = config.get("data") == "synthetic"
    # The trainer used the registered mean/std; synthetic images are rendered at the size (no crop), folder
    # images went through the official eval transform at that size.
    pretrained_cfg = {
        **defaults,
        "input_size": (3, size, size),
        "crop_pct": 1.0 if synthetic or size >= 384 else 0.875,
        "crop_mode": "center" if synthetic or size < 384 else "squash",
    }
    class_names = _legacy_class_names(config)
    model_args = {"num_classes": config.get("num_classes") or (len(class_names) if class_names else None)}
    _logger.info("%s/%s is a run folder from before version 0.2 (training options only)", folder, CONFIG_NAME)
    return RunInfo(
        folder=folder,
        weights=_weights(folder, path),
        task="classification",
        architecture=name,
        model_args={k: v for k, v in model_args.items() if v is not None},
        pretrained_cfg=pretrained_cfg,
        class_names=class_names,
        training=config,
        legacy=True,
    )


def _legacy_class_names(config: dict[str, Any]) -> list[str] | None:
    if config.get("data") == "synthetic":
        from replknet.data.synthetic import SHAPE_NAMES

        return list(SHAPE_NAMES)
    split = Path(str(config.get("data", ""))) / str(config.get("train_split", "train"))
    if split.is_dir():
        return sorted(p.name for p in split.iterdir() if p.is_dir())
    return None


def segmentation_preprocessing(dataset: str, image_size: int | None = None) -> dict[str, Any]:
    """The evaluation preprocessing of a segmentation dataset (ImageNet mean/std, the dataset's test scale)."""
    from replknet.seg.data import DATASET_SPECS, IMAGENET_MEAN, IMAGENET_STD

    spec = DATASET_SPECS[dataset]
    cfg: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bilinear"}
    if spec.scale is not None:
        cfg["test_scale"] = tuple(spec.scale)
    if image_size is not None and dataset == "synthetic":
        cfg["input_size"] = (3, image_size, image_size)
    return cfg


def segmentation_run_config(
    segmentor: dict[str, Any], class_names: Sequence[str] | None, training: dict[str, Any]
) -> dict[str, Any]:
    """The ``config.json`` of a segmentation run: its segmentor, classes, preprocessing and settings."""
    dataset = training.get("dataset", "synthetic")
    return {
        "architecture": SEGMENTOR_ARCHITECTURE,
        "backbone": segmentor.get("backbone"),
        "num_classes": segmentor.get("num_classes"),
        "label_names": list(class_names) if class_names else None,
        "segmentor": dict(segmentor),
        "pretrained_cfg": segmentation_preprocessing(dataset, training.get("image_size")),
        "task": "segmentation",
        "training": dict(training),
    }


def _read_segmentation(folder: Path, path: Path, config: dict[str, Any]) -> RunInfo:
    segmentor = config.get("segmentor")
    if not isinstance(segmentor, dict):
        raise ValueError(f"{folder / CONFIG_NAME} is a segmentation run config without a 'segmentor' entry")
    weights_names = (*WEIGHT_NAMES, SEG_CHECKPOINT_NAME)
    return RunInfo(
        folder=folder,
        weights=_weights(folder, path, weights_names),
        task="segmentation",
        architecture=str(config.get("architecture", SEGMENTOR_ARCHITECTURE)),
        model_args={"num_classes": segmentor.get("num_classes")},
        pretrained_cfg=dict(config.get("pretrained_cfg") or {}),
        class_names=config.get("label_names"),
        training=config.get("training"),
        segmentor=segmentor,
    )


def _read_legacy_segmentation(folder: Path, path: Path) -> RunInfo:
    """A seg-train folder from before ``config.json``: ``last.pth`` holds the segmentor and training settings."""
    from replknet.checkpoint import CheckpointError, read_checkpoint

    checkpoint_path = path if path.is_file() else folder / SEG_CHECKPOINT_NAME
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"no {SEG_CHECKPOINT_NAME} in the seg-train folder {folder}")
    state = read_checkpoint(checkpoint_path)
    if "segmentor" not in state or "model" not in state:
        raise CheckpointError(
            f"{checkpoint_path} is not a seg-train checkpoint (needs 'segmentor' and 'model' entries)"
        )
    training = dict(state.get("train_config") or {})
    segmentor = dict(state["segmentor"])
    dataset = training.get("dataset", "synthetic")
    return RunInfo(
        folder=folder,
        weights=checkpoint_path,
        task="segmentation",
        architecture=SEGMENTOR_ARCHITECTURE,
        model_args={"num_classes": segmentor.get("num_classes")},
        pretrained_cfg=segmentation_preprocessing(dataset, training.get("image_size")),
        class_names=None,
        training=training or None,
        segmentor=segmentor,
        legacy=True,
    )


def build_segmentor(run: RunInfo):
    """The segmentor of a segmentation run, with its weights (``model.safetensors``, or ``last.pth``'s ``model``)."""
    from replknet.checkpoint import CheckpointError, check_state_dict, read_checkpoint
    from replknet.seg.model import RepLKNetUperNet, SegmentorConfig

    if run.task != "segmentation" or run.segmentor is None:
        raise ValueError(f"{run.folder} is a {run.task} run, not a segmentation one")
    model = RepLKNetUperNet(SegmentorConfig.from_dict(run.segmentor))
    state = read_checkpoint(run.weights)
    if isinstance(state.get("model"), dict):  # a seg-train checkpoint (last.pth)
        state = state["model"]
    try:
        check_state_dict(model, state)
    except CheckpointError as error:
        raise CheckpointError(f"{run.weights}: {error}") from None
    model.load_state_dict(state)
    return model.eval()
