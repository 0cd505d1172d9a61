"""Reading and writing checkpoints safely: safetensors or ``torch.load(weights_only=True)``, never arbitrary pickle.

Handles the layouts RepLKNet weights come in: official (plain, wrapped in ``model``/``state_dict``/``model_ema``,
``module.``-prefixed), mmpretrain (``backbone.*``/``head.fc.*``), and this library's safetensors files.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

_logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the problem."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a ``.safetensors`` file or a torch checkpoint (``weights_only=True``) as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"cannot read safetensors checkpoint {path}: {error}") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot read checkpoint {path} (corrupt, truncated, or not a weights-only torch file): {error}"
        ) from error
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)


def unwrap_state_dict(checkpoint: Mapping, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Take the state dict out of a training checkpoint (``model``, ``state_dict`` or ``model_ema`` entry)."""
    if use_ema and not any(k in checkpoint for k in ("model_ema", "state_dict_ema")):
        raise CheckpointError("use_ema=True but the checkpoint has no 'model_ema' entry")
    order = ("model_ema", "state_dict_ema") if use_ema else WRAPPER_KEYS
    for key in order:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            if any(isinstance(v, torch.Tensor) for v in inner.values()) or any(
                isinstance(v, Mapping) for v in inner.values()
            ):
                # the EMA entry, once chosen, is unwrapped like any other state dict
                return unwrap_state_dict(inner, use_ema=False)
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {sorted(checkpoint)[:10]})")
    return tensors


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes=("module.", "_orig_mod.")) -> dict:
    """Remove DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def from_mmpretrain(state_dict: Mapping[str, torch.Tensor], has_top_norm: bool) -> dict:
    """mmpretrain's RepLKNet layout to the official one.

    ``backbone.X -> X``, ``head.fc.* -> head.*``; the classifier's final BN lives at ``backbone.stages.3.norm``
    in mmpretrain and at ``norm`` officially.
    """
    out = {}
    last_norm = None
    stage_norms = sorted({k.split(".")[2] for k in state_dict if k.startswith("backbone.stages.") and ".norm." in k})
    if stage_norms:
        last_norm = f"backbone.stages.{stage_norms[-1]}.norm."
    for key, value in state_dict.items():
        if key.startswith("head.fc."):
            out["head." + key[len("head.fc.") :]] = value
        elif has_top_norm and last_norm is not None and key.startswith(last_norm):
            out["norm." + key[len(last_norm) :]] = value
        elif key.startswith("backbone."):
            out[key[len("backbone.") :]] = value
        else:
            out[key] = value
    return out


def is_deploy_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a re-parameterised (fused) RepLKNet state dict."""
    return any(".lkb_reparam." in k for k in state_dict)


def convert_state_dict(checkpoint: Mapping, model: nn.Module | None = None, use_ema: bool = False) -> dict:
    """Any supported RepLKNet checkpoint layout to this library's (= official) key names.

    With ``model`` given: head and final-norm weights are dropped for a backbone-mode model (as the official
    segmentation code does when loading a classifier checkpoint).
    """
    state_dict = strip_prefixes(unwrap_state_dict(checkpoint, use_ema))
    model_keys = set(model.state_dict()) if model is not None else None
    if any(k.startswith("backbone.") for k in state_dict):
        has_top_norm = model_keys is None or any(k.startswith("norm.") for k in model_keys)
        state_dict = from_mmpretrain(state_dict, has_top_norm)
    if model_keys is not None:
        for prefix in ("head.", "norm."):
            if not any(k.startswith(prefix) for k in model_keys):
                dropped = [k for k in state_dict if k.startswith(prefix)]
                if dropped:
                    _logger.info("dropping %d %s* keys the model does not have", len(dropped), prefix)
                for k in dropped:
                    del state_dict[k]
    return state_dict


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` naming missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mis_shaped):
        return

    def _list(keys: list[str]) -> str:
        shown = ", ".join(keys[:8])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {_list(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_list(unexpected)}")
    if mis_shaped:
        parts.append(f"mis-shaped keys: {_list(mis_shaped)}")
    from replknet.models._registry import family_of

    family = family_of(model)
    is_deploy = family.is_deploy_state_dict if family is not None else is_deploy_state_dict
    deploy_arg = family.deploy_arg if family is not None and family.deploy_arg else "small_kernel_merged"
    hint = ""
    if is_deploy(state_dict) and not is_deploy(expected):
        hint = f" (the checkpoint is re-parameterised: build the model with {deploy_arg}=True)"
    elif is_deploy(expected) and not is_deploy(state_dict):
        hint = f" (the checkpoint is in training form: build the model without {deploy_arg}, then fuse)"
    raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts) + hint)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True, use_ema: bool = False) -> nn.Module:
    """Load a checkpoint file of any supported layout into ``model`` (in place) and return it."""
    state_dict = convert_state_dict(read_checkpoint(path), model, use_ema=use_ema)
    if strict:
        try:
            check_state_dict(model, state_dict)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
    model.load_state_dict(state_dict, strict=strict)
    return model


def _umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux ``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # the portable way: set and restore
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash or error never leaves a partial file at ``path`` (the previous file, if any, stays intact). Missing
    parent folders are created. The file gets the mode a plain ``open(path, "w")`` would give it
    (``0o666 & ~umask``), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # After writing: some writers (safetensors) replace the file they are given with a new 0600 one.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_write``)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (temporary file + rename)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None
) -> Path:
    """Write a state dict atomically (temp file + rename): safetensors for ``.safetensors``, else torch.save."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        meta = {k: str(v) for k, v in (metadata or {}).items()}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return atomic_torch_save(dict(state_dict), path)
