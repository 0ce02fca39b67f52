"""`mnist-edge predict` end to end: inputs (files, folders, globs), outputs, bad input, torch-free."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from cli_runner import cli_runner

from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.preprocess import preprocess
import onnx_graphs
from onnx_models import export_model

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mnist_edge" / "samples"
MNIST_SAMPLES = sorted(SAMPLES.glob("mnist-*.png"))
runner = cli_runner()


def predict(model: Path, *args: str):
    return runner.invoke(app, ["predict", "--model", str(model), *args])


def strict_json(text: str):
    """TEXT parsed as standard JSON: no NaN or Infinity, which Python's json module would otherwise accept."""
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def predict_process(model: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_edge", "predict", "--model", str(model), *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def test_json_matches_the_torch_model_on_mnist_form_samples(tiny_onnx):
    model, path = tiny_onnx
    result = predict(path, "--json", "--raw", "--top", "10", *map(str, MNIST_SAMPLES))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    pixels = np.stack([np.asarray(Image.open(f), np.float32) / 255 for f in MNIST_SAMPLES])[:, None]
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(pixels)), dim=1).numpy()
    assert [r["file"] for r in rows] == list(map(str, MNIST_SAMPLES))
    for row, probs in zip(rows, expected):
        assert row["digit"] == int(probs.argmax()) and isinstance(row["digit"], int)
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        ranked = [t["probability"] for t in row["top"]]
        assert [t["digit"] for t in row["top"]] == [int(k) for k in np.argsort(-probs, kind="stable")]
        np.testing.assert_allclose(ranked, np.sort(probs)[::-1], atol=1e-5)


def test_top_k_and_plain_output(tiny_onnx):
    result = predict(tiny_onnx[1], "--top", "1", "--json", str(MNIST_SAMPLES[0]))
    assert [len(r["top"]) for r in json.loads(result.stdout)] == [1]
    result = predict(tiny_onnx[1], "--top", "3", str(MNIST_SAMPLES[0]))
    header, line = result.stdout.strip().splitlines()
    assert header == f"model: {tiny_onnx[1]}"  # which model answered
    assert result.exit_code == 0 and line.startswith(f"{MNIST_SAMPLES[0]}: ") and line.count("%") == 3
    assert predict(tiny_onnx[1], "--top", "11", str(MNIST_SAMPLES[0])).exit_code == 2


def test_folders_and_globs_collect_each_image_once(tiny_onnx, tmp_path):
    rows = json.loads(predict(tiny_onnx[1], "--json", str(SAMPLES)).stdout)
    assert [Path(r["file"]).name for r in rows] == sorted(p.name for p in SAMPLES.glob("*.png"))
    # A quoted glob (the shell did not expand it) is expanded by predict; a file named twice counts once.
    result = predict(tiny_onnx[1], "--json", str(SAMPLES / "mnist-*.png"), str(MNIST_SAMPLES[0]))
    assert result.exit_code == 0
    assert [r["file"] for r in json.loads(result.stdout)] == list(map(str, MNIST_SAMPLES))


def test_save_preprocessed_writes_what_the_model_saw(tiny_onnx, tmp_path):
    out = tmp_path / "seen" / "nested"
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / "paper-3.png"  # same stem as a sample: saved under another name, not overwritten
    twin.write_bytes((SAMPLES / "paper-3.png").read_bytes())
    result = predict(
        tiny_onnx[1], "--save-preprocessed", str(out), str(SAMPLES / "paper-3.png"), str(twin), str(MNIST_SAMPLES[0])
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["mnist-0.png", "paper-3-2.png", "paper-3.png"]
    saved = Image.open(out / "paper-3.png")
    assert saved.size == (28, 28) and saved.mode == "L"
    expected = np.round(preprocess(SAMPLES / "paper-3.png") * 255)
    np.testing.assert_array_equal(np.asarray(saved), expected)


def test_save_preprocessed_into_a_path_under_a_file_is_one_error(tiny_onnx, tmp_path):
    (tmp_path / "file").write_text("x")
    result = predict_process(tiny_onnx[1], "--save-preprocessed", str(tmp_path / "file" / "sub"), str(MNIST_SAMPLES[0]))
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr.startswith(f"error: {tmp_path / 'file' / 'sub'}: cannot create the folder")
        and result.stderr.count("\n") == 1
    )


def test_each_bad_input_is_one_line_and_the_good_ones_are_still_predicted(tiny_onnx, tmp_path, bomb_png):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "notes.png").write_text("not an image")
    full = (SAMPLES / "paper-3.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    bad = {
        "missing.png": "no such file or folder",
        "empty": "no images in this folder",
        "notes.png": "not a supported image format",
        "cut.png": "unreadable image",
        str(bomb_png(tmp_path / "bomb.png", 100_000, 100_000).name): "decompression bomb",
        str(bomb_png(tmp_path / "big.png", 9_000, 8_000).name): "72,000,000 pixels is over",
        "blank.png": "no digit found",
        "*.nothing": "no file matches this pattern",
    }
    good = [str(SAMPLES / "paper-3.png"), str(MNIST_SAMPLES[1])]
    args = [good[0], *bad, good[1]]
    result = predict_process(tiny_onnx[1], "--json", *args, cwd=tmp_path)
    assert result.returncode == 1
    rows = strict_json(result.stdout)
    assert [r["file"] for r in rows] == args  # every input has its entry, in order
    assert [set(r) for r in rows] == [{"file", "digit", "probability", "top", "not_digit"}] + [{"file", "error"}] * len(
        bad
    ) + [{"file", "digit", "probability", "top", "not_digit"}]
    for row, (name, problem) in zip(rows[1:], bad.items()):
        assert name in row["error"] and problem in row["error"]
    errors = result.stderr.splitlines()
    assert len(errors) == len(bad), result.stderr
    for line, (name, problem) in zip(errors, bad.items()):
        assert line.startswith("error: ") and name in line and problem in line, line


def test_only_bad_inputs_exits_nonzero_with_empty_json(tiny_onnx, tmp_path):
    result = predict(tiny_onnx[1], "--json", str(tmp_path / "missing.png"))
    error = f"{tmp_path / 'missing.png'}: no such file or folder"
    assert result.exit_code == 1 and json.loads(result.stdout) == [
        {"file": str(tmp_path / "missing.png"), "error": error}
    ]
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.png'}: no such file or folder"


@pytest.mark.parametrize("content", [b"", b"not a model\n", bytes(range(256)) * 4])
def test_a_model_file_that_is_not_onnx_is_one_line(tmp_path, content):
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    result = predict_process(model, str(MNIST_SAMPLES[0]))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {model}: not a usable ONNX model") and result.stderr.count("\n") == 1


def test_a_model_with_the_wrong_interface_is_one_line(tmp_path):
    from mnist_edge.train.architectures import create_model

    model = export_model(create_model("tiny"), tmp_path / "named.onnx", input_names=("input",))
    result = predict_process(model, str(MNIST_SAMPLES[0]))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {model}: wrong model interface: input is 'input'")
    assert result.stderr.count("\n") == 1


def test_missing_model_and_model_folder(tmp_path):
    result = predict(tmp_path / "nope.onnx", str(MNIST_SAMPLES[0]))
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {tmp_path / 'nope.onnx'}: no such model file"
    assert predict(tmp_path, str(MNIST_SAMPLES[0])).exit_code == 2  # a folder: a usage error


def test_predict_never_imports_torch(tiny_onnx):
    code = (
        "import json, sys\n"
        "from mnist_edge.cli.commands import app\n"
        "try:\n"
        f"    app(['predict', '--json', '--model', {str(tiny_onnx[1])!r}, {str(SAMPLES)!r}])\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "print(json.dumps({'status': status, 'heavy': sorted({'torch', 'torchvision', 'onnx'} & set(sys.modules))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report == {"status": 0, "heavy": []}, proc.stderr
    assert len(json.loads("\n".join(lines[:-1]))) == len(list(SAMPLES.glob("*.png")))


def test_a_big_run_spread_over_worker_processes_gives_the_same_results_in_order(tiny_onnx, tmp_path):
    from mnist_edge.edge.predict import PARALLEL_MIN, Failure, predict_paths
    from mnist_edge.edge.runtime import OnnxModel

    samples = sorted(SAMPLES.glob("*.png"))
    for i in range(2 * PARALLEL_MIN + 5):  # enough for two workers
        (tmp_path / f"{i:04d}.png").write_bytes(samples[i % len(samples)].read_bytes())
    (tmp_path / "0007.png").write_text("not an image")  # a failure inside a worker comes back in its place
    model = OnnxModel(tiny_onnx[1])
    serial = list(predict_paths(model, [str(tmp_path)], workers=1))
    pooled = list(predict_paths(model, [str(tmp_path)], workers=2))
    assert pooled == serial and len(serial) == 2 * PARALLEL_MIN + 5
    assert isinstance(pooled[7], Failure) and "0007.png: not a supported image format" in pooled[7].error


def two_tone(path: Path, shape: tuple[int, int], ink) -> Path:
    pixels = np.zeros(shape, np.uint8)
    pixels[ink] = 255
    Image.fromarray(pixels).save(path)
    return path


def test_tiny_images_in_a_folder_fail_alone_and_the_rest_is_predicted(tiny_onnx, tmp_path):
    for sample in SAMPLES.glob("*.png"):
        shutil.copy(sample, tmp_path / sample.name)
    two_tone(tmp_path / "a-4x4.png", (4, 4), np.s_[:2])
    two_tone(tmp_path / "b-3x3.png", (3, 3), np.s_[1, 1])
    two_tone(tmp_path / "c-500x2.png", (2, 500), np.s_[:, 200:260])
    Image.fromarray(np.zeros((1, 1), np.float32)).save(tmp_path / "d-1x1.tiff")
    result = predict_process(tiny_onnx[1], "--json", str(tmp_path), str(tmp_path / "d-1x1.tiff"))  # named twice: once
    rows = strict_json(result.stdout)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert [Path(r["file"]).name for r in rows] == files
    samples = [r for r in rows if Path(r["file"]).name in {p.name for p in SAMPLES.glob("*.png")}]
    assert len(samples) == 6 and all(isinstance(r["digit"], int) for r in samples)
    failed = [r for r in rows if "error" in r]
    assert result.returncode == (1 if failed else 0)
    assert result.stderr.count("\n") == len(failed) and "Traceback" not in result.stderr


def test_non_finite_logits_fail_those_images_naming_the_model(tmp_path):
    model = onnx_graphs.log_of_first_pixels(tmp_path / "log.onnx")
    lit = np.zeros((28, 28), np.uint8)
    lit[0, :10] = 128  # log of a positive pixel: finite
    Image.fromarray(lit).save(tmp_path / "lit.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "dark.png")  # log 0 = -inf
    result = predict_process(model, "--json", "--raw", str(tmp_path / "lit.png"), str(tmp_path / "dark.png"))
    rows = strict_json(result.stdout)
    assert result.returncode == 1 and [set(r) for r in rows] == [
        {"file", "digit", "probability", "top", "not_digit"}, {"file", "error"},
    ]
    assert (
        rows[1]["error"]
        == f"{tmp_path / 'dark.png'}: the model {model} returned a non-finite logit (NaN or infinity) for this image"
    )
    assert result.stderr == f"error: {rows[1]['error']}\n"


@pytest.mark.parametrize("build", [onnx_graphs.out_of_range_gather, onnx_graphs.twice_the_rows])
def test_a_model_that_fails_at_run_time_is_one_line_per_image_naming_it(tmp_path, build):
    model = build(tmp_path / "bad.onnx")
    result = predict_process(model, "--json", *map(str, MNIST_SAMPLES[:2]))
    rows = strict_json(result.stdout)
    assert result.returncode == 1 and [r["file"] for r in rows] == list(map(str, MNIST_SAMPLES[:2]))
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    for line, row in zip(lines, rows):
        assert line == f"error: {row['error']}" and row["error"].startswith(f"{row['file']}: {model}: the model")


def test_save_preprocessed_into_the_inputs_own_folder_overwrites_nothing(tiny_onnx, tmp_path):
    for sample in SAMPLES.glob("*.png"):
        shutil.copy(sample, tmp_path / sample.name)
    (tmp_path / "mnist-0-2.png").write_bytes(b"a file of the user's, not an image")
    originals = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = predict_process(
        tiny_onnx[1], "--save-preprocessed", str(tmp_path), str(tmp_path / "mnist-0.png"), str(tmp_path / "paper-3.png")
    )
    assert result.returncode == 0, result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in originals} == originals
    assert sorted(set(os.listdir(tmp_path)) - set(originals)) == ["mnist-0-3.png", "paper-3-2.png"]
    assert Image.open(tmp_path / "mnist-0-3.png").size == (28, 28)
    notes = result.stderr.splitlines()
    assert notes == [
        f"note: {tmp_path / 'mnist-0.png'} already exists and is kept; what the model saw of "
        f"{tmp_path / 'mnist-0.png'} goes to {tmp_path / 'mnist-0-3.png'}",
        f"note: {tmp_path / 'paper-3.png'} already exists and is kept; what the model saw of "
        f"{tmp_path / 'paper-3.png'} goes to {tmp_path / 'paper-3-2.png'}",
    ]


def test_a_name_taken_after_it_was_chosen_is_not_overwritten_and_the_copy_goes_to_the_next(tmp_path):
    from mnist_edge.edge.preprocess import save_png

    names = [tmp_path / "seen.png", tmp_path / "seen-2.png", tmp_path / "seen-3.png"]
    for taken in names[:2]:
        taken.write_bytes(b"someone else's")
    assert save_png(np.zeros((28, 28), np.float32), names) == names[2]
    assert [names[0].read_bytes(), names[1].read_bytes()] == [b"someone else's"] * 2
    with pytest.raises(MnistEdgeError, match="not overwritten"):  # every name taken
        save_png(np.zeros((28, 28), np.float32), names)
    assert sorted(os.listdir(tmp_path)) == ["seen-2.png", "seen-3.png", "seen.png"]  # no temp file left


def test_two_runs_saving_into_one_folder_at_once_lose_no_prediction_and_overwrite_nothing(tiny_onnx, tmp_path):
    """Each run chooses free names before it writes; the other takes them meanwhile. Before: one run's images
    failed ("exists ... not overwritten") and their predictions were lost, exit 1."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(150):
        shutil.copy(MNIST_SAMPLES[i % len(MNIST_SAMPLES)], inputs / f"{i:03d}.png")
    command = [sys.executable, "-m", "mnist_edge", "predict", "--json", "--model", str(tiny_onnx[1]),
               "--save-preprocessed", str(tmp_path / "out"), str(inputs)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0 and "error" not in err, err[-500:]
        assert len(json.loads(out)) == 150
    saved = os.listdir(tmp_path / "out")
    assert len(saved) == 300 and all(Image.open(tmp_path / "out" / name).size == (28, 28) for name in saved)


def test_an_exception_or_a_dying_worker_fails_only_its_image(tiny_onnx, tmp_path, monkeypatch):
    from mnist_edge.edge import predict as module
    from mnist_edge.edge.runtime import OnnxModel

    samples = sorted(SAMPLES.glob("*.png"))
    for i in range(2 * module.PARALLEL_MIN + 5):
        shutil.copy(samples[i % len(samples)], tmp_path / f"{i:04d}.png")
    real = module.preprocess

    def flaky(path, raw=False):  # workers are forked: they see this too
        if path.name == "0007.png":
            raise RuntimeError("a decoder bug")
        if path.name == "0100.png":
            os._exit(9)  # killed, as the OOM killer would
        return real(path, raw=raw)

    monkeypatch.setattr(module, "preprocess", flaky)
    results = list(module.predict_paths(OnnxModel(tiny_onnx[1]), [str(tmp_path)], workers=2))
    assert len(results) == 2 * module.PARALLEL_MIN + 5
    failed = {i: r.error for i, r in enumerate(results) if isinstance(r, module.Failure)}
    assert sorted(failed) == [7, 100]
    assert (
        "0007.png: failed (RuntimeError: a decoder bug" in failed[7]
        and "0100.png: the process preparing this image died" in failed[100]
    )


def test_file_names_cannot_forge_output_lines(tiny_onnx, tmp_path):
    good = tmp_path / "seven\nerror: fake.png"
    shutil.copy(MNIST_SAMPLES[-1], good)
    bad = tmp_path / "clear\x1b[2J.png"
    bad.write_text("not an image")
    result = predict_process(tiny_onnx[1], str(good), str(bad))
    assert result.returncode == 1
    header, line = result.stdout.splitlines()
    assert line.startswith(f"{tmp_path}/seven\\nerror: fake.png: ")
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr and "clear\\x1b[2J.png" in result.stderr
    rows = strict_json(predict_process(tiny_onnx[1], "--json", str(good), str(bad)).stdout)
    assert [r["file"] for r in rows] == [str(good), str(bad)]  # JSON keeps the exact names
    undecodable = tmp_path / os.fsdecode(b"\xff7.png")  # not UTF-8: printing it as it is would raise
    shutil.copy(MNIST_SAMPLES[-1], undecodable)
    result = predict_process(tiny_onnx[1], str(undecodable))
    assert result.returncode == 0 and result.stdout.splitlines()[1].startswith(f"{tmp_path}/\\udcff7.png: ")


def test_ctrl_c_stops_a_model_that_never_finishes(tmp_path):
    """Python's KeyboardInterrupt waits for ONNX Runtime to return, which an endless model never does: before,
    SIGINT was ignored until SIGKILL."""
    model = onnx_graphs.endless(tmp_path / "endless.onnx")
    run = subprocess.Popen(
        [sys.executable, "-m", "mnist_edge", "predict", "--model", str(model), str(MNIST_SAMPLES[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stdout is not None and run.stdout.readline().startswith("model: ")  # the model is open: it runs next
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    try:
        _, err = run.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        run.kill()
        run.communicate()
        pytest.fail("still running 10 s after SIGINT")
    assert run.returncode in (-signal.SIGINT, 130) and "Traceback" not in err, err


def test_a_reader_that_stops_early_gets_no_traceback(tiny_onnx, tmp_path):
    """`predict BIG_FOLDER | head -1`: the worker pool of an unfinished run was shut down by Python's exit,
    from the wrong thread, with a traceback ("cannot join current thread")."""
    from mnist_edge.edge.predict import PARALLEL_MIN

    for i in range(4 * PARALLEL_MIN):
        shutil.copy(MNIST_SAMPLES[i % len(MNIST_SAMPLES)], tmp_path / f"{i:04d}.png")
    command = f"{sys.executable} -m mnist_edge predict --model {tiny_onnx[1]} {tmp_path} | head -1"
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.stdout.startswith("model: ") and "Traceback" not in run.stderr and "Exception" not in run.stderr, (
        run.stderr
    )
