import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mnist_edge.edge import manifest, runtime
from mnist_edge.architectures import create_model
from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.manifest import default_model_path
from mnist_edge.edge.runtime import OnnxModel
from onnx_models import export_arch, export_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[nn.Module, Path]:
    return export_arch("tiny", tmp_path_factory.mktemp("models") / "tiny.onnx")


def test_run_matches_torch_for_any_batch_size(tiny):
    model, path = tiny
    onnx_model = OnnxModel(path, threads=1)
    for n in (1, 7):
        images = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(images)).numpy()
        logits = onnx_model.run(images)
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_batch_split_across_threads_gives_the_same_logits_in_order(tiny):
    _, path = tiny
    images = np.random.default_rng(0).random((3 * runtime.MIN_CHUNK + 5, 1, 28, 28), dtype=np.float32)
    whole = OnnxModel(path, threads=1)
    split = OnnxModel(path, threads=3)
    np.testing.assert_allclose(split.run(images), whole.run(images), rtol=0, atol=1e-6)
    assert split._pool is not None and whole._pool is None  # the split really ran, on 3 chunks
    few = OnnxModel(path, threads=3)
    few.run(images[: 2 * runtime.MIN_CHUNK - 1])  # too few images for two chunks: one run, no threads
    assert few._pool is None


def test_metadata_props_are_exposed(tiny, tmp_path):
    proto = onnx.load(str(tiny[1]))
    onnx.helper.set_model_props(proto, {"arch": "tiny", "test_accuracy": "99.1"})
    onnx.save(proto, str(tmp_path / "meta.onnx"))
    assert OnnxModel(tmp_path / "meta.onnx").metadata == {"arch": "tiny", "test_accuracy": "99.1"}


def test_wrong_image_shape_is_a_user_error(tiny):
    with pytest.raises(MnistEdgeError, match=r"expected \[N,1,28,28\]"):
        OnnxModel(tiny[1]).run(np.zeros((2, 28, 28), np.float32))


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", b"\x08\x07" + bytes(range(256))])
def test_a_file_that_is_not_onnx_gives_one_line(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(MnistEdgeError, match="not a usable ONNX model") as err:
        OnnxModel(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_model_file(tmp_path):
    with pytest.raises(MnistEdgeError, match="no such model file"):
        OnnxModel(tmp_path / "nope.onnx")


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b).flatten(1)[:, :10]


class FiveClasses(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


@pytest.mark.parametrize(
    "module, kwargs, problem",
    [
        (None, {"input_names": ("x",)}, "input is 'x'"),
        (None, {"dynamic_batch": False}, "input is 'image' tensor(float) [2,1,28,28]"),
        (None, {"output_names": ("scores",)}, "output is 'scores'"),
        (FiveClasses(), {}, "output is 'logits' tensor(float) [N,5]"),
        (TwoInputs(), {"input_names": ("image", "mask")}, "found 2 inputs"),
        (None, {"input_shape": (2, 1, 32, 32)}, "[N,1,32,32]"),
    ],
)
def test_wrong_interface_names_the_file_and_the_problem(tmp_path, module, kwargs, problem):
    path = export_model(module or create_model("tiny"), tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(MnistEdgeError) as err:
        OnnxModel(path)
    message = str(err.value)
    assert message.startswith(f"{path}: wrong model interface") and problem in message


def test_default_model_comes_from_the_manifest(tmp_path, monkeypatch):
    wheel_dir, checkout_dir = tmp_path / "wheel", tmp_path / "checkout"
    monkeypatch.setattr(manifest, "SHIPPED_DIRS", (wheel_dir, checkout_dir))
    with pytest.raises(MnistEdgeError, match="no model is shipped"):
        default_model_path()
    checkout_dir.mkdir()
    (checkout_dir / "manifest.json").write_text(json.dumps({"default": "tiny.onnx", "artifacts": []}))
    assert default_model_path() == checkout_dir / "tiny.onnx"
    wheel_dir.mkdir()  # the copy inside an installed package wins over a checkout
    (wheel_dir / "manifest.json").write_text(json.dumps({"default": "tiny.int8.onnx", "artifacts": []}))
    assert default_model_path() == wheel_dir / "tiny.int8.onnx"


@pytest.mark.parametrize("text", ['{"default": null, "artifacts": []}', "{broken", "[]"])
def test_bad_manifest_is_a_clear_error(tmp_path, monkeypatch, text):
    monkeypatch.setattr(manifest, "SHIPPED_DIRS", (tmp_path,))
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(MnistEdgeError, match="manifest.json: .*pass --model FILE"):
        default_model_path()
