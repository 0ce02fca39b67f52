"""`export --format tflite`: litert-torch's conversion (fp32, PT2E static int8) behind the parity gate, a model
with a second output (the "not a digit" probability), and the manifest. Needs the [tflite] extra."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")

from cli_runner import cli_runner
from mnist_edge.cli.commands import app
from mnist_edge.edge.litert import LiteRTModel
from mnist_edge.export import tflite_writer
from mnist_edge.export.verify import FP32, ParityData, check_artifact, runtime_parity
from mnist_edge.spec import THRESHOLD_KEY

runner = cli_runner()


class TwoHeads(nn.Module):
    """A small model returning (logits [N,10], not_digit [N] in [0,1]), as the "not a digit" default will."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.logits = nn.Linear(8 * 13 * 13, 10)
        self.not_digit = nn.Linear(8 * 13 * 13, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.conv(x)).flatten(1)
        return self.logits(h), torch.sigmoid(self.not_digit(h)).squeeze(1)


@pytest.fixture(scope="module")
def two_heads_files(tmp_path_factory) -> dict[str, object]:
    model = TwoHeads().eval()
    folder = tmp_path_factory.mktemp("two-heads")
    calibration = np.random.default_rng(1).random((128, 1, 28, 28), dtype=np.float32)
    paths = {}
    for mode in ("none", "static"):
        paths[mode] = folder / f"two.{mode}.tflite"
        made = tflite_writer.flatbuffer(model, ["logits", "not_digit"], mode, calibration)
        tflite_writer.save(made, paths[mode], {"arch": "two", THRESHOLD_KEY: "0.5"})
        paths[f"{mode} twin"] = made.twin
    return {"model": model, **paths}


def _joined(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """MODEL's outputs as the parity gate compares them: logits, then not_digit as a column."""
    with torch.no_grad():
        logits, not_digit = model(torch.from_numpy(images))
    return torch.cat([logits, not_digit[:, None]], 1).numpy()


def test_a_second_output_travels_through_the_file_named_and_per_image(two_heads_files):
    model, fp32 = two_heads_files["model"], LiteRTModel(two_heads_files["none"])
    images = np.random.default_rng(2).random((70, 1, 28, 28), dtype=np.float32)
    logits, not_digit = fp32.outputs(images)
    with torch.no_grad():
        want_logits, want_not_digit = (t.numpy() for t in model(torch.from_numpy(images)))
    assert logits.shape == (70, 10) and not_digit.shape == (70,)
    np.testing.assert_allclose(logits, want_logits, atol=1e-4)
    np.testing.assert_allclose(not_digit, want_not_digit, atol=1e-4)
    np.testing.assert_array_equal(fp32.run(images), logits)
    assert json.loads(fp32.metadata["output_names"]) == ["logits", "not_digit"] and fp32.threshold == 0.5
    data = ParityData(images, None, "random pixels")
    assert check_artifact(two_heads_files["none"], _joined(model, images), data, FP32, "tflite", 0.5).passed


def test_the_int8_file_dequantizes_both_outputs(two_heads_files):
    int8 = LiteRTModel(two_heads_files["static"])
    logits, not_digit = int8.outputs(np.random.default_rng(3).random((5, 1, 28, 28), dtype=np.float32))
    assert logits.dtype == not_digit.dtype == np.float32
    assert not_digit.shape == (5,) and ((not_digit >= 0) & (not_digit <= 1.01)).all()


def test_the_int8_file_answers_as_onnx_runtime_running_the_same_int8_graph(two_heads_files):
    """The int8 file's ONNX twin (the same quantized graph) in ONNX Runtime gives the same answers as LiteRT; a twin of
    another model does not, and the gate says how."""
    assert two_heads_files["none twin"] is None  # fp32 files are held to PyTorch alone
    images = np.random.default_rng(5).random((300, 1, 28, 28), dtype=np.float32)
    data = ParityData(images, None, "random pixels")
    same = runtime_parity(two_heads_files["static"], two_heads_files["static twin"], data, 0.5)
    assert same.passed and same.agreement == same.refusal_agreement == 100.0 and same.max_abs_diff < 1e-4
    other = TwoHeads().eval()
    with torch.no_grad():
        other.logits.weight[3] += 0.05  # digit 3 wins more often: the runtimes now run different models
    calibration = np.random.default_rng(1).random((128, 1, 28, 28), dtype=np.float32)
    twin = tflite_writer.flatbuffer(other, ["logits", "not_digit"], "static", calibration).twin
    differs = runtime_parity(two_heads_files["static"], twin, data, 0.5)
    assert not differs.passed and differs.failures[0].startswith("max abs logit diff")


def test_the_gate_fails_a_second_output_that_differs(two_heads_files, tmp_path):
    """A file whose not_digit is off fails the gate even when its logits pass."""
    model = two_heads_files["model"]
    images = np.random.default_rng(4).random((20, 1, 28, 28), dtype=np.float32)
    other = TwoHeads().eval()
    with torch.no_grad():
        other.not_digit.bias += 1
    data = ParityData(images, None, "random pixels")
    failures = check_artifact(two_heads_files["none"], _joined(other, images), data, FP32, "tflite", 0.5).failures
    assert failures and failures[0].startswith("max abs logit diff")
    assert check_artifact(two_heads_files["none"], _joined(model, images), data, FP32, "tflite", 0.5).passed


def test_export_tflite_writes_both_files_gated_and_in_the_manifest(make_checkpoint, tmp_path, mnist_dir):
    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    args = ["export", str(checkpoint), "--out", str(out), "--limit", "200", "--format", "tflite",
            "--quantize", "static", "--quantize", "dynamic", "--min-agreement", "0", "--max-accuracy-drop", "100"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert tflite_writer.NOTHING_TO_QUANTIZE["dynamic"] in result.output  # no dynamic LiteRT file, said so
    entries = {a["file"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert set(entries) == {"tiny.tflite", "tiny.int8.tflite"}
    assert entries["tiny.tflite"]["parity"]["max_abs_diff"] < 1e-4
    assert LiteRTModel(out / "tiny.int8.tflite").metadata["quantization"] == "static"
    assert entries["tiny.int8.tflite"]["parity"]["runtime_agreement"] == 100.0  # LiteRT answers as ONNX Runtime
    assert entries["tiny.tflite"]["parity"]["runtime_agreement"] is None
    assert "test_accuracy" in LiteRTModel(out / "tiny.tflite").metadata


def test_a_tflite_file_that_fails_the_gate_is_not_written(make_checkpoint, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "tiny.pt", logit_scale=1e4)  # big logits: float32 rounding shows
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(out), "--limit", "50", "--format", "tflite",
                                 "--max-abs-diff", "0"])
    assert result.exit_code == 1
    assert "REFUSED: max abs logit diff" in result.output
    assert not out.exists() or not any(out.iterdir())
