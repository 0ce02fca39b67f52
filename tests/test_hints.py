"""Hints that work: what to install names a command that works from a checkout (mnist-edge is not on PyPI),
`models` lists the architectures without torch and names notebooks by a human title, and a model file that is
not ONNX (a checkpoint, TorchScript, TFLite, an image) is told as what it is, with the next step."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from conftest import ROOT
from mnist_edge.train.catalog import NOTEBOOK_TITLES, describe_models
from mnist_edge.errors import MnistEdgeError, install_hint
from mnist_edge.edge.runtime import OnnxModel

SAMPLE = ROOT / "src" / "mnist_edge" / "samples" / "mnist-0.png"


def _without(tmp_path, module: str) -> dict:
    """An environment where importing MODULE fails as a missing package does."""
    (tmp_path / module).mkdir()
    stub = f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n"
    (tmp_path / module / "__init__.py").write_text(stub)
    return {"PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "PATH": "/usr/bin:/bin"}


def _mnist_edge(*args: str, env: dict | None = None, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_edge", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def test_the_install_hint_names_this_checkout(tmp_path, monkeypatch):
    from mnist_edge.train.data import checkout

    if checkout() is None:  # an installed wheel (CI's lowest-versions run): no checkout to name
        assert install_hint("train") == "pip install '.[train]' in a checkout of mnist-edge"
        return
    monkeypatch.chdir(tmp_path)
    assert install_hint("train") == f"pip install -e '{ROOT}[train]'"
    monkeypatch.chdir(ROOT)
    assert install_hint("serve") == "pip install -e '.[serve]'"
    assert "mnist-edge[" not in install_hint("train")


def test_a_command_that_needs_torch_says_how_to_install_it(tmp_path):
    done = _mnist_edge("train", "--arch", "tiny", env=_without(tmp_path, "torch"), cwd=tmp_path)
    assert done.returncode == 1 and done.stderr == f"error: this command needs torch: pip install -e '{ROOT}[train]'\n"


def test_models_runs_without_torch(tmp_path):
    env = _without(tmp_path, "torch")
    table = _mnist_edge("models", env=env)
    assert table.returncode == 0, table.stderr
    assert "004: tiny CNN <20k params" in table.stdout and "004_fa5cafab2b41519e" not in table.stdout
    assert "12,364" in table.stdout and "98.88%" in table.stdout
    rows = json.loads(_mnist_edge("models", "--json", env=env).stdout)
    assert [r["name"] for r in rows] == [r["name"] for r in describe_models()] and len(rows) == 7


def test_every_notebook_has_a_title():
    assert {r["notebook"] for r in describe_models()} <= set(NOTEBOOK_TITLES)
    assert all(r["notebook_title"] == NOTEBOOK_TITLES[r["notebook"]] for r in describe_models())


@pytest.mark.torch
def test_the_catalog_file_is_what_the_registry_computes():
    from mnist_edge.train.catalog import catalog_text, compute_models

    computed = json.loads(catalog_text(compute_models()))  # through JSON: tuples become lists, as in the file
    assert describe_models() == computed, "the registry changed: run `python -m mnist_edge.train.catalog`"


def _files(tmp_path):
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=2))  # torch.save's old format
    (tmp_path / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    return {
        ROOT / "exported" / "tiny.pt": "a PyTorch checkpoint, not an ONNX model: export it first (mnist-edge export ",
        ROOT / "exported" / "tiny.torchscript.pt": "a TorchScript file, not an ONNX model",
        tmp_path / "legacy.pt": "a PyTorch checkpoint (or another pickle), not an ONNX model: export it first",
        tmp_path / "model.tflite": "a TensorFlow Lite model: mnist-edge runs ONNX files",
        tmp_path / "model.h5": "an HDF5 (Keras) file",
        SAMPLE: "an image, not a model",
    }


def test_a_model_file_that_is_not_onnx_is_told_as_what_it_is(tmp_path):
    for path, said in _files(tmp_path).items():
        with pytest.raises(MnistEdgeError) as caught:
            OnnxModel(path)
        assert str(caught.value).startswith(f"{path}: {said}") and "Protobuf" not in str(caught.value)


def test_predict_with_a_checkpoint_says_export_it_first():
    done = _mnist_edge("predict", "--model", "exported/tiny.pt", str(SAMPLE))
    assert done.returncode == 1
    assert done.stderr == ("error: exported/tiny.pt: a PyTorch checkpoint, not an ONNX model: export it first "
                           "(mnist-edge export exported/tiny.pt)\n")
