"""'Not a digit' and calibrated probabilities: the generated sets, the fits, and the decision carried from the
checkpoint through export and the parity gate to predict, evaluate and serve."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoints import payload, seeded_checkpoint
from conftest import ROOT
from cli_runner import cli_runner
from repo_tools import wild_set
from mnist_edge.train import synthetic
from mnist_edge.train.calibrate import choose_threshold, fit_temperature
from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.cli.commands import app
from mnist_edge.edge.predict import results_from_logits
from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.measure.evaluate import expected_calibration_error
from mnist_edge.spec import NOT_DIGIT_NAME, THRESHOLD_KEY, refuses

SAMPLES = ROOT / "src" / "mnist_edge" / "samples"


# --- generated images ------------------------------------------------------------------------------------------


def test_non_digit_characters_hold_nothing_that_passes_for_a_digit() -> None:
    lookalikes = set("0123456789OoQDIlij|!/\\()[]ZzSs$bGBgq")
    assert not lookalikes & set(synthetic.NON_DIGIT_CHARS)


def test_generated_sets_are_seeded_mnist_form_and_labelled() -> None:
    fonts = synthetic.fonts_for("train")
    digits, labels = synthetic.printed_digits(30, 5, fonts)
    again, _ = synthetic.printed_digits(30, 5, fonts)
    others, kinds = synthetic.non_digits(40, 5, fonts)
    assert digits.shape == (30, 28, 28) and digits.dtype == np.uint8
    assert np.array_equal(digits, again)  # the same seed, the same images
    assert list(labels) == [i % 10 for i in range(30)]
    assert others.shape == (40, 28, 28) and set(kinds) <= set(range(len(synthetic.NON_DIGIT_KINDS)))
    assert not np.array_equal(others, synthetic.non_digits(40, 6, fonts)[0])
    # what predict's preprocessing makes of them: ink, centred, in the 20x20 box
    for image in [*digits, *others]:
        ys, xs = np.nonzero(image > 64)
        assert len(ys) and ys.max() - ys.min() < 22 and xs.max() - xs.min() < 22


@pytest.mark.skipif(not synthetic.RAQM, reason="Pillow without libraqm lays out no OpenType features")
def test_printed_digits_use_the_figure_styles_a_typeface_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    # a slashed or dotted zero and old-style figures are printed digits too: a font offering them must draw them
    styled = []
    for font in synthetic.find_fonts():
        face = synthetic._truetype(font.path, 48)
        if bytes(face.getmask("0")) != bytes(face.getmask("0", features=["zero"])):
            styled.append(font)
    if not styled:
        pytest.skip("no installed font has a styled zero")
    monkeypatch.setattr(synthetic, "FIGURE_STYLE_SHARE", 1.0)
    zeros = {}
    for style in ("kern", "zero"):  # the same draws from the seed; kerning changes no single glyph
        monkeypatch.setattr(synthetic, "FIGURE_STYLES", (style,))
        zeros[style] = synthetic.printed_digits(10, 3, styled[:1])[0][0]
    assert not np.array_equal(zeros["kern"], zeros["zero"])


def test_font_splits_are_disjoint_by_family() -> None:
    fonts = synthetic.find_fonts()
    by_split = {split: {f.family for f in fonts if f.split == split} for split in synthetic.SPLITS}
    assert not by_split["train"] & by_split["held-out"] and not by_split["train"] & by_split["calibration"]
    assert not by_split["calibration"] & by_split["held-out"]


# --- the fits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(true_t: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 10))
    p = np.exp(logits / true_t)
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=300), min_size=1, max_size=4),
       st.sampled_from([0.9, 0.99, 0.995]))
def test_threshold_answers_the_asked_share_of_every_pool(pools: list[list[float]], rate: float) -> None:
    arrays = [np.array(p, np.float32) for p in pools]
    threshold = choose_threshold(arrays, rate)
    for scores in arrays:
        answered = np.mean([not refuses(float(s), threshold) for s in scores])
        assert answered >= rate or answered == 1.0 or threshold == 1.0


def test_ece_is_zero_when_stated_probability_is_the_accuracy_and_the_gap_otherwise() -> None:
    confidence = np.full(1000, 0.8)
    correct = np.arange(1000) < 800
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(1000, 0.99), correct) == pytest.approx(19.0)


# --- the decision in predict -----------------------------------------------------------------------------------


def test_results_refuse_at_the_threshold_keep_top_and_fail_on_a_non_finite_score() -> None:
    logits = np.array([[5.0, 1, 0, 0, 0, 0, 0, 0, 0, 0]] * 4, np.float32)
    scores = np.array([0.3, 0.5, 0.7, np.nan], np.float32)
    a, b, c, d = results_from_logits(["a", "b", "c", "d"], logits, 2, "m.onnx", scores, threshold=0.5)
    assert a.digit == 0 and a.not_digit == pytest.approx(0.3)
    assert b.digit is None and b.probability is None and c.digit is None  # 0.5 itself is refused: spec.refuses
    assert b.top[0][0] == 0 and len(b.top) == 2  # the digits it resembles stay
    assert b.as_dict()["digit"] is None and b.as_digit().digit == 0
    assert "not a digit" in b.line("b") and "error" in d.as_dict()
    # without a threshold (--always-digit, or a model that cannot refuse) every row is a digit
    assert all(r.digit == 0 for r in results_from_logits(["x"] * 3, logits[:3], 1, "m", scores[:3], None))


# --- end to end: checkpoint -> export -> parity -> predict / evaluate --------------------------------------------


def _with_threshold(source: Path, target: Path, threshold: float) -> Path:
    data = payload(source)
    data["state_dict"]["not_digit_threshold"] = torch.tensor(threshold)
    torch.save(data, target)
    return target


@pytest.fixture(scope="module")
def open_set_export(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("open-set")
    base = seeded_checkpoint(folder / "base.pt", arch="edgenet", seed=3)
    files = {
        "refuse-all": _with_threshold(base, folder / "all.pt", 0.0),
        "refuse-none": _with_threshold(base, folder / "none.pt", 1.0),
    }
    for name, ckpt in list(files.items()):
        out = folder / f"out-{name}"
        result = cli_runner().invoke(app, ["export", str(ckpt), "--format", "onnx", "--quantize", "static",
                                           "--out", str(out), "--data-dir", str(mnist_dir), "--limit", "300"])
        assert result.exit_code == 0, result.output
        files[f"{name}.onnx"] = out / f"{ckpt.stem}.onnx"
        files[f"{name}.int8.onnx"] = out / f"{ckpt.stem}.int8.onnx"
    return files


def test_export_carries_the_second_output_and_the_threshold(open_set_export: dict[str, Path]) -> None:
    model = OnnxModel(open_set_export["refuse-all.onnx"])
    assert [o.name for o in model.session.get_outputs()] == ["logits", NOT_DIGIT_NAME]
    assert model.threshold == 0.0 and float(model.metadata[THRESHOLD_KEY]) == 0.0
    assert OnnxModel(open_set_export["refuse-none.int8.onnx"]).threshold == 1.0
    logits, scores = model.outputs(np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32))
    assert logits.shape == (40, 10) and scores.shape == (40,) and ((scores >= 0) & (scores <= 1)).all()


def test_the_exported_score_is_the_torch_models(open_set_export: dict[str, Path]) -> None:
    ckpt = load_checkpoint(open_set_export["refuse-none"])
    images = np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
    torch_logits, torch_scores = ckpt.model.deploy(torch.from_numpy(images))
    logits, scores = OnnxModel(open_set_export["refuse-none.onnx"]).outputs(images)
    assert np.abs(scores - torch_scores.detach().numpy()).max() < 1e-5
    assert np.abs(logits - torch_logits.detach().numpy()).max() < 1e-4


def test_the_wild_accuracy_tool_lists_a_refusal_as_a_miss(open_set_export: dict[str, Path], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "tools/wild_accuracy.py", str(wild_set(tmp_path / "wild")), "--model",
                           str(open_set_export["refuse-all.onnx"])], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "all      0/3" in done.stdout and done.stdout.count(", not a digit (score ") == 3


@pytest.mark.parametrize("variant", ["onnx", "int8.onnx"])
def test_predict_says_not_a_digit_with_exit_0_and_always_digit_overrides(
    open_set_export: dict[str, Path], variant: str
) -> None:
    refusing = open_set_export[f"refuse-all.{variant}"]
    result = cli_runner().invoke(app, ["predict", "--model", str(refusing), str(SAMPLES), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and all(r["digit"] is None and r["probability"] is None and r["top"] for r in rows)
    assert all(0 <= r["not_digit"] <= 1 for r in rows)
    text = cli_runner().invoke(app, ["predict", "--model", str(refusing), str(SAMPLES / "mnist-7.png")])
    assert text.exit_code == 0 and "not a digit" in text.stdout
    forced = json.loads(
        cli_runner().invoke(app, ["predict", "--model", str(refusing), str(SAMPLES), "--json", "--always-digit"]).stdout
    )
    assert all(isinstance(r["digit"], int) for r in forced)
    answering = json.loads(
        cli_runner()
        .invoke(app, ["predict", "--model", str(open_set_export[f"refuse-none.{variant}"]), str(SAMPLES), "--json"])
        .stdout
    )
    assert all(isinstance(r["digit"], int) for r in answering)


def test_evaluate_reports_refusals_ece_and_a_reliability_diagram(
    open_set_export: dict[str, Path], mnist_dir: Path, tmp_path: Path
) -> None:
    result = cli_runner().invoke(
        app,
        [
            "evaluate", str(open_set_export["refuse-all.onnx"]), "--data-dir", str(mnist_dir), "--limit", "200",
            "--json", "--report", str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["refused"] == 200 and report["refusal_rate"] == 100.0 and 0 <= report["ece"] <= 100
    assert (tmp_path / "reliability.png").read_bytes().startswith(b"\x89PNG")
    none = json.loads(
        cli_runner()
        .invoke(
            app,
            ["evaluate", str(open_set_export["refuse-none"]), "--data-dir", str(mnist_dir), "--limit", "200", "--json"],
        )
        .stdout
    )
    assert none["refused"] == 0


def test_verify_fails_a_file_whose_threshold_is_not_the_checkpoints(
    open_set_export: dict[str, Path], mnist_dir: Path
) -> None:
    result = cli_runner().invoke(
        app,
        [
            "verify", str(open_set_export["refuse-all.onnx"]), "--checkpoint", str(open_set_export["refuse-none"]),
            "--data-dir", str(mnist_dir), "--limit", "100",
        ],
    )
    assert result.exit_code != 0 and THRESHOLD_KEY in result.output


def test_a_second_output_without_a_threshold_is_one_line(open_set_export: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    proto = onnx.load(open_set_export["refuse-none.onnx"])
    kept = [p for p in proto.metadata_props if p.key != THRESHOLD_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / "no-threshold.onnx"
    onnx.save(proto, path)
    result = cli_runner().invoke(app, ["predict", "--model", str(path), str(SAMPLES / "mnist-7.png")])
    assert result.exit_code == 1 and THRESHOLD_KEY in result.output and "Traceback" not in result.output


def test_a_checkpoint_threshold_outside_0_1_is_refused(tmp_path: Path) -> None:
    base = seeded_checkpoint(tmp_path / "base.pt", arch="edgenet")
    bad = _with_threshold(base, tmp_path / "bad.pt", 1.5)
    with pytest.raises(Exception, match="not_digit_threshold"):
        load_checkpoint(bad)
    data = payload(base)
    data["state_dict"]["temperature"] = torch.tensor(math.inf)
    torch.save(data, tmp_path / "inf.pt")
    with pytest.raises(Exception, match="temperature"):
        load_checkpoint(tmp_path / "inf.pt")


# --- training fits both ------------------------------------------------------------------------------------------


def test_training_holds_out_digits_and_calibrates_on_them(tmp_path: Path, mnist_dir: Path) -> None:
    from checkpoints import train_quietly

    out = tmp_path / "e.pt"
    train_quietly(arch="edgenet", data_dir=mnist_dir, limit=600, epochs=1, out=out, threads=1, progress=False)
    ckpt = load_checkpoint(out)
    calibration = ckpt.meta["calibration"]
    assert calibration["holdout_images"] == 30  # 3000 of 60,000, scaled to 600
    assert (
        0 < float(ckpt.model.not_digit_threshold) <= 1 and float(ckpt.model.temperature) == calibration["temperature"]
    )
    assert ckpt.meta["train_images"] == 600 - 30 + 60 + 80  # MNIST less the held-out, plus printed and non-digits


def test_the_exported_logits_are_the_raw_ones_divided_by_the_temperature() -> None:
    """spec.TEMPERATURE_KEY: what every exported file computes (Deployed) has the temperature divided into its
    logits; the not-digit score comes from the raw outputs, untouched by it."""
    from mnist_edge.train.architectures import Deployed, create_model

    torch.manual_seed(0)
    model = create_model("edgenet").eval()
    model.temperature.fill_(2.5)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        raw = model(x)
        logits, not_digit = Deployed(model)(x)
    torch.testing.assert_close(logits, raw[:, :10] / 2.5)
    torch.testing.assert_close(not_digit, torch.softmax(raw, dim=1)[:, 10])


def test_the_open_set_table_refuses_where_predict_does() -> None:
    """tools/open_set.py's figures count a refusal where spec.refuses makes one: a score equal to the threshold."""
    from mnist_edge.measure.open_set import Model, digit_row

    scores = np.array([0.25, 0.5, 0.75], np.float32)

    def outputs(pixels: np.ndarray) -> np.ndarray:  # digit 0, and each image's not-digit score (split_outputs)
        logits = np.zeros((len(pixels), 10), np.float32)
        logits[:, 0] = 5.0
        return np.column_stack([logits, scores[: len(pixels)]])

    row = digit_row(Model(outputs, 0.5), "zeros", np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.int64))
    assert row.answered == row.right == sum(not refuses(float(s), 0.5) for s in scores) == 1


def test_a_kind_drawn_none_of_shows_a_dash_not_a_division_by_zero() -> None:
    from mnist_edge.measure.open_set import Row

    assert Row("textures", "non-digits", 0, 0, 0).cell() == "-"
    assert Row("MNIST", "digits", 4, 3, 2).cell() == "75.00% / 50.00%"
    assert Row("letters", "non-digits", 4, 1, 0).cell() == "refused 75.0%"
