"""The robustness benchmark: each shift deterministic and of the documented kind and severity, the scoring
consistent with `evaluate`, the wild set's labels, and a short run of tools/robustness.py end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mnist_edge.measure import robustness
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import evaluate
from mnist_edge.export.artifacts import open_artifact

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "robustness.py"
SHIPPED = ROOT / "exported" / "tiny.onnx"


def _digits(n: int = 6) -> np.ndarray:
    """Synthetic digits: a bar and a ring per image, shifted a little, on a black 28x28 background."""
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    yy, xx = np.mgrid[0:28, 0:28]
    for i in range(n):
        x[i, 6 + i % 3 : 22, 13:16] = 255
        ring = np.abs(np.hypot(yy - 14, xx - 14 - i % 2) - 6) < 1.2
        x[i][ring] = 200
    return x


@pytest.mark.parametrize("name", robustness.SHIFTS)
def test_every_shift_is_deterministic_and_keeps_the_format(name):
    x = _digits()
    a, b = robustness.shifted(name, x), robustness.shifted(name, x.copy())
    assert a.dtype == np.uint8 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(a, x) == (name == "clean")  # every shift but clean changes the digits


@settings(max_examples=25, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(28), st.just(28))), st.sampled_from(list(robustness.SHIFTS))
)
def test_any_image_stays_a_valid_image(images, name):
    out = robustness.shifted(name, images)
    assert out.dtype == np.uint8 and out.shape == images.shape


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, (2, 28, 28)))
def test_thickness_shifts_only_add_or_only_remove_ink(images):
    thick, thin = robustness.dilate(images), robustness.erode(images)
    assert (thick >= images).all() and (thin <= images).all()
    assert (robustness.erode(thick) >= images).all()  # a closing never loses ink


def test_thickness_by_hand():
    x = np.zeros((1, 28, 28), dtype=np.uint8)
    x[0, 10:14, 10:14] = 255  # a 4x4 square
    assert (robustness.dilate(x) > 0).sum() == 36  # 6x6: a 3x3 square grows each side by one
    assert (robustness.erode(x) > 0).sum() == 4  # 2x2: the plus eats one pixel from each side


def test_geometric_shifts_by_hand():
    x = _digits(2)
    identity = np.broadcast_to(np.eye(2), (2, 2, 2))
    np.testing.assert_array_equal(robustness._affine(x, identity), x)
    quarter = np.broadcast_to(np.array([[0.0, -1.0], [1.0, 0.0]]), (2, 2, 2))
    np.testing.assert_array_equal(robustness._affine(x, quarter), np.rot90(x, k=-1, axes=(1, 2)))
    # rotation and elastic distortion move ink but keep it, on average over digits
    many = _digits(30)
    for name in ("rotate", "elastic"):
        ratio = robustness.shifted(name, many).astype(float).sum() / many.sum()
        assert 0.9 < ratio < 1.1, name


def test_elastic_displacement_matches_its_documented_size():
    rng = np.random.default_rng(0)
    field = robustness.ELASTIC_ALPHA * robustness._smooth(
        rng.uniform(-1, 1, (20, 28, 28)), robustness.ELASTIC_SIGMA, "reflect"
    )
    assert 1.5 < float(np.sqrt((field**2).mean())) < 2.0  # the docstring's 1.7 px per axis


def test_blur_lowres_and_noise_severity():
    x = _digits()
    blurred = robustness.blur(x).astype(float)
    assert blurred.max() < x.max() and abs(blurred.sum() / x.sum() - 1) < 0.02  # spreads ink, keeps it
    low = robustness.lowres(x).astype(float)
    assert np.abs(np.diff(low, axis=2)).mean() < np.abs(np.diff(x.astype(float), axis=2)).mean()
    black = np.zeros((50, 28, 28), dtype=np.uint8)
    noisy = robustness.shifted("noise", black + 128).astype(float) - 128
    assert abs(noisy.std() / 255 - robustness.NOISE_STD) < 0.01


def test_unknown_shift_is_a_clear_error():
    with pytest.raises(MnistEdgeError, match="unknown shift 'fog'"):
        robustness.parse_shifts("blur,fog")
    assert robustness.parse_shifts(" blur,thin") == ["blur", "thin"]
    assert robustness.parse_shifts(None) == list(robustness.SHIFTS)


def test_descriptions_state_their_severity():
    assert "sigma 1.0 pixels" in robustness.describe("blur")
    assert all("{" not in robustness.describe(name) for name in robustness.SHIFTS)


def test_wild_labels_from_a_table_or_file_names(tmp_path):
    (tmp_path / "001_label-3.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("no label here")
    assert robustness.wild_labels(tmp_path) == {tmp_path / "001_label-3.png": 3}
    (tmp_path / "labels.csv").write_text("file,label\n001_label-3.png,8\n")
    assert robustness.wild_labels(tmp_path) == {tmp_path / "001_label-3.png": 8}  # the table wins
    (tmp_path / "labels.csv").write_text("file,label\n001_label-3.png,eight\n")
    with pytest.raises(MnistEdgeError, match="integer `label`"):
        robustness.wild_labels(tmp_path)


@pytest.fixture(scope="module")
def shipped() -> Path:
    if not SHIPPED.is_file():
        pytest.skip("no shipped model")
    return SHIPPED


def test_scores_agree_with_evaluate_and_shifts_cost_accuracy(shipped, mnist_dir):
    from mnist_edge.train.data import load_mnist

    mnist = load_mnist(mnist_dir)
    images, labels = mnist.test_images[:500], mnist.test_labels[:500]
    fn = open_artifact(shipped).logits_fn
    table = robustness.score_models({"tiny": fn}, images, labels, ["clean", "thin", "noise"])
    assert table["clean"]["tiny"].accuracy == evaluate(fn, images, labels).accuracy > 97
    assert table["thin"]["tiny"].accuracy < table["clean"]["tiny"].accuracy - 5  # the documented severity bites
    assert table["noise"]["tiny"].total == 500


def _run_tool(*args: str) -> subprocess.CompletedProcess:
    # Runs the tool in a process that then reports whether torch was ever imported.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['robustness.py', *{list(args)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(TOOL)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TOOL.parent)])}  # as `python tools/...`
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_tool_short_run_side_by_side_without_torch(shipped, mnist_dir, wild_dir, tmp_path):
    wild = tmp_path / "wild"
    wild.mkdir()
    for path in sorted(wild_dir.glob("*_label-*"))[::12]:  # 6 real images, labels from their names
        shutil.copy(path, wild)
    int8 = shipped.with_name("tiny.int8.onnx")
    result = _run_tool(str(shipped), str(int8), "--data-dir", str(mnist_dir), "--limit", "100", "--wild-dir", str(wild),
                       "--json", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"shift", *robustness.SHIFTS, "wild"}
    assert "tiny.onnx" in rows["shift"] and "tiny.int8.onnx" in rows["shift"]
    assert rows["wild"].count("/6") == 2
    assert "torch imported: False" in result.stdout
    counts = json.loads((tmp_path / "out.json").read_text())
    assert counts["clean"]["tiny.onnx"]["total"] == 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.onnx"], "missing.onnx: no such file"),
        (["{shipped}", "--shifts", "fog"], "unknown shift 'fog'"),
        (["{shipped}", "--limit", "0"], "--limit must be at least 1"),
        (["{shipped}", "--wild-dir", "/nonexistent"], "/nonexistent: no such folder"),
    ],
)
def test_tool_bad_input_is_one_error_line(shipped, mnist_dir, args, message):
    result = _run_tool("--data-dir", str(mnist_dir), "--limit", "10", *[a.format(shipped=shipped) for a in args])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
