"""exported/manifest.json: validated whole before anything is written, updated under a lock, atomically."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mnist_edge.edge.manifest import LOCK, default_model_path, read_manifest, update_manifest, validate_manifest
from mnist_edge.errors import MnistEdgeError

SRC = Path(__file__).resolve().parents[1] / "src"


def entry(file: str, fmt: str = "onnx", quantization: str = "none", **extra) -> dict:
    return {"file": file, "format": fmt, "quantization": quantization, "arch": "tiny", **extra}


def touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"model")


def test_update_keeps_other_entries_and_replaces_the_same_file(tmp_path):
    touch(tmp_path, "tiny.onnx", "basic.onnx", "tiny.pt")
    update_manifest(tmp_path, [entry("basic.onnx"), entry("tiny.pt", "checkpoint")], default="basic.onnx")
    update_manifest(tmp_path, [entry("tiny.onnx", size_bytes=1), entry("basic.onnx", sha256="new")])
    manifest = read_manifest(tmp_path)
    assert manifest["default"] == "basic.onnx"  # still there, so it stays the default
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    assert sorted(by_file) == ["basic.onnx", "tiny.onnx", "tiny.pt"]
    assert by_file["basic.onnx"]["sha256"] == "new" and by_file["tiny.onnx"]["size_bytes"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [LOCK]  # no temp file left behind


def test_the_default_changes_only_when_asked(tmp_path):
    touch(tmp_path, "old.onnx", "new.int8.onnx")
    update_manifest(tmp_path, [entry("old.onnx")])
    assert read_manifest(tmp_path)["default"] is None  # a new folder's first file is not made the default unasked
    update_manifest(tmp_path, [entry("old.onnx")], default="old.onnx")
    (tmp_path / "old.onnx").unlink()
    update_manifest(tmp_path, [entry("new.int8.onnx", quantization="static")])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    # the default's file is gone: no default, rather than silently another model
    assert manifest == {"default": None, "artifacts": [entry("new.int8.onnx", quantization="static")]}


def test_the_runtime_reads_the_default_it_writes(tmp_path, monkeypatch):
    touch(tmp_path, "tiny.int8.onnx")
    update_manifest(tmp_path, [entry("tiny.int8.onnx", quantization="static")], default="tiny.int8.onnx")
    monkeypatch.setattr("mnist_edge.edge.manifest.SHIPPED_DIRS", (tmp_path,))
    assert default_model_path() == tmp_path / "tiny.int8.onnx"


MALFORMED = {
    "not json": "{not json",
    "no artifacts": '{"default": "x.onnx"}',
    "a list": "[1, 2]",
    "an entry that is a number": '{"default": null, "artifacts": [1]}',
    "artifacts not a list": '{"default": null, "artifacts": {"file": "a.onnx"}}',
    "default not a string": '{"default": 5, "artifacts": []}',
    "default with a path": '{"default": "../../etc/passwd", "artifacts": []}',
    "file up a folder": json.dumps({"default": None, "artifacts": [entry("../evil.onnx")]}),
    "absolute file": json.dumps({"default": None, "artifacts": [entry("/etc/passwd")]}),
    "file in a subfolder": json.dumps({"default": None, "artifacts": [entry("sub/a.onnx")]}),
    "file is dot-dot": json.dumps({"default": None, "artifacts": [entry("..")]}),
    "backslash": json.dumps({"default": None, "artifacts": [entry("..\\\\a.onnx")]}),
    "no file": json.dumps({"default": None, "artifacts": [{"format": "onnx", "quantization": "none"}]}),
    "file not a string": json.dumps({"default": None, "artifacts": [entry(7)]}),
    "unknown format": json.dumps({"default": None, "artifacts": [entry("a.mlmodel", fmt="coreml")]}),
    "quantization a number": json.dumps({"default": None, "artifacts": [entry("a.onnx", quantization=8)]}),
    "size a string": json.dumps({"default": None, "artifacts": [entry("a.onnx", size_bytes="big")]}),
    "size negative": json.dumps({"default": None, "artifacts": [entry("a.onnx", size_bytes=-1)]}),
    "accuracy a string": json.dumps({"default": None, "artifacts": [entry("a.onnx", test_accuracy="99")]}),
    "accuracy a bool": json.dumps({"default": None, "artifacts": [entry("a.onnx", test_accuracy=True)]}),
    "accuracy NaN": '{"default": null, "artifacts": [{"file": "a.onnx", "format": "onnx", "quantization": "none", '
    '"test_accuracy": NaN}]}',
    "accuracy beyond any float": '{"default": null, "artifacts": [{"file": "a.onnx", "format": "onnx", '
    '"quantization": "none", "test_accuracy": 1'
    + "0" * 400
    + "}]}",
    "parity a list": json.dumps({"default": None, "artifacts": [entry("a.onnx", parity=[1])]}),
    "parity holding Infinity": '{"default": null, "artifacts": [{"file": "a.onnx", "format": "onnx", '
    '"quantization": "none", "parity": {"max_abs_diff": Infinity}}]}',
    "the same file twice": json.dumps({"default": None, "artifacts": [entry("a.onnx"), entry("a.onnx")]}),
    # shallow enough for json to read, deep enough that checking it by recursion raised RecursionError
    "parity nested 700 deep": json.dumps({"default": None, "artifacts": [entry("a.onnx", parity={"x": 0})]}).replace(
        "0}", "[" * 700 + "]" * 700 + "}"),
    "a newer field nested 700 deep": json.dumps({"default": None, "artifacts": [entry("a.onnx", x=0)]}).replace(
        "0}", "[" * 700 + "]" * 700 + "}"),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_is_one_line_and_is_left_alone(tmp_path, monkeypatch, content):
    (tmp_path / "manifest.json").write_text(content)
    touch(tmp_path, "tiny.onnx")
    with pytest.raises(MnistEdgeError, match="manifest|fix or remove it") as err:
        update_manifest(tmp_path, [entry("tiny.onnx")])
    assert "\n" not in str(err.value) and str(tmp_path / "manifest.json") in str(err.value)
    assert (tmp_path / "manifest.json").read_text() == content
    monkeypatch.setattr("mnist_edge.edge.manifest.SHIPPED_DIRS", (tmp_path,))
    with pytest.raises(MnistEdgeError, match="--model FILE"):
        default_model_path()


def test_bad_new_entries_are_refused_before_writing(tmp_path):
    for bad in (entry("x.bin", fmt="coreml"), entry("../x.onnx")):
        with pytest.raises(MnistEdgeError):
            update_manifest(tmp_path, [bad])
    assert not (tmp_path / "manifest.json").exists()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["file", "format", "quantization", "arch", "size_bytes", "sha256", "test_accuracy", "parity", "x"]
)
ENTRY = st.dictionaries(FIELDS, JSON | st.sampled_from(["onnx", "none", "static", "a.onnx", "../a.onnx"]), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=JSON | st.fixed_dictionaries({"default": JSON, "artifacts": st.lists(ENTRY, max_size=3)}))
def test_any_json_is_either_a_valid_manifest_or_one_clear_error(manifest):
    try:
        valid = validate_manifest(manifest, "m.json")
    except MnistEdgeError as exc:
        assert str(exc).startswith("m.json: ") and "\n" not in str(exc)
        return
    for a in valid["artifacts"]:  # what a valid manifest promises its readers
        assert isinstance(a["file"], str) and "/" not in a["file"] and a["file"] not in ("", ".", "..")
        assert a["format"] in ("onnx", "torchscript", "checkpoint") and a["quantization"] in (
            "none", "dynamic", "static",
        )
    assert valid["default"] is None or isinstance(valid["default"], str)


UPDATER = """
import sys
from pathlib import Path
from mnist_edge.edge.manifest import update_manifest
folder, worker, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    name = f"{worker}-{i}.onnx"
    (folder / name).write_bytes(b"model")
    update_manifest(folder, [{"file": name, "format": "onnx", "quantization": "none"}])
"""


def test_concurrent_updaters_lose_no_entry(tmp_path):
    count = 60
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    workers = [
        subprocess.Popen([sys.executable, "-c", UPDATER, str(tmp_path), w, str(count)], env=env) for w in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    files = {a["file"] for a in read_manifest(tmp_path)["artifacts"]}
    assert files == {f"{w}-{i}.onnx" for w in ("a", "b") for i in range(count)}


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _huge(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of NUL bytes that take no disk


def _deep(path: Path) -> None:
    path.write_text('{"artifacts": ' + "[" * 100_000 + "]" * 100_000 + "}")


@pytest.mark.parametrize(
    "make", [_fifo, _zero, _huge, _deep, lambda p: p.mkdir()], ids=["fifo", "dev-zero", "huge", "deep", "folder"]
)
def test_a_manifest_that_is_no_small_file_is_one_line_without_blocking_or_filling_memory(tmp_path, make):
    make(tmp_path / "manifest.json")
    # In a child with a memory cap and a deadline: before the fix a FIFO blocked forever, /dev/zero ate all memory.
    code = (
        "import sys; from pathlib import Path; from mnist_edge.edge.manifest import read_manifest; "
        "read_manifest(Path(sys.argv[1]))"
    )
    run = subprocess.run(["prlimit", "--as=1500000000", sys.executable, "-c", code, str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "MnistEdgeError" in run.stderr and "unreadable manifest" in run.stderr, run.stderr[
        -500:
    ]
