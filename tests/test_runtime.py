import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mnist_edge.edge import manifest, model_checks, runtime
from mnist_edge.train.architectures import create_model
from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.manifest import default_model_path
from mnist_edge.edge.runtime import OnnxModel
import onnx_graphs
from onnx_models import export_model


def test_run_matches_torch_for_any_batch_size(tiny_onnx):
    model, path = tiny_onnx
    onnx_model = OnnxModel(path, threads=1)
    for n in (1, 7):
        images = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(images)).numpy()
        logits = onnx_model.run(images)
        assert logits.shape == (n, 10)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_batch_split_across_threads_gives_the_same_logits_in_order(tiny_onnx):
    _, path = tiny_onnx
    images = np.random.default_rng(0).random((3 * runtime.MIN_CHUNK + 5, 1, 28, 28), dtype=np.float32)
    whole = OnnxModel(path, threads=1)
    split = OnnxModel(path, threads=3)
    np.testing.assert_allclose(split.run(images), whole.run(images), rtol=0, atol=1e-6)
    assert split._pool is not None and whole._pool is None  # the split really ran, on 3 chunks
    few = OnnxModel(path, threads=3)
    few.run(images[: 2 * runtime.MIN_CHUNK - 1])  # too few images for two chunks: one run, no threads
    assert few._pool is None


def test_metadata_props_are_exposed(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx[1]))
    onnx.helper.set_model_props(proto, {"arch": "tiny", "test_accuracy": "99.1"})
    onnx.save(proto, str(tmp_path / "meta.onnx"))
    assert OnnxModel(tmp_path / "meta.onnx").metadata == {"arch": "tiny", "test_accuracy": "99.1"}


def test_wrong_image_shape_is_a_user_error(tiny_onnx):
    with pytest.raises(MnistEdgeError, match=r"expected \[N,1,28,28\]"):
        OnnxModel(tiny_onnx[1]).run(np.zeros((2, 28, 28), np.float32))


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


def one_line_naming(message: str, path: Path) -> bool:
    return (
        message.startswith(f"{path}: ")
        and "\n" not in message
        and "ONNXRuntimeError" not in message
        and "onnxruntime_src" not in message
    )


@pytest.mark.parametrize(
    "build, cause",
    [
        (onnx_graphs.out_of_range_gather, "Gather node: indices element out of data bounds, idx=995"),
        (onnx_graphs.bad_reshape, "Reshape node: "),
        (onnx_graphs.twice_the_rows, "returned float32 [14, 10] for 7 images, expected float32 [7, 10]"),
    ],
)
@pytest.mark.parametrize("threads", [1, 3])
def test_a_model_that_fails_at_run_time_is_one_line_naming_the_file(tmp_path, build, cause, threads):
    path = build(tmp_path / "bad.onnx")
    model = OnnxModel(path, threads=threads)  # it loads: the interface is right
    images = np.zeros((7 if threads == 1 else 3 * runtime.MIN_CHUNK, 1, 28, 28), np.float32)
    with pytest.raises(MnistEdgeError) as err:
        model.run(images[:7] if threads == 1 else images)
    assert one_line_naming(str(err.value), path), err.value
    assert cause in str(err.value) if threads == 1 else "bad.onnx" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, cause",
    [
        ({"ir_version": 99}, "Unsupported model IR version: 99, max supported IR version:"),
        ({"opset": 99}, "Opset 99 is under development"),
    ],
)
def test_a_refused_model_says_why_not_where_in_onnx_runtime(tmp_path, kwargs, cause):
    path = onnx_graphs.pixels_model(tmp_path / "new.onnx", list(range(10)), **kwargs)
    with pytest.raises(MnistEdgeError) as err:
        OnnxModel(path)
    assert one_line_naming(str(err.value), path) and "not a usable ONNX model" in str(err.value)
    assert cause in str(err.value)


def test_an_unknown_op_is_named(tmp_path):
    from onnx import helper

    path = onnx_graphs.interface_model(tmp_path / "op.onnx", [helper.make_node("FooBar", ["image"], ["logits"])])
    with pytest.raises(MnistEdgeError, match="No Op registered for FooBar") as err:
        OnnxModel(path)
    assert one_line_naming(str(err.value), path)


def test_an_empty_batch_gives_no_logits(tiny_onnx):
    assert OnnxModel(tiny_onnx[1]).run(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)


def test_evaluate_and_verify_get_the_one_line_too(tmp_path, mnist_dir):
    from cli_runner import cli_runner
    from mnist_edge.cli.commands import app
    from mnist_edge.measure.evaluate import evaluate

    path = onnx_graphs.out_of_range_gather(tmp_path / "gather.onnx")
    with pytest.raises(MnistEdgeError, match="Gather node"):
        evaluate(OnnxModel(path).run, np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.int64))
    result = cli_runner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"error: {path}: the model fails in ONNX Runtime (Gather node")


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../../../etc/passwd", "link-out.bin"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, location):
    """ONNX Runtime reads external data itself: a model from a stranger must not read files beside it or elsewhere."""
    (tmp_path / "link-out.bin").symlink_to("/etc/passwd")
    model = onnx_graphs.external_weights(tmp_path / "model.onnx", location)
    with pytest.raises(MnistEdgeError, match=r"model\.onnx: not a usable ONNX model \(.*[Ee]xternal data"):
        runtime.OnnxModel(model)


def test_a_model_that_asks_for_a_huge_tensor_fails_its_run_in_one_line(tmp_path):
    model = runtime.OnnxModel(onnx_graphs.huge_constant(tmp_path / "huge.onnx"))
    with pytest.raises(MnistEdgeError, match="huge.onnx: the model fails in ONNX Runtime") as err:
        model.run(np.zeros((1, 1, 28, 28), np.float32))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", [None, "", "half", "nan", "inf", "-0.01", "1.0000001", "1.5"])
def test_a_threshold_that_is_no_number_in_0_1_is_refused(text):
    """Over 1 would never refuse, under 0 refuse everything: a file saying so is broken, not a model to run."""
    metadata = {} if text is None else {"not_digit_threshold": text}
    with pytest.raises(MnistEdgeError, match="m.onnx: has a 'not_digit' output but no usable 'not_digit_threshold'"):
        model_checks.not_digit_threshold(metadata, "m.onnx")


@pytest.mark.parametrize("text, value", [("0", 0.0), ("1", 1.0), ("0.4375", 0.4375)])
def test_a_threshold_in_0_1_is_read_as_it_is(text, value):
    assert model_checks.not_digit_threshold({"not_digit_threshold": text}, "m.onnx") == value


def test_a_model_file_over_the_size_limit_is_refused_before_onnx_runtime_reads_it(tmp_path):
    """ONNX Runtime reads a whole file into memory (about twice its size at the peak): a 600 MB model took
    1.2 GB before. A sparse file takes no disk."""
    with open(tmp_path / "fat.onnx", "wb") as f:
        f.truncate(model_checks.MAX_MODEL_BYTES + 1)
    with pytest.raises(MnistEdgeError, match=r"fat\.onnx: .* bytes is over the .*-byte limit"):
        runtime.OnnxModel(tmp_path / "fat.onnx")
