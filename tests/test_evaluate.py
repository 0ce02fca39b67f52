import json
import os
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image
from typer.testing import CliRunner

from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import evaluate, ratio_percent
from mnist_edge.measure.report import LEGEND, MAX_MISTAKES, write_report

SHIPPED_INT8 = Path(__file__).resolve().parents[1] / "exported" / "tiny.int8.onnx"


def _coded_digits(labels: np.ndarray) -> np.ndarray:
    """Synthetic 'digits' whose grey level encodes the label, so a logits_fn can read it back."""
    return np.repeat((labels * 20).astype(np.uint8), 28 * 28).reshape(-1, 28, 28)


def _reader(confuse: dict[int, int] | None = None):
    """A logits_fn that decodes the grey level, turning each class in CONFUSE into another."""

    def logits_fn(pixels: np.ndarray) -> np.ndarray:
        assert pixels.dtype == np.float32 and pixels.shape[1:] == (1, 28, 28) and pixels.max() <= 1
        decoded = np.rint(pixels[:, 0, 0, 0] * 255 / 20).astype(int)
        predicted = np.array([(confuse or {}).get(d, d) for d in decoded])
        return np.eye(10, dtype=np.float32)[predicted] * 10

    return logits_fn


def test_accuracy_per_class_and_confusion():
    labels = np.arange(1234) % 10  # not a multiple of the batch size
    images = _coded_digits(labels)
    perfect = evaluate(_reader(), images, labels, batch_size=500)
    assert perfect.accuracy == 100.0 and perfect.per_class_accuracy == [100.0] * 10
    assert np.array_equal(perfect.confusion, np.diag(np.bincount(labels, minlength=10)))

    result = evaluate(_reader({3: 5}), images, labels, batch_size=500)
    threes = int((labels == 3).sum())
    assert result.confusion[3, 5] == threes and result.confusion[3, 3] == 0
    assert result.per_class_accuracy[3] == 0.0 and result.per_class_accuracy[5] == 100.0
    assert result.accuracy == pytest.approx(100 * (1 - threes / len(labels)))
    assert result.as_dict()["errors"] == threes and np.array_equal(
        np.flatnonzero(result.predictions != labels), np.flatnonzero(labels == 3)
    )


def test_loss_is_the_mean_cross_entropy():
    labels = np.arange(50) % 10
    uniform = evaluate(lambda pixels: np.zeros((len(pixels), 10)), _coded_digits(labels), labels)
    assert uniform.loss == pytest.approx(math.log(10))
    assert uniform.accuracy == pytest.approx(10.0)  # ties go to class 0


def _assert_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_report_draws_the_confusion_matrix_and_the_mistakes(tmp_path):
    labels = np.arange(300) % 10
    images = _coded_digits(labels)
    result = evaluate(_reader({7: 1}), images, labels)
    written = write_report(result, images, labels, tmp_path / "report")
    paths = list(written)
    assert [p.name for p in paths] == ["confusion_matrix.png", "misclassified.png", "reliability.png"]
    assert written[paths[1]] == "all 30 misclassified digits; caption under each: true -> predicted"
    assert _assert_png(paths[0])[0] > 10 * 28
    width, height = _assert_png(paths[1])
    with Image.open(paths[1]) as grid:
        # the first mistake, a 7 (grey 140), zoomed 3x
        first = np.asarray(grid)[LEGEND + 2 : LEGEND + 2 + 84, 2 : 2 + 84]
        assert grid.text["Description"] == written[paths[1]]
        assert (np.asarray(grid)[:LEGEND] < 128).any()  # the legend is drawn above the grid
    assert (first == 140).all()
    assert height > 3 * 28 * 3  # 30 mistakes: three rows of zoomed digits
    # no temp files left
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "confusion_matrix.png", "misclassified.png", "reliability.png",
    ]


def test_a_capped_grid_says_how_many_of_the_mistakes_it_shows(tmp_path):
    labels = np.arange(296) % 10
    result = evaluate(_reader({d: (d + 1) % 10 for d in range(10)}), _coded_digits(labels), labels)  # every one wrong
    written = write_report(result, _coded_digits(labels), labels, tmp_path)
    legend = written[tmp_path / "misclassified.png"]
    assert (
        legend
        == f"{MAX_MISTAKES} of 296 misclassified digits shown (the first, in test-set order); caption under each: "
           "true -> predicted"
    )
    with Image.open(tmp_path / "misclassified.png") as grid:
        assert grid.text["Description"] == legend


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path):
    labels = np.arange(50) % 10
    result = evaluate(_reader({1: 2}), _coded_digits(labels), labels)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MnistEdgeError, match="cannot write the report") as err:
        write_report(result, _coded_digits(labels), labels, tmp_path / "file" / "report")
    assert "\n" not in str(err.value) and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_second_picture_failing_takes_the_first_with_it(tmp_path):
    labels = np.arange(50) % 10
    result = evaluate(_reader({1: 2}), _coded_digits(labels), labels)
    (tmp_path / "misclassified.png").mkdir()  # a folder where the second picture goes: refused before any rename
    with pytest.raises(MnistEdgeError, match="misclassified.png: is a folder"):
        write_report(result, _coded_digits(labels), labels, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["misclassified.png"]  # no confusion matrix, no temp files


@given(part=st.integers(0, 10**6), extra=st.integers(0, 10**6))
def test_percent_is_one_correctly_rounded_division(part, extra):
    whole = part + extra or 1
    assert ratio_percent(part, whole) == float(Fraction(100 * part, whole))


def test_a_model_returning_the_wrong_shape_or_nan_is_an_error():
    labels = np.arange(20) % 10
    with pytest.raises(MnistEdgeError, match=r"shape \[20, 9\]"):
        evaluate(lambda pixels: np.zeros((len(pixels), 9)), _coded_digits(labels), labels)
    with pytest.raises(MnistEdgeError, match="non-finite"):
        evaluate(lambda pixels: np.full((len(pixels), 10), np.nan), _coded_digits(labels), labels)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory, make_checkpoint):
    path = tmp_path_factory.mktemp("evaluate") / "basic.pt"
    make_checkpoint(path, "basic", epochs_done=0)
    return path


@pytest.mark.torch  # a training checkpoint
def test_evaluate_cli_prints_per_class_accuracy_and_writes_the_report(untrained_checkpoint, mnist_dir, tmp_path):
    report = tmp_path / "pictures"
    args = ["evaluate", str(untrained_checkpoint), "--data-dir", str(mnist_dir), "--report", str(report)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(basic): accuracy" in result.output and "10000 images" in result.output
    # accuracy, the calibration error, ten per-class figures and the reliability diagram's ECE title
    assert (
        result.output.count("%") == 13
        and "per class: 0: " in result.output
        and "calibration error (ECE)" in result.output
    )
    assert f"wrote {report / 'confusion_matrix.png'}" in result.output
    assert (
        f"wrote {report / 'misclassified.png'}: {MAX_MISTAKES} of " in result.output
        and "true -> predicted" in result.output
    )
    _assert_png(report / "confusion_matrix.png")
    _assert_png(report / "misclassified.png")
    _assert_png(report / "reliability.png")


@pytest.mark.torch  # a training checkpoint
def test_evaluate_cli_json(untrained_checkpoint, mnist_dir):
    result = CliRunner().invoke(app, ["evaluate", str(untrained_checkpoint), "--data-dir", str(mnist_dir), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["arch"] == "basic" and d["images"] == 10_000 and d["report"] == []
    assert sum(map(sum, d["confusion"])) == 10_000 and list(d["per_class_accuracy"]) == [str(c) for c in range(10)]
    assert d["errors"] == round(10_000 * (1 - d["accuracy"] / 100))
    assert d["errors"] > MAX_MISTAKES  # an untrained network: the misclassified grid is capped


def test_evaluate_json_prints_the_accuracy_rounded_once(mnist_dir):
    result = CliRunner().invoke(app, ["evaluate", str(SHIPPED_INT8), "--data-dir", str(mnist_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert '"accuracy": 99.46,' in result.output  # 9946 / 10000 correct; 100 * 0.9946 would print 99.46000000000001
    d = json.loads(result.output)
    for digit, row in enumerate(d["confusion"]):
        assert d["per_class_accuracy"][str(digit)] == float(Fraction(100 * row[digit], sum(row)))


def test_evaluate_limit_means_the_first_n_test_images(mnist_dir):
    result = CliRunner().invoke(
        app, ["evaluate", str(SHIPPED_INT8), "--data-dir", str(mnist_dir), "--json", "--limit", "7"]
    )
    d = json.loads(result.output)
    assert d["images"] == 7 and d["accuracy"] == 100.0
    # no 3 among the first 7 (7 2 1 0 4 1 4): no figure, not NaN (invalid JSON)
    assert d["per_class_accuracy"]["3"] is None


@pytest.mark.torch  # a training checkpoint
@pytest.mark.parametrize("make", [lambda p: p.write_bytes(b"mine"), lambda p: p.symlink_to(p.parent / "elsewhere")])
def test_the_report_never_replaces_a_file_of_the_users_without_overwrite(
    untrained_checkpoint, mnist_dir, tmp_path, make
):
    report = tmp_path / "pictures"
    report.mkdir()
    mine = report / "confusion_matrix.png"
    make(mine)
    args = [
        "evaluate", str(untrained_checkpoint), "--data-dir", str(mnist_dir), "--limit", "16", "--report", str(report),
    ]
    result = CliRunner().invoke(app, args)
    assert (
        result.exit_code == 1
        and result.output.strip() == f"error: {mine}: exists; give --overwrite to replace it, or choose another path"
    )
    assert os.path.lexists(mine) and sorted(p.name for p in report.iterdir()) == ["confusion_matrix.png"]
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    _assert_png(mine)


@pytest.mark.torch  # a training checkpoint
def test_overwrite_with_a_folder_in_the_way_of_one_picture_replaces_neither(untrained_checkpoint, mnist_dir, tmp_path):
    report = tmp_path / "pictures"
    report.mkdir()
    (report / "confusion_matrix.png").write_bytes(b"mine")
    (report / "misclassified.png").mkdir()
    args = ["evaluate", str(untrained_checkpoint), "--data-dir", str(mnist_dir), "--limit", "16", "--overwrite"]
    result = CliRunner().invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {report / 'misclassified.png'}: is a folder"), result.output
    assert (report / "confusion_matrix.png").read_bytes() == b"mine" and sorted(p.name for p in report.iterdir()) == [
        "confusion_matrix.png", "misclassified.png"]
