"""The Python API (docs/api.md): `import mnist_edge` stays cheap and torch-free, the edge side gives exactly what
`predict --json` prints, and every kind of image it takes (path, bytes, PIL image, array) reads the same."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import mnist_edge
from conftest import ROOT

SAMPLES = ROOT / "src" / "mnist_edge" / "samples"


@pytest.fixture(scope="module")
def model() -> mnist_edge.Model:
    return mnist_edge.load()


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def _same(top: list[tuple[int, float]], other: list[tuple[int, float]]) -> bool:
    """The same digits in the same order, with probabilities equal to float rounding."""
    digits, probabilities = zip(*top)
    other_digits, other_probabilities = zip(*other)
    return digits == other_digits and np.allclose(probabilities, other_probabilities, atol=1e-6)


def test_import_loads_nothing_heavy_until_a_name_is_used():
    heavy = "[m for m in ('torch', 'onnxruntime', 'numpy', 'PIL') if m in sys.modules]"
    out = _python(f"import sys, mnist_edge; print({heavy}); mnist_edge.load; print({heavy}); "
                  f"mnist_edge.train_model; mnist_edge.export_model; mnist_edge.verify_model; print({heavy})")
    # No runtime until a model is opened: the file says which (ONNX Runtime or LiteRT, edge/models.open_model)
    assert out.splitlines() == ["[]", "['numpy', 'PIL']", "['numpy', 'PIL']"]


def test_the_api_names_are_listed_and_an_unknown_one_is_an_attribute_error():
    assert {"load", "Model", "Prediction", "Failure", "MnistEdgeError", "train_model"} <= set(dir(mnist_edge))
    assert set(mnist_edge.__all__) <= set(dir(mnist_edge))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mnist_edge.nope  # noqa: B018


def test_results_equal_predict_json_for_the_same_files(model):
    command = ["predict", "src/mnist_edge/samples", "missing.png", "--json", "--top", "4"]
    done = subprocess.run([sys.executable, "-m", "mnist_edge", *command], capture_output=True, text=True, cwd=ROOT)
    cli = json.loads(done.stdout)
    results = model.predict_files("src/mnist_edge/samples", "missing.png", top=4)
    assert [r.as_dict() for r in results] == cli and len(cli) == 7
    assert isinstance(results[-1], mnist_edge.Failure) and "error" in cli[-1]
    for entry in cli[:-1]:  # one image at a time: the same too
        assert model.predict(entry["file"], top=4).as_dict() == entry


def test_a_pil_image_bytes_and_an_array_read_as_the_file_does(model):
    path = SAMPLES / "paper-3.png"
    expected = model.predict(path)
    image = Image.open(path)
    for given_as in (image, path.read_bytes(), np.asarray(image), np.asarray(image.convert("L")) / 255.0):
        result = model.predict(given_as)
        assert result.file == "<image>" and _same(result.top, expected.top)
    assert model.predict(image, name="three").file == "three"


def test_raw_takes_an_mnist_form_array_as_it_is(model):
    digit = model.predict(SAMPLES / "mnist-7.png", raw=True)  # a 28x28 MNIST digit: both ways read it
    pixels = np.asarray(Image.open(SAMPLES / "mnist-7.png").convert("L"), np.float32) / 255
    assert _same(model.predict(pixels, raw=True).top, digit.top)
    with pytest.raises(mnist_edge.MnistEdgeError, match="--raw needs a 28x28 image"):
        model.predict(np.zeros((30, 28), np.float32), raw=True)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((28, 28), np.uint8), "<image>: no digit found"),
    (np.zeros((2, 28, 28), np.uint8), r"shape \[2, 28, 28\] is not an image"),
    (np.full((28, 28), np.nan), "NaN or infinite"),
    (np.zeros((28, 28, 3), np.float32), "a colour array must be uint8"),
    (np.zeros((28, 28), np.complex64), "complex64 is not an image"),
    (b"not an image", "not a supported image format"),
    ("no-such.png", "no-such.png: no such file"),
    (42, "expected a path, bytes, a PIL image or a numpy array, not int"),
])
def test_a_bad_image_is_one_clear_error(model, bad, message):
    with pytest.raises(mnist_edge.MnistEdgeError, match=message) as caught:
        model.predict(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("top", [0, 11, 2.5])
def test_top_out_of_range_is_refused(model, top):
    with pytest.raises(mnist_edge.MnistEdgeError, match="choose 1 to 10"):
        model.predict(SAMPLES / "mnist-0.png", top=top)


def test_top_ten_ranks_every_digit_most_likely_first(model):
    """top runs 1 to 10, both included: ten lists every digit once."""
    ranked = model.predict(SAMPLES / "mnist-0.png", top=10).top
    assert sorted(digit for digit, _ in ranked) == list(range(10))
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)


def test_a_model_that_is_not_there_or_not_onnx_is_one_clear_error(tmp_path):
    (tmp_path / "notes.onnx").write_text("hello")
    for name, message in (("nope.onnx", "no such model file"), ("notes.onnx", "not a usable ONNX")):
        with pytest.raises(mnist_edge.MnistEdgeError, match=message):
            mnist_edge.load(tmp_path / name)


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(8, 64), st.integers(8, 64)), elements=st.integers(0, 255)))
def test_an_array_predicts_as_its_png_does(model, pixels):
    """Whatever the pixels, the array route and the file route (its PNG) agree: the same digit, or both refuse."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    outcomes = []
    for image in (pixels, buffer.getvalue()):
        try:
            outcomes.append(model.predict(image).top)
        except mnist_edge.MnistEdgeError as exc:
            outcomes.append(str(exc))
    assert _same(*outcomes) if isinstance(outcomes[0], list) else outcomes[0] == outcomes[1]
