"""The LiteRT runtime (edge/litert.py) on the shipped .tflite files: torch-free, chosen by the file, and giving
what ONNX Runtime gives. Needs ai-edge-litert (the [litert] extra, also in [test])."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

pytest.importorskip("ai_edge_litert")

from mnist_edge.edge.litert import LiteRTModel
from mnist_edge.edge.models import open_model
from mnist_edge.errors import MnistEdgeError, install_hint

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
SAMPLES = ROOT / "src" / "mnist_edge" / "samples"
FP32, INT8 = EXPORTED / "edgenet.tflite", EXPORTED / "edgenet.int8.tflite"


def _digits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


@pytest.mark.parametrize("path", [FP32, INT8], ids=["fp32", "int8"])
def test_any_batch_size_gives_what_each_image_gives_alone(path):
    """Chunks of the batch_1 and batch_64 signatures, the last padded: sizes around both give per-image results,
    float32 [N,10] (the int8 file's outputs dequantized)."""
    model = LiteRTModel(path)
    images = _digits(130)
    alone = np.concatenate([model.run(images[i : i + 1]) for i in range(len(images))])
    for n in (0, 1, 2, 63, 64, 65, 130):
        logits = model.run(images[:n])
        assert logits.dtype == np.float32 and logits.shape == (n, 10)
        np.testing.assert_allclose(logits, alone[:n], atol=1e-5)


def test_the_files_agree_with_onnx_runtime_on_the_test_digits(mnist_dir):
    """fp32: ONNX Runtime's top-1 answer on all 10,000 test digits, logits within 1e-4. int8: at least as close to
    ONNX Runtime's fp32 answers as ONNX Runtime's own int8 file is (two int8 quantizers round differently)."""
    from mnist_edge.train.data import load_mnist
    from mnist_edge.edge.runtime import OnnxModel

    mnist = load_mnist(mnist_dir)
    images = (mnist.test_images.astype(np.float32) / 255)[:, None]
    reference = OnnxModel(EXPORTED / "edgenet.onnx").run(images)
    fp32 = LiteRTModel(FP32).run(images)
    assert (fp32.argmax(1) == reference.argmax(1)).all()
    assert np.abs(fp32 - reference).max() < 1e-4
    ours = int((LiteRTModel(INT8).run(images).argmax(1) != reference.argmax(1)).sum())
    theirs = int((OnnxModel(EXPORTED / "edgenet.int8.onnx").run(images).argmax(1) != reference.argmax(1)).sum())
    assert ours <= theirs


def test_the_shipped_files_carry_their_metadata_and_manifest_entries():
    model = LiteRTModel(INT8)
    assert model.metadata["arch"] == "edgenet" and model.metadata["quantization"] == "static"
    assert json.loads(model.metadata["output_names"]) == ["logits", "not_digit"]  # the shipped model can refuse
    assert model.threshold is not None and 0 < model.threshold < 1
    assert float(model.metadata["test_accuracy"]) > 99
    entries = {a["file"]: a for a in json.loads((EXPORTED / "manifest.json").read_text())["artifacts"]}
    for path in (FP32, INT8):
        entry = entries[path.name]
        assert entry["format"] == "tflite" and entry["parity"]["agreement"] >= 99.5


def _predict_in_a_process(model: Path, *inputs: Path) -> tuple[list[dict], list[str]]:
    """`mnist-edge predict --json` in a fresh process, and the runtime/torch modules it imported."""
    code = (
        "import sys, json\n"
        "from mnist_edge.cli.runtime import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'onnxruntime', 'ai_edge_litert')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)\n"
    )
    args = [sys.executable, "-c", code, "predict", "--json", "--model", str(model), *map(str, inputs)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("tflite", "onnx"), [(INT8, "edgenet.int8.onnx"), (FP32, "edgenet.onnx")], ids=["int8", "fp32"]
)
def test_predict_runs_a_tflite_file_with_litert_alone_and_gives_the_onnx_files_digits(tflite, onnx, wild_dir):
    """The runtime is chosen by the file and is the only one imported (no torch either), and the digits on the
    samples and on the photos of digits-in-the-wild are the ONNX file's."""
    ours, imported = _predict_in_a_process(tflite, SAMPLES, wild_dir)
    assert imported == ["ai_edge_litert"]
    theirs, imported = _predict_in_a_process(EXPORTED / onnx, SAMPLES, wild_dir)
    assert imported == ["onnxruntime"]
    assert len(ours) == len(theirs) > 70
    assert [r["digit"] for r in ours] == [r["digit"] for r in theirs]


def test_open_model_picks_the_runtime_by_content_whatever_the_name(tmp_path):
    renamed = tmp_path / "model.onnx"
    renamed.write_bytes(INT8.read_bytes())
    assert isinstance(open_model(renamed), LiteRTModel)
    onnx_named_tflite = tmp_path / "other.tflite"
    onnx_named_tflite.write_bytes((EXPORTED / "edgenet.onnx").read_bytes())
    with pytest.raises(MnistEdgeError, match=r"other\.tflite: not a TFLite model"):
        open_model(onnx_named_tflite)


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "not a TFLite model"),
    (b"\0\0\0\0TFL3" + b"\xff" * 200, "not a usable TFLite model"),
])
def test_a_broken_tflite_file_is_one_error_line(tmp_path, content, expected):
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    with pytest.raises(MnistEdgeError, match=expected) as err:
        LiteRTModel(path)
    assert "\n" not in str(err.value)


def test_missing_and_non_file_models_are_named(tmp_path):
    with pytest.raises(MnistEdgeError, match="no such model file"):
        open_model(tmp_path / "gone.tflite")
    with pytest.raises(MnistEdgeError, match="not a file"):
        LiteRTModel(tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(8, 45_000), flips=st.lists(st.tuples(st.integers(8, 45_000), st.integers(0, 255)), max_size=8))
def test_a_cut_or_corrupted_tflite_file_fails_with_an_error_never_a_crash(tmp_path, cut, flips):
    """A truncated or byte-flipped file is refused with a MnistEdgeError or opens and runs; nothing else escapes."""
    data = bytearray(INT8.read_bytes()[:cut])
    for where, value in flips:
        if where < len(data):
            data[where] = value
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    try:
        model = LiteRTModel(path)
    except MnistEdgeError as exc:
        assert "\n" not in str(exc)
        return
    with contextlib.suppress(MnistEdgeError):  # a file that opens may still fail on data: as one line too
        assert model.run(_digits(2)).shape == (2, 10)


def _rewritten(tmp_path: Path, change) -> Path:
    """The shipped int8 file with CHANGE made to its flatbuffer (as schema.ModelT), as tmp_path/bad.tflite."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(INT8.read_bytes()), 0)
    change(model)
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


def _signature_of_no_graph(model) -> None:
    model.signatureDefs[1].subgraphIndex = 7  # there are 2


def _missing_input_beside_another_change(model) -> None:
    model.subgraphs[0].operators[14].inputs[0] = -1  # "no tensor": the op's kernel reads it anyway
    model.subgraphs[1].operators[9].largeCustomOptionsSize = 47


@pytest.mark.parametrize("change", [_signature_of_no_graph, _missing_input_beside_another_change])
def test_a_file_that_crashes_litert_is_one_error_line_not_a_segfault(tmp_path, change):
    """Native LiteRT segfaults opening these (found by fuzzing the flatbuffer's fields); predict, run in a process
    of its own so that a crash is seen as a signal, says the file is unusable in one line instead."""
    path = _rewritten(tmp_path, change)
    code = "from mnist_edge.cli.runtime import main; main()"
    args = [sys.executable, "-c", code, "predict", "--model", str(path), str(SAMPLES)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if "XNNPACK" not in line]
    assert len(lines) == 1 and "bad.tflite: not a usable TFLite model (LiteRT crashes on it: SIGSEGV)" in lines[0]


@pytest.mark.parametrize("tensor_type", [2, 3, 9], ids=["int32", "uint8", "int8"])  # schema.TensorType
def test_logits_of_an_unquantized_integer_type_are_refused_not_read_as_zeros(tmp_path, tensor_type):
    """Logits of a type with no scale came back as values * 0 + 0: every image a "0" at 10%, silently."""
    def integer_logits(model) -> None:
        for graph in model.subgraphs:
            logits = graph.tensors[graph.outputs[0]]
            logits.type, logits.quantization = tensor_type, None

    path = _rewritten(tmp_path, integer_logits)
    with pytest.raises(MnistEdgeError, match=r"bad\.tflite: not a usable TFLite model .*output.* expected float32"):
        LiteRTModel(path)


def test_wrong_image_shapes_are_refused():
    with pytest.raises(MnistEdgeError, match=r"images have shape \[2, 28, 28\]"):
        LiteRTModel(FP32).run(np.zeros((2, 28, 28), np.float32))


def test_serve_runs_a_tflite_file_and_answers_as_predict_does():
    pytest.importorskip("starlette")
    from serve_helpers import Server, samples

    files = samples()
    with Server(["--model", str(INT8), "--workers", "1"]) as server:
        model = server.get("/model").json()
        reply = server.upload(files)
    assert model["file"] == INT8.name and model["quantization"] == "static" and 99 < model["test_accuracy"] <= 100
    assert reply.status == 200
    predicted, _ = _predict_in_a_process(INT8, *(SAMPLES / name for name, _ in files))
    assert [(r["file"], r["digit"]) for r in reply.json()] == [(Path(r["file"]).name, r["digit"]) for r in predicted]


def test_predict_without_litert_says_which_extra_to_install():
    code = "import sys; sys.modules['ai_edge_litert'] = None; from mnist_edge.cli.runtime import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(INT8), str(SAMPLES)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    expected = f"error: this command needs ai_edge_litert: {install_hint('litert')}"  # mnist-edge is not on PyPI
    assert done.stderr.strip().splitlines() == [expected]


def test_only_a_file_export_did_not_verify_is_tried_in_a_forked_child_first(tmp_path, monkeypatch):
    """The probe costs tens of milliseconds an open: a shipped file, listed with its SHA-256 in the manifest beside
    it, has run through the parity gate and opens directly; a copy without that manifest, or one whose bytes the
    manifest does not list, is tried first."""
    import mnist_edge.edge.litert as litert

    tried: list[int] = []

    def probe(work):  # counts the forks that would happen, then does what the real probe does without crashing
        tried.append(1)
        return None

    monkeypatch.setattr(litert, "crash_in_a_child", probe)
    LiteRTModel(INT8)
    assert tried == []
    alone = tmp_path / INT8.name
    alone.write_bytes(INT8.read_bytes())
    LiteRTModel(alone)
    assert tried == [1]
    listed = json.loads((EXPORTED / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(listed))
    LiteRTModel(alone)  # the same bytes, listed beside it: verified
    assert tried == [1]
    alone.write_bytes(FP32.read_bytes())  # other bytes under the listed name
    LiteRTModel(alone)
    assert tried == [1, 1]
