"""The parity gate: its default tolerances, tampered, foreign and hostile files, the data it checks on, and
`evaluate` on exported files."""

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from mnist_edge.train.architectures import create_model
from mnist_edge.export.artifacts import open_artifact
from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.export.publish import export_checkpoint
from mnist_edge.export.verify import ParityData, compare, find_mnist, parity_data, tolerances_for, verify_artifact
from idx_files import write_dataset
from onnx_models import export_model

runner = CliRunner()


def _data(n: int, labels: np.ndarray | None) -> ParityData:
    return ParityData(np.zeros((n, 1, 28, 28), np.float32), labels, "test")


def _logits(top: np.ndarray) -> np.ndarray:
    """Logits whose top-1 digit is TOP, with a clear margin."""
    logits = np.zeros((len(top), 10), np.float32)
    logits[np.arange(len(top)), top] = 5.0
    return logits


def test_quantized_default_gate_is_99_5_percent_agreement():
    top = np.arange(1000) % 10
    data = _data(1000, None)
    for flips, passes in ((5, True), (6, False)):
        moved = top.copy()
        moved[:flips] = (moved[:flips] + 1) % 10
        parity = compare(_logits(top), _logits(moved), data, tolerances_for("static"))
        assert parity.passed is passes and parity.agreement == 100 - flips / 10
    assert parity.failures == ["top-1 agreement 99.40% < 99.5% (6 images disagree)"]


def test_quantized_default_gate_allows_0_3_points_of_accuracy_drop():
    labels = np.arange(1000) % 10
    artifact = labels.copy()
    artifact[:4] = (artifact[:4] + 1) % 10  # 4 more mistakes: -0.4 points (and 99.6% agreement)
    parity = compare(_logits(labels), _logits(artifact), _data(1000, labels), tolerances_for("dynamic"))
    assert parity.reference_accuracy == 100.0 and parity.artifact_accuracy == 99.6
    assert parity.failures == ["accuracy drop 0.40 points (100.00% -> 99.60%) > 0.3"]
    artifact[3] = labels[3]  # 0.3 points: allowed
    assert compare(_logits(labels), _logits(artifact), _data(1000, labels), tolerances_for("dynamic")).passed


def test_a_drop_of_exactly_the_allowed_points_passes():
    """The gate fails a drop of more than --max-accuracy-drop. 0.3 above is 0.29999999999999716 in floats; 0.5
    points of 1000 digits is exact, so this is the boundary itself."""
    labels = np.arange(1000) % 10
    artifact = labels.copy()
    artifact[:5] = (artifact[:5] + 1) % 10  # 99.5%: 0.5 points down, and 99.5% agreement (the default floor)
    parity = compare(_logits(labels), _logits(artifact), _data(1000, labels),
                     tolerances_for("static", {"max_accuracy_drop": 0.5}))
    assert parity.reference_accuracy - parity.artifact_accuracy == 0.5 and parity.passed, parity.failures


def test_fp32_default_gate_is_1e_4_and_full_agreement_and_flags_override_it():
    reference = _logits(np.arange(100) % 10)
    parity = compare(reference, reference + 2e-4, _data(100, None), tolerances_for("none"))
    assert parity.failures == ["max abs logit diff 0.0002 > 0.0001"]
    assert compare(reference, reference + 2e-4, _data(100, None), tolerances_for("none", {"max_abs_diff": 1e-3})).passed
    assert not compare(reference, reference + np.nan, _data(100, None), tolerances_for("none")).passed


def test_without_mnist_a_seeded_synthetic_batch_says_so():
    first, second = parity_data(None, 16, "no data here"), parity_data(None, 16, "no data here")
    assert first.labels is None and "synthetic" in first.source and "no data here" in first.source
    np.testing.assert_array_equal(first.images, second.images)
    assert first.images.shape == (16, 1, 28, 28) and first.images.min() >= 0 and first.images.max() <= 1


@pytest.fixture(scope="module")
def tiny(mnist_dir, tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("verify")
    shutil.copy(tiny_checkpoint, folder / "tiny.pt")
    report = export_checkpoint(folder / "tiny.pt", folder, ["onnx", "torchscript"], [], data_dir=mnist_dir, limit=100)
    assert report.published
    return folder


def _verify(*args: str):
    return runner.invoke(app, ["verify", *args, "--limit", "100"])


def test_verify_passes_an_untouched_file(tiny, mnist_dir):
    for name, trust in (("tiny.onnx", []), ("tiny.torchscript.pt", ["--trust-torchscript"])):
        result = _verify(str(tiny / name), "--checkpoint", str(tiny / "tiny.pt"), "--data-dir", str(mnist_dir), *trust)
        assert result.exit_code == 0, result.output
        assert "agreement 100.00%" in result.output and "parity: ok" in result.output


def test_a_tampered_weight_fails_verify(tiny, mnist_dir, tmp_path):
    proto = onnx.load(tiny / "tiny.onnx")
    weight = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(proto, tmp_path / "tampered.onnx")
    parity = verify_artifact(tmp_path / "tampered.onnx", tiny / "tiny.pt", mnist_dir, limit=100)
    assert not parity.passed and parity.failures[0].startswith("max abs logit diff")
    result = _verify(
        str(tmp_path / "tampered.onnx"), "--checkpoint", str(tiny / "tiny.pt"), "--data-dir", str(mnist_dir)
    )
    assert result.exit_code == 1 and "parity FAILED: max abs logit diff" in result.output


def test_an_artifact_checked_against_another_checkpoint_fails(tiny, mnist_dir, tmp_path, make_checkpoint):
    make_checkpoint(tmp_path / "other.pt", seed=1)
    parity = verify_artifact(
        tiny / "tiny.torchscript.pt", tmp_path / "other.pt", mnist_dir, limit=100, trust_torchscript=True
    )
    assert parity.failures[0].startswith("artifact was exported from checkpoint sha256")


def test_a_truncated_file_is_one_line(tiny, tmp_path):
    (tmp_path / "cut.onnx").write_bytes((tiny / "tiny.onnx").read_bytes()[:500])
    result = _verify(str(tmp_path / "cut.onnx"), "--checkpoint", str(tiny / "tiny.pt"))
    assert result.exit_code == 1 and "not a usable ONNX model" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.filterwarnings("ignore::FutureWarning")  # building a foreign TorchScript file
def test_wrong_interface_onnx_and_torchscript_get_a_clear_error(tiny, tmp_path):
    export_model(create_model("tiny"), tmp_path / "renamed.onnx", input_names=("input",))
    result = _verify(str(tmp_path / "renamed.onnx"), "--checkpoint", str(tiny / "tiny.pt"))
    assert result.exit_code == 1 and "wrong model interface" in result.output and "'input'" in result.output
    flat = torch.jit.trace(torch.nn.Linear(784, 10), torch.zeros(2, 784))
    torch.jit.save(flat, str(tmp_path / "flat.pt"))
    with pytest.raises(MnistEdgeError, match="wrong model interface"):
        open_artifact(tmp_path / "flat.pt", trust_torchscript=True)


def test_missing_and_unknown_files_are_one_line(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path / "nope.onnx", tmp_path / "notes.txt"):
        result = _verify(str(path), "--checkpoint", str(tiny / "tiny.pt"))
        assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_evaluate_accepts_exported_files(tiny, mnist_dir):
    outputs = {}
    for name in ("tiny.pt", "tiny.onnx", "tiny.torchscript.pt"):
        result = runner.invoke(
            app, ["evaluate", str(tiny / name), "--data-dir", str(mnist_dir), "--json", "--trust-torchscript"]
        )
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    accuracy = [line for line in outputs["tiny.pt"].splitlines() if '"accuracy"' in line]
    assert all(accuracy[0] in text and '"arch": "tiny"' in text for text in outputs.values())


EVIL = """
import sys
import torch

class Evil(torch.nn.Module):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x):
        victim = torch.from_file(self.target, True, 4, dtype=torch.uint8)  # mmap, shared: writes go to disk
        victim.fill_(65)
        return torch.zeros(x.shape[0], 10) + victim.float().sum() * 0  # uses it, so the JIT keeps the write

torch.jit.save(torch.jit.script(Evil(sys.argv[1])), sys.argv[2])
"""


@pytest.fixture
def evil(tmp_path):
    """A TorchScript archive whose code overwrites the file `victim` (content 'safe') when the model runs."""
    victim, archive = tmp_path / "victim", tmp_path / "model.pt"
    victim.write_bytes(b"safe")
    script = tmp_path / "make_evil.py"  # torch.jit.script reads the class's source from a file
    script.write_text(EVIL)
    subprocess.run([sys.executable, "-W", "ignore", str(script), str(victim), str(archive)], check=True)
    return victim, archive


def _one_line(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("name", ["model.pt", "model.onnx", "model.bin", "model"])
@pytest.mark.parametrize("command", ["evaluate", "verify"])
def test_torchscript_is_refused_as_code_unless_trusted(evil, tiny, mnist_dir, command, name):
    """Whatever its name (.onnx, .bin, none): what the file holds decides whether it is code."""
    victim, archive = evil
    archive = archive.rename(archive.with_name(name))
    args = [command, str(archive), "--data-dir", str(mnist_dir), "--limit", "100"]
    args += ["--checkpoint", str(tiny / "tiny.pt")] if command == "verify" else []
    line = _one_line(runner.invoke(app, args))
    assert "TorchScript file is code" in line and "--trust-torchscript" in line
    assert victim.read_bytes() == b"safe"  # the archive's code never ran
    result = runner.invoke(app, [*args, "--trust-torchscript"])  # the user vouches for it: it runs, as warned
    assert "TorchScript file is code" not in result.output and victim.read_bytes() == b"AAAA"


def test_benchmark_and_export_refuse_a_torchscript_file_as_the_checkpoint(evil, tmp_path):
    victim, archive = evil
    for args in (["benchmark", str(archive)], ["export", str(archive), "--out", str(tmp_path / "out")]):
        line = _one_line(runner.invoke(app, args))
        assert "an exported TorchScript file, not a training checkpoint" in line
    assert victim.read_bytes() == b"safe" and not (tmp_path / "out").exists()


def test_an_onnx_file_given_as_the_checkpoint_says_what_it_is(tiny):
    line = _one_line(_verify(str(tiny / "tiny.onnx"), "--checkpoint", str(tiny / "tiny.onnx")))
    assert "an exported ONNX file, not a training checkpoint" in line


def test_a_configured_but_broken_data_source_is_an_error_not_synthetic(tiny, tmp_path, monkeypatch):
    args = [str(tiny / "tiny.onnx"), "--checkpoint", str(tiny / "tiny.pt")]
    corrupt = write_dataset(tmp_path / "corrupt")  # MNIST's layout, not MNIST's bytes: the checksums refuse it
    for folder, problem in (
        (tmp_path / "missing", "no such data folder"), (corrupt, str(corrupt / "train-images-idx3-ubyte.gz")),
    ):
        monkeypatch.setenv("MNIST_EDGE_DATA", str(folder))
        line = _one_line(_verify(*args))
        assert problem in line and "synthetic" not in line
        monkeypatch.delenv("MNIST_EDGE_DATA")
        line = _one_line(_verify(*args, "--data-dir", str(folder)))
        assert problem in line


def test_only_with_no_source_and_no_download_is_the_batch_synthetic(monkeypatch):
    # no variable, no copy beside the checkout
    monkeypatch.setattr("mnist_edge.export.verify.local_mnist", lambda: None)

    def offline():
        raise MnistEdgeError("could not download MNIST (offline)")

    monkeypatch.setattr("mnist_edge.export.verify.download_mnist", offline)
    mnist, why = find_mnist(None)
    assert mnist is None and "offline" in why
    assert "synthetic" in parity_data(mnist, 8, why).source


@pytest.fixture
def offline(monkeypatch):
    """No MNIST anywhere: nothing configured and no download (the network is not the code under test)."""
    monkeypatch.delenv("MNIST_EDGE_DATA", raising=False)

    def no_download():
        raise MnistEdgeError("could not download MNIST (offline)")

    monkeypatch.setattr("mnist_edge.export.verify.download_mnist", no_download)
    monkeypatch.setattr("mnist_edge.train.data.checkout", lambda: None)  # nor a copy beside the checkout


def test_without_mnist_verify_says_not_checked_and_fails(tiny, offline):
    args = [str(tiny / "tiny.onnx"), "--checkpoint", str(tiny / "tiny.pt")]
    result = _verify(*args)
    assert result.exit_code == 1 and "parity: ok" not in result.output
    assert "parity FAILED: NOT checked on MNIST (could not download MNIST (offline))" in result.output
    assert "--synthetic" in result.output
    report = json.loads(_verify(*args, "--json").stdout)
    assert report["passed"] is False and report["on_mnist"] is False and report["reference_accuracy"] is None
    parity = verify_artifact(tiny / "tiny.onnx", tiny / "tiny.pt", limit=100)
    assert not parity.passed and not parity.on_mnist and parity.failures[0].startswith("NOT checked on MNIST")


def test_synthetic_on_request_passes_but_still_says_not_checked_on_mnist(tiny, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_EDGE_DATA", str(mnist_dir))  # MNIST is there: --synthetic still wins, as asked
    args = [str(tiny / "tiny.onnx"), "--checkpoint", str(tiny / "tiny.pt"), "--synthetic"]
    result = _verify(*args)
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.startswith(f"{tiny / 'tiny.onnx'}: NOT checked on MNIST: 100 images (synthetic seeded batch, as asked")
    assert second == "parity: ok on a synthetic batch only, NOT checked on MNIST"
    report = json.loads(_verify(*args, "--json").stdout)
    assert report["passed"] is True and report["on_mnist"] is False
    parity = verify_artifact(tiny / "tiny.onnx", tiny / "tiny.pt", limit=100, synthetic=True)
    assert parity.passed and not parity.on_mnist
    line = _one_line(_verify(*args, "--data-dir", str(mnist_dir)))
    assert line == "error: pass --data-dir or --synthetic, not both"


def test_on_mnist_the_json_says_so(tiny, mnist_dir):
    result = _verify(
        str(tiny / "tiny.onnx"), "--checkpoint", str(tiny / "tiny.pt"), "--data-dir", str(mnist_dir), "--json"
    )
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["on_mnist"] is True and report["reference_accuracy"] is not None
