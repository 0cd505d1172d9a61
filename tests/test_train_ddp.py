"""Two-process DDP on CPU (gloo) through torchrun: the replicas stay bit-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from replknet.train import get_preset, train

    config = get_preset("demo", **json.loads(sys.argv[1]))
    result = train(config, progress=False, device="cpu")
    rank = int(os.environ["RANK"])
    summary = {"val": result.val, "val_fused": result.val_fused, "updates": result.num_updates,
               "losses": [r["train_loss"] for r in result.history]}
    torch.save(result.model.state_dict(), os.path.join(sys.argv[2], f"rank{rank}.pt"))
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as handle:
        json.dump(summary, handle)
    """
)


@pytest.mark.slow
def test_two_process_gloo_replicas_stay_in_sync(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    config = dict(
        model="replknet_tiny",
        image_size=32,
        synthetic_train_size=128,
        synthetic_val_size=30,
        batch_size=16,
        recipe_batch=64,  # 2 processes x 16 -> 2 accumulation steps (exercises no_sync)
        epochs=1,
        warmup_epochs=0,
        output=str(tmp_path / "run"),
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    completed = subprocess.run(
        [*command, json.dumps(config), str(tmp_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    import replknet

    torch.manual_seed(0)
    initial = replknet.create_model("replknet_tiny", num_classes=10).state_dict()
    for name, tensor in states[0].items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # BN statistics are per process between DDP's buffer broadcasts
        assert torch.equal(tensor, states[1][name]), f"replicas differ in {name}"
    changed = [n for n, t in states[0].items() if t.is_floating_point() and not torch.equal(t, initial[n])]
    assert len(changed) > 10  # the replicas moved, together
    assert summaries[0]["updates"] == summaries[1]["updates"] == 2  # 128 / (2 x 16 x 2 accumulation)
    # Validation counts are summed over both shards, so both processes report the same numbers.
    assert summaries[0]["val"] == summaries[1]["val"] and summaries[0]["val"]["images"] == 30
    assert summaries[0]["val_fused"]["top1"] == summaries[0]["val"]["top1"]
    assert (tmp_path / "run" / "model_fused.safetensors").is_file()
    assert summaries[0]["losses"] != summaries[1]["losses"]  # each process saw its own half of the data
