"""What ships: the exported ONNX files (portable format, their own accuracy), and the declared dependency floors.

Torch-free: this module runs in CI's lowest-versions environment too, against the installed package.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_edge.train.data import load_mnist
from mnist_edge.edge.manifest import default_model_path, read_manifest
from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.spec import INPUT_SHAPE
from repo_tools import tool

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "mnist_edge" / "samples"
SHIPPED = default_model_path().parent  # what this install predicts with: the wheel's copy, or the checkout's exported/
SHIPPED_ONNX = sorted(a["file"] for a in read_manifest(SHIPPED)["artifacts"] if a["format"] == "onnx")


def _predict(*args: str) -> list[dict]:
    # A whole process, as a user runs it: catches a CLI that exits 0 without predicting (typer/click mismatches).
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_edge", "predict", "--json", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("model", [None, *SHIPPED_ONNX])
def test_shipped_models_read_the_sample_digits(model: str | None) -> None:
    rows = _predict(str(SAMPLES), *([] if model is None else ["--model", str(SHIPPED / model)]))
    expected = {p.name: int(re.search(r"(\d)\.png$", p.name).group(1)) for p in SAMPLES.glob("*.png")}
    assert len(expected) >= 5
    assert {Path(r["file"]).name: int(r["digit"]) for r in rows} == expected


@pytest.mark.parametrize("file", SHIPPED_ONNX)
def test_each_shipped_file_states_its_own_measured_accuracy(file: str, mnist_dir: Path) -> None:
    mnist = load_mnist(mnist_dir)
    model = OnnxModel(SHIPPED / file)
    pixels = (mnist.test_images.astype(np.float32) / 255).reshape(-1, *INPUT_SHAPE)
    accuracy = 100 * float((model.run(pixels).argmax(1) == mnist.test_labels).mean())
    entry = next(a for a in read_manifest(SHIPPED)["artifacts"] if a["file"] == file)
    assert model.metadata["test_accuracy"] == f"{accuracy:.2f}"
    assert entry["test_accuracy"] == pytest.approx(accuracy, abs=0.005)


@pytest.mark.torch
def test_shipped_onnx_files_are_in_the_chosen_format_and_import_only_opsets_they_use() -> None:
    onnx = pytest.importorskip("onnx")
    from mnist_edge.export.onnx_writer import IR_VERSION, OPSET

    for file in SHIPPED_ONNX:
        proto = onnx.load(SHIPPED / file)
        onnx.checker.check_model(proto, full_check=True)
        assert proto.ir_version == IR_VERSION, file
        # The int8 file once declared eight unused domains (ai.onnx.ml, training, preview, ...).
        assert {o.domain: o.version for o in proto.opset_import} == {"": OPSET}, file
        assert {n.domain for n in proto.graph.node} <= {""}, file


@pytest.mark.torch
def test_unused_opset_imports_are_pruned_and_used_ones_kept_even_inside_subgraphs() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from mnist_edge.export.quantize import without_unused_opsets

    def branch(op: str, domain: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], f"{op}_branch", [], [out])

    node = helper.make_node(
        "If", ["c"], ["y"], then_branch=branch("Gelu", "com.microsoft"), else_branch=branch("Relu", "")
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, None) for n, t in (("c", TensorProto.BOOL), ("x", TensorProto.FLOAT))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    imports = [("", 19), ("com.microsoft", 1), ("ai.onnx.ml", 5), ("ai.onnx.training", 1), ("ai.onnx.preview", 1)]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports])
    assert {o.domain for o in without_unused_opsets(model).opset_import} == {"", "com.microsoft"}


def _lower_bounds():
    pytest.importorskip("tomllib")  # Python 3.11+
    return tool("lower_bounds")


def test_the_floors_file_is_what_pyproject_declares() -> None:
    lower_bounds = _lower_bounds()
    assert (ROOT / "constraints" / "floors.txt").read_text() == lower_bounds.render(lower_bounds.read_project())


def test_lower_bounds_reads_each_requirement_floor_and_refuses_one_without() -> None:
    lower_bounds = _lower_bounds()
    assert lower_bounds.lower_bound("onnxruntime>=1.18.1,!=1.21.0") == ("onnxruntime", "1.18.1")
    assert lower_bounds.lower_bound("Typer_Slim[all] <0.29, >= 0.13.0 ; python_version>'3'") == ("typer-slim", "0.13.0")
    with pytest.raises(ValueError, match="lower bound"):
        lower_bounds.lower_bound("typer<0.29")
    pins = lower_bounds.render({"dependencies": ["b>=2", "a==1.0"]}).splitlines()
    assert [p for p in pins if not p.startswith("#")] == ["a==1.0", "b==2"]


def test_the_runtimes_tool_compares_with_onnx_runtime_and_says_why_a_runtime_fails() -> None:
    runtimes = tool("runtimes")
    path = SHIPPED / SHIPPED_ONNX[0]
    images = np.random.default_rng(0).random((40, *INPUT_SHAPE), dtype=np.float32)
    reference = runtimes.run_all(runtimes.onnxruntime_runner(path), images)
    labels = reference.argmax(1)
    assert runtimes.measure(runtimes.onnxruntime_runner, path, images, labels, reference)[1:] == [
        "0.0e+00", "100.00%", "100.00%", "40",
    ]

    def shifted(file: Path):  # a runtime whose logits are off by 0.5 and whose top-1 differs on every digit
        run = runtimes.onnxruntime_runner(file)
        return lambda x: np.roll(run(x), 1, axis=1) + 0.5

    _, diff, agreement, accuracy, _ = runtimes.measure(shifted, path, images, labels, reference)
    assert float(diff) > 0.5 and agreement == accuracy == "0.00%"

    def broken(file: Path):
        raise RuntimeError("OpenCV(5.0.0) /io/opencv/modules/dnn/src/layer.cpp:3: error: bad input\nmore")

    assert (
        runtimes.measure(broken, path, images, labels, reference)[0]
        == "fails: OpenCV(5.0.0) layer.cpp:3: error: bad input"
    )
