import dataclasses
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, strategies as st

from mnist_edge.train import distributed
from mnist_edge.train.recipes import Recipe
from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.errors import MnistEdgeError
from mnist_edge.train.loop import TrainConfig, steps_per_epoch, train


@given(
    n=st.integers(1, 300), batch=st.integers(1, 64), world_size=st.integers(1, 5), seed=st.integers(0, 2**16),
    least=st.integers(1, 2),
)
def test_ranks_cover_every_image_of_an_epoch_exactly_once(n, batch, world_size, seed, least):
    # LEAST: the images per rank a step needs (2 for a network with BatchNorm over a 1x1 map, see min_train_batch)
    recipe = Recipe(optimizer="sgd", lr=0.1, batch_size=batch, epochs=1)
    if batch < world_size * least:
        with pytest.raises(MnistEdgeError, match="leaves some of the|too small"):
            steps_per_epoch(n, recipe, world_size, least)
        return
    steps = steps_per_epoch(n, recipe, world_size, least)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    taken = []
    for step in range(steps):
        batch_rows = perm[step * batch : (step + 1) * batch]
        shares = [distributed.shard(batch_rows, distributed.World(rank, world_size)) for rank in range(world_size)]
        # no rank idles (DDP needs every rank to step) or gets too few
        assert all(len(share) >= least for share in shares)
        taken += [i for share in shares for i in share.tolist()]
    assert len(taken) == len(set(taken))  # disjoint
    dropped = n - len(taken)  # only a last batch too small for every rank to get its images
    assert set(taken) <= set(perm.tolist()) and dropped == (n % batch if 0 < n % batch < world_size * least else 0)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_cpu_processes_train_what_one_process_trains(mnist_dir, tmp_path):
    out = tmp_path / "ckpt" / "basic.pt"
    flags = [
        "--arch", "basic", "--recipe", "notebook", "--limit", "520", "--epochs", "1", "--batch-size", "32", "--lr",
        "0.05", "--device", "cpu",
    ]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mnist_edge",
        "train", *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share the test machine's cores
    run = subprocess.run(
        [*cmd, "--data-dir", str(mnist_dir), "--out", str(out)], capture_output=True, text=True, env=env, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("epoch 1/1: train loss") == 1 and "2 processes" in run.stdout  # rank 0 alone reports
    assert [p.name for p in out.parent.iterdir()] == ["basic.pt"]  # one checkpoint, no temp files left behind
    two = load_checkpoint(out)
    assert two.meta["world_size"] == 2 and two.meta["epochs_done"] == 1
    assert len(two.training["rng"]) == 2  # each rank's dropout RNG, for --resume
    assert two.meta["history"][0]["images"] == 520  # the ranks' shares add up to the epoch, no image twice

    # `basic` has no dropout or BatchNorm: two ranks' averaged gradients are the one-process gradient (even for
    # the last batch of 8, split 4/4), so the weights agree up to the order of float additions.
    one_path = tmp_path / "one.pt"
    config = TrainConfig(
        arch="basic",
        recipe="notebook",
        limit=520,
        epochs=1,
        batch_size=32,
        lr=0.05,
        device="cpu",
        threads=1,
        progress=False,
    )
    train(dataclasses.replace(config, data_dir=mnist_dir, out=one_path), log=lambda _line: None)
    one = load_checkpoint(one_path)
    for name, weight in one.model.state_dict().items():
        torch.testing.assert_close(two.model.state_dict()[name], weight, rtol=1e-4, atol=1e-5)
    assert abs(two.meta["history"][0]["train_loss"] - one.meta["history"][0]["train_loss"]) < 1e-4

