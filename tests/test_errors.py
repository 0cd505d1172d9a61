"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import pytest
import torch

import replknet
from replknet.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def tiny():
    return replknet.create_model("replknet_tiny", num_classes=10).eval()


def test_wrong_channel_count(tiny):
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        tiny(torch.randn(1, 1, 64, 64))


def test_input_too_small_for_stride_32(tiny):
    with pytest.raises(ValueError, match="too small.*32"):
        tiny(torch.randn(1, 3, 16, 64))


def test_wrong_rank(tiny):
    with pytest.raises(ValueError, match="4-D input"):
        tiny(torch.randn(3, 64, 64))


def test_unknown_model_lists_ours():
    with pytest.raises(ValueError, match="unknown model 'replknet_99x'; did you mean 'replknet_xl'"):
        replknet.create_model("replknet_99x")


def test_missing_unexpected_and_misshaped_keys_are_named(tiny, tmp_path):
    state_dict = dict(tiny.state_dict())
    del state_dict["stem.0.conv.weight"]
    state_dict["stages.9.extra"] = torch.zeros(1)
    state_dict["head.weight"] = torch.zeros(5, 128)
    path = tmp_path / "bad.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError) as info:
        replknet.load_checkpoint(tiny, path)
    message = str(info.value)
    assert "missing keys: stem.0.conv.weight" in message
    assert "unexpected keys: stages.9.extra" in message
    assert "head.weight: checkpoint (5, 128) vs model (10, 128)" in message
    assert str(path) in message


def test_deploy_checkpoint_into_training_form_says_how_to_fix(tiny, tmp_path):
    path = tmp_path / "fused.pth"
    torch.save(replknet.reparameterize(tiny).state_dict(), path)
    with pytest.raises(CheckpointError, match="small_kernel_merged=True"):
        replknet.load_checkpoint(replknet.create_model("replknet_tiny", num_classes=10), path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        replknet.read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        replknet.read_checkpoint(tmp_path / "nope.pth")


class Payload:
    """An arbitrary class: unpickling it would run code, so weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        replknet.read_checkpoint(path)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    replknet.save_state_dict({"a": torch.ones(2)}, path)
    import safetensors.torch

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        replknet.save_state_dict({"a": torch.zeros(2)}, path)
    # the previous file is intact and no temporary file is left behind
    assert replknet.read_checkpoint(path)["a"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_dwconv_argument_errors():
    from replknet.ops import dwconv2d

    with pytest.raises(ValueError, match="odd kernel"):
        dwconv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 1, K, K\)"):
        dwconv2d(torch.randn(1, 2, 8, 8), torch.randn(3, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown depthwise conv impl"):
        dwconv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 1, 3, 3), impl="nope")


def test_use_ema_picks_the_ema_weights(tmp_path):
    plain = {"w": torch.zeros(2)}
    ema = {"w": torch.ones(2)}
    path = tmp_path / "train.pth"
    torch.save({"model": plain, "model_ema": ema, "epoch": 3}, path)
    from replknet.checkpoint import unwrap_state_dict

    checkpoint = replknet.read_checkpoint(path)
    assert unwrap_state_dict(checkpoint)["w"].tolist() == [0.0, 0.0]
    assert unwrap_state_dict(checkpoint, use_ema=True)["w"].tolist() == [1.0, 1.0]
    with pytest.raises(CheckpointError, match="no 'model_ema'"):
        unwrap_state_dict({"model": plain}, use_ema=True)
