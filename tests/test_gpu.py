"""The CUDA path end to end: train, resume, and export a CUDA-trained checkpoint through the parity gate.

Run on a machine with an NVIDIA GPU: `pytest -m gpu`. Elsewhere every test here skips, saying why.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from checkpoints import same_weights, train_quietly
from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.cli.commands import app

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device: the gpu tests need an NVIDIA GPU (pytest -m gpu on one)"
    ),
]
QUICK = dict(arch="tiny", recipe="annealed", limit=1024, batch_size=64, device="cuda", progress=False)


@pytest.fixture(scope="module")
def cuda_trained(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "tiny.pt"
    result = train_quietly(epochs=2, data_dir=mnist_dir, out=out, **QUICK)
    return result, out


def test_a_short_cuda_run_learns_and_loads_on_the_cpu(cuda_trained):
    result, out = cuda_trained
    assert result.epochs_done == 2 and result.test_accuracy > 20  # chance is 10%
    checkpoint = load_checkpoint(out)
    assert checkpoint.meta["device"].startswith("cuda") and len(checkpoint.training["cuda_rng"]) == 1
    assert all(t.device.type == "cpu" for t in checkpoint.model.state_dict().values())


def test_a_cuda_run_resumes_exactly(cuda_trained, mnist_dir, tmp_path):
    _, straight = cuda_trained
    out = tmp_path / "resumed.pt"
    train_quietly(epochs=1, data_dir=mnist_dir, out=out, **QUICK)
    train_quietly(resume=out, epochs=2, data_dir=mnist_dir, device="cuda", progress=False)
    assert same_weights(straight, out)  # cuDNN's deterministic algorithms: the same seed, the same run


def test_a_cuda_checkpoint_resumes_on_the_cpu(cuda_trained, mnist_dir, tmp_path):
    _, straight = cuda_trained
    out = tmp_path / "cpu.pt"
    train_quietly(epochs=1, data_dir=mnist_dir, out=out, **QUICK)
    result = train_quietly(resume=out, epochs=2, data_dir=mnist_dir, device="cpu", threads=1, progress=False)
    assert result.epochs_done == 2 and load_checkpoint(out).meta["device"] == "cpu"


def test_a_cuda_trained_checkpoint_exports_through_the_parity_gate(cuda_trained, mnist_dir, tmp_path):
    _, out = cuda_trained
    args = [
        "export", str(out), "--format", "onnx", "--out", str(tmp_path / "exported"), "--limit", "512", "--data-dir",
        str(mnist_dir),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exported" / "tiny.onnx").is_file() and "ok" in result.output
