"""Model specs on the command line: ``NAME``, ``NAME=CHECKPOINT``, a run folder, or ``--checkpoint RUN``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """One model a command compares: a registered or timm name, and the checkpoint to load (None: random init)."""

    name: str | None
    checkpoint: str | None

    @property
    def label(self) -> str:
        """``NAME``, or ``NAME@CHECKPOINT-STEM`` (a run folder's model named from its config)."""
        if self.checkpoint is None:
            return str(self.name)
        path = Path(self.checkpoint)
        stem = path.name if path.is_dir() else path.stem
        name = self.name
        if name is None and path.exists():
            from replknet.deploy.loading import weights_architecture
            from replknet.runs import read_run

            run = read_run(path)
            name = run.architecture if run is not None else weights_architecture(path)
        return f"{name}@{stem}" if name else stem


def parse_model_spec(spec: str) -> ModelSpec:
    """``NAME``, ``NAME=CHECKPOINT``, or the path of a run folder (or of a weights file inside one)."""
    name, sep, checkpoint = spec.partition("=")
    if sep:
        if not name:
            raise ValueError(f"model spec {spec!r} has no model name (expected NAME, NAME=CHECKPOINT or a run folder)")
        if not checkpoint:
            raise ValueError(f"model spec {spec!r} has an empty checkpoint path (expected NAME=CHECKPOINT)")
        return ModelSpec(name, checkpoint)
    if "/" in spec or Path(spec).exists():
        return ModelSpec(None, spec)  # a path: a run folder or a file that names its model
    return ModelSpec(spec, None)


def model_specs(specs: list[str], checkpoint: str | None, defaults: tuple[str, ...] = ()) -> list[ModelSpec]:
    """The specs of a command's MODEL arguments and ``--checkpoint`` (which goes with zero or one MODEL)."""
    parsed = [parse_model_spec(spec) for spec in specs]
    if checkpoint is not None:
        if len(parsed) > 1:
            raise ValueError("--checkpoint goes with one MODEL at most; for several, write each as NAME=CHECKPOINT")
        if parsed and parsed[0].checkpoint is not None:
            raise ValueError(
                f"model {specs[0]!r} has its checkpoint already; give it once (NAME=CHECKPOINT or --checkpoint)"
            )
        parsed = [ModelSpec(parsed[0].name if parsed else None, checkpoint)]
    if not parsed:
        parsed = [ModelSpec(name, None) for name in defaults]
    for spec in parsed:
        if spec.checkpoint is not None and not Path(spec.checkpoint).exists():
            raise FileNotFoundError(f"checkpoint not found: {spec.checkpoint}")
        if spec.name is not None:
            check_model_name(spec.name)
    return parsed


def check_model_name(name: str) -> None:
    """Refuse a name that neither replknet nor timm registers, naming close ones (before any work)."""
    import timm

    from replknet.models._registry import UnknownModelError, unknown_model_message

    if name.split(".")[0] not in timm.list_models():
        raise UnknownModelError(unknown_model_message(name))


def unique_labels(specs: list[ModelSpec]) -> list[str]:
    """Labels for a table: the spec's, numbered where two are the same."""
    labels: list[str] = []
    for spec in specs:
        label, base, index = spec.label, spec.label, 2
        while label in labels:
            label, index = f"{base}-{index}", index + 1
        labels.append(label)
    return labels


def build_model(spec: ModelSpec, **kwargs):
    """The model of ``spec``: its checkpoint loaded (a run folder brings its own config), or random weights."""
    import replknet
    from replknet.deploy import load_model

    if spec.checkpoint is not None:
        return load_model(spec.checkpoint, spec.name, **kwargs)
    return replknet.create_model(spec.name, **kwargs)
