import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from mnist_edge.checkpoint import load_checkpoint


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_cpu_processes_train_one_checkpoint(mnist_dir, tmp_path):
    out = tmp_path / "ckpt" / "basic.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "mnist_edge", "train", "--arch", "basic", "--limit", "512", "--epochs", "1",
        "--batch-size", "32", "--lr", "0.05", "--device", "cpu", "--data-dir", str(mnist_dir), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share the test machine's cores
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("epoch 1/1: train loss") == 1 and "2 processes" in run.stdout  # rank 0 alone reports
    assert [p.name for p in out.parent.iterdir()] == ["basic.pt"]  # one checkpoint, no temp files left behind
    checkpoint = load_checkpoint(out)
    assert checkpoint.meta["world_size"] == 2 and checkpoint.meta["epochs_done"] == 1
    assert checkpoint.meta["test_accuracy"] > 20  # chance is 10%
    assert len(checkpoint.training["rng"]) == 2  # each rank's dropout RNG, for --resume
