"""exported/manifest.json is updated in place, atomically, and never clobbered."""

import json

import pytest

from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.manifest import read_manifest, update_manifest
from mnist_edge.edge.manifest import default_model_path


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
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_entries_whose_file_is_gone_are_dropped_and_the_default_moves(tmp_path):
    touch(tmp_path, "old.onnx", "new.int8.onnx")
    update_manifest(tmp_path, [entry("old.onnx")], default="old.onnx")
    (tmp_path / "old.onnx").unlink()
    update_manifest(tmp_path, [entry("new.int8.onnx", quantization="static")])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == {"default": "new.int8.onnx", "artifacts": [entry("new.int8.onnx", quantization="static")]}


def test_the_runtime_reads_the_default_it_writes(tmp_path, monkeypatch):
    touch(tmp_path, "tiny.int8.onnx")
    update_manifest(tmp_path, [entry("tiny.int8.onnx", quantization="static")], default="tiny.int8.onnx")
    monkeypatch.setattr("mnist_edge.edge.manifest.SHIPPED_DIRS", (tmp_path,))
    assert default_model_path() == tmp_path / "tiny.int8.onnx"


@pytest.mark.parametrize("content", ["{not json", '{"default": "x.onnx"}', "[1, 2]"])
def test_a_broken_manifest_is_a_clear_error_and_is_left_alone(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    touch(tmp_path, "tiny.onnx")
    with pytest.raises(MnistEdgeError, match="manifest"):
        update_manifest(tmp_path, [entry("tiny.onnx")])
    assert (tmp_path / "manifest.json").read_text() == content


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError):
        update_manifest(tmp_path, [entry("x.bin", fmt="tflite")])
    assert not (tmp_path / "manifest.json").exists()
