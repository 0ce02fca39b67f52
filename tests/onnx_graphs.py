"""ONNX files with the right interface (image [N,1,28,28] -> logits [N,10]) that misbehave at run time or are
refused by ONNX Runtime, built with onnx's helper API: no torch needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mnist_edge.spec import INPUT_NAME, OUTPUT_NAME


def interface_model(
    path: Path, nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray] | None = None,
    opset: int = 18, ir_version: int | None = None,
) -> Path:
    """NODES from INPUT_NAME to OUTPUT_NAME, declared as the interface every exported model has."""
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, 28, 28])
    logits = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 10])
    initializers = [numpy_helper.from_array(np.asarray(v), name) for name, v in (constants or {}).items()]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [image], [logits], initializers), opset_imports=[helper.make_opsetid("", opset)]
    )
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


def pixels_model(
    path: Path, columns: list[int], then: Sequence[onnx.NodeProto] = (), constants: dict[str, np.ndarray] | None = None,
    **kwargs: Any,
) -> Path:
    """Logits = the flattened image's pixels at COLUMNS (then THEN's nodes, from 'picked' to the logits)."""
    nodes = [
        helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
        helper.make_node("Gather", ["flat", "columns"], ["picked" if then else OUTPUT_NAME], axis=1),
        *then,
    ]
    return interface_model(path, nodes, {"columns": np.asarray(columns, np.int64), **(constants or {})}, **kwargs)


def out_of_range_gather(path: Path) -> Path:
    return pixels_model(path, list(range(995, 1005)))  # 784 pixels: fails on every run


def bad_reshape(path: Path) -> Path:
    return interface_model(path, [helper.make_node("Reshape", [INPUT_NAME, "shape"], [OUTPUT_NAME])],
                           {"shape": np.array([3, 10], np.int64)})


def twice_the_rows(path: Path) -> Path:
    """Runs, but returns [2N,10]: 20 pixels per image reshaped to rows of 10."""
    reshape = helper.make_node("Reshape", ["picked", "shape"], [OUTPUT_NAME])
    return pixels_model(path, list(range(20)), [reshape], constants={"shape": np.array([-1, 10], np.int64)})


def log_of_first_pixels(path: Path) -> Path:
    """Logits = log of the first 10 pixels: -inf for an image whose top row starts black."""
    return pixels_model(path, list(range(10)), [helper.make_node("Log", ["picked"], [OUTPUT_NAME])])


def endless(path: Path) -> Path:
    """Runs for hours: a Loop of 10^12 additions, whose result is added to the first 10 pixels."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1]),
        ],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    loop = helper.make_node("Loop", ["trips", "cond", "x0"], ["x"], body=body)
    constants = {"trips": np.array(10**12, np.int64), "cond": np.array(True), "x0": np.zeros(1, np.float32)}
    return pixels_model(
        path, list(range(10)), [loop, helper.make_node("Add", ["picked", "x"], [OUTPUT_NAME])], constants
    )


def external_weights(path: Path, location: str) -> Path:
    """Ten weights added to the first 10 pixels, stored as external data at LOCATION (as written in the file)."""
    weights = numpy_helper.from_array(np.zeros(10, np.float32), "weights")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "40")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    model = onnx.load_from_string(
        pixels_model(
            path, list(range(10)), [helper.make_node("Add", ["picked", "weights"], [OUTPUT_NAME])]
        ).read_bytes()
    )
    model.graph.initializer.append(weights)
    path.write_bytes(model.SerializeToString())  # onnx.save would try to read the external data
    return path


def huge_constant(path: Path) -> Path:
    """Asks for a 2^50-element tensor at run time (ConstantOfShape), summed into every logit."""
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
        ),
        helper.make_node("ReduceSum", ["big"], ["sum"], keepdims=0),
        helper.make_node("Add", ["picked", "sum"], [OUTPUT_NAME]),
    ]
    return pixels_model(
        path, list(range(10)), nodes, constants={"shape": np.array([1 << 20, 1 << 20, 1 << 10], np.int64)}
    )
