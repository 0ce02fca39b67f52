"""Checkpoints are untrusted input: every crafted or foreign file is one line in every command that loads one."""

from __future__ import annotations

import ast
import copy
import datetime
import gzip
import io
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from checkpoints import payload, same_weights, seeded_checkpoint
from mnist_edge.train.recipes import Recipe
from mnist_edge.train.checkpoint import FORMAT, META, load_checkpoint, save_checkpoint
from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.train.config import build_optimizer
from mnist_edge.train.validate import recipe_from_dict


@pytest.fixture(scope="module")
def resumable(tmp_path_factory, mnist_dir):
    """A real one-epoch checkpoint, with training state and full metadata."""
    from mnist_edge.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("resumable") / "basic.pt"
    config = TrainConfig(
        arch="basic", epochs=1, limit=64, batch_size=32, device="cpu", threads=1, progress=False, data_dir=mnist_dir,
        out=out,
    )
    train(config, log=lambda _line: None)
    return out


def _meta(p, **changes):
    p["meta"].update(changes)


def _del(section, key):
    return lambda p: p[section].pop(key)


CRAFTED = {
    "meta is a list": (lambda p: p.update(meta=[1, 2]), "metadata is a list"),
    "meta is missing": (lambda p: p.pop("meta"), "metadata is a NoneType"),
    "meta without arch": (_del("meta", "arch"), r"missing \['arch'\]"),
    "meta without recipe (resumable)": (_del("meta", "recipe"), r"missing \['recipe'\]"),
    "unknown meta key": (lambda p: _meta(p, evil=1), r"unknown keys \['evil'\]"),
    "meta arch differs": (lambda p: _meta(p, arch="tiny"), "says architecture 'tiny'"),
    "epochs_done a string": (lambda p: _meta(p, epochs_done="3"), "bad 'epochs_done'"),
    "epochs_done negative": (lambda p: _meta(p, epochs_done=-1), "bad 'epochs_done'"),
    "test_accuracy inf": (lambda p: _meta(p, test_accuracy=float("inf")), "bad 'test_accuracy'"),
    "test_accuracy NaN": (lambda p: _meta(p, test_accuracy=float("nan")), "bad 'test_accuracy'"),
    "normalize std 0": (lambda p: _meta(p, normalize=[0.1, 0.0]), "bad 'normalize'"),
    "history with NaN": (lambda p: _meta(p, history=[{"epoch": float("nan")}]), "bad 'history'"),
    "history with inf": (lambda p: _meta(p, history=[{"loss": float("inf")}]), "bad 'history'"),
    "history a dict": (lambda p: _meta(p, history={"a": 1}), "bad 'history'"),
    "versions not strings": (lambda p: _meta(p, versions={"torch": 2}), "bad 'versions'"),
    "recipe a list": (lambda p: _meta(p, recipe=[1]), "recipe is a list"),
    "recipe unknown key": (lambda p: p["meta"]["recipe"].update(exec="rm -rf"), r"unknown keys \['exec'\]"),
    "recipe missing key": (lambda p: p["meta"]["recipe"].pop("lr"), r"missing \['lr'\]"),
    "recipe lr NaN": (
        lambda p: p["meta"]["recipe"].update(lr=float("nan")),
        r"recipe has a bad 'lr' \(nan\): must be a finite number",
    ),
    "recipe lr a string": (lambda p: p["meta"]["recipe"].update(lr="0.1"), r"recipe has a bad 'lr' \('0.1'\)"),
    "recipe epochs huge": (
        lambda p: p["meta"]["recipe"].update(epochs=10**12),
        r"recipe has a bad 'epochs' \(1000000000000\): must be a whole number from 1 to",
    ),
    "recipe optimizer unknown": (
        lambda p: p["meta"]["recipe"].update(optimizer="lbfgs"),
        r"recipe has a bad 'optimizer' \('lbfgs'\): must be one of sgd, adam",
    ),
    "recipe nesterov without momentum": (
        lambda p: p["meta"]["recipe"].update(nesterov=True, momentum=0.0), "recipe nesterov needs a momentum",
    ),
    "recipe adam with momentum": (
        lambda p: p["meta"]["recipe"].update(optimizer="adam"), "recipe optimizer adam takes no momentum",
    ),
    "recipe augment not a bool": (
        lambda p: p["meta"]["recipe"].update(augment="yes"),
        r"recipe has a bad 'augment' \('yes'\): must be true or false",
    ),
    "weight of the wrong shape": (
        lambda p: p["state_dict"].update({"net.fc.weight": torch.zeros(3, 3)}),
        r"weight net.fc.weight is torch.float32 \[3, 3\]",
    ),
    "weight of the wrong dtype": (
        lambda p: p["state_dict"].update({"net.fc.bias": torch.zeros(10, dtype=torch.int64)}),
        "weight net.fc.bias is torch.int64",
    ),
    "weight on the meta device": (
        lambda p: p["state_dict"].update({"net.fc.bias": torch.empty(10, device="meta")}),
        r"net.fc.bias is torch.float32 \[10\] on meta",
    ),
    "weight sparse": (
        lambda p: p["state_dict"].update({"net.fc.bias": torch.zeros(10).to_sparse()}),
        r"net.fc.bias is torch.float32 \[10\] torch.sparse_coo",
    ),
    "weight not a tensor": (
        lambda p: p["state_dict"].update({"net.fc.bias": [0.0] * 10}), "weight net.fc.bias is list",
    ),
    "weight with NaN": (lambda p: p["state_dict"]["net.fc.bias"].fill_(float("nan")), "net.fc.bias holds NaN"),
    "weight with inf": (lambda p: p["state_dict"]["net.fc.bias"].fill_(float("-inf")), "net.fc.bias holds NaN or inf"),
    "weight missing": (_del("state_dict", "net.fc.bias"), r"missing \['net.fc.bias'\]"),
    "extra weight": (lambda p: p["state_dict"].update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
    "state_dict a list": (lambda p: p.update(state_dict=[1]), "state_dict is a list"),
    "unknown architecture": (lambda p: p.update(arch="resnet"), "unknown architecture 'resnet'"),
    "architecture not a string": (lambda p: p.update(arch=["basic"]), "unknown architecture"),
    "another version": (lambda p: p.update(version=2), "version 2 is not supported"),
    "version a tensor": (lambda p: p.update(version=torch.tensor([1, 1])), "version Tensor is not supported"),
    "version a bool": (lambda p: p.update(version=True), "version True is not supported"),
    "unknown top-level field": (lambda p: p.update(payload=1), r"unknown checkpoint fields \['payload'\]"),
    "training a list": (lambda p: p.update(training=[1]), "training state is a list"),
    "training epoch a float": (lambda p: p["training"].update(epoch=1.5), "bad 'epoch'"),
    "training perm of floats": (lambda p: p["training"].update(perm=torch.zeros(3)), "bad 'perm'"),
    "training rng not bytes": (lambda p: p["training"].update(rng=[torch.zeros(3)]), "bad 'rng'"),
    "training unknown key": (lambda p: p["training"].update(hook=1), r"unknown keys \['hook'\]"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_checkpoints_are_refused_by_every_loader(case, resumable, tmp_path):
    change, message = CRAFTED[case]
    crafted = copy.deepcopy(payload(resumable))
    change(crafted)
    path = tmp_path / "crafted.pt"
    torch.save(crafted, path)
    with pytest.raises(MnistEdgeError, match=message):
        load_checkpoint(path)
    runner = CliRunner()
    for args in (
        ["train", "--resume", str(path), "--epochs", "2"],
        ["export", str(path), "--out", str(tmp_path / "x")],
        ["evaluate", str(path)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), (args, result.output)
    assert not (tmp_path / "x").exists()


def test_the_real_checkpoints_load(resumable, tiny_checkpoint):
    assert load_checkpoint(resumable).training["epoch"] == 1
    assert load_checkpoint(tiny_checkpoint).arch == "tiny"
    # written before later recipe fields existed: they take defaults
    for shipped in (Path(__file__).resolve().parents[1] / "exported").glob("*.pt"):
        if "torchscript" not in shipped.name:
            assert load_checkpoint(shipped).meta["test_accuracy"] > 99


def test_an_older_recipe_without_the_newer_fields_takes_their_defaults(resumable, tmp_path):
    crafted = payload(resumable)
    for name in ("nesterov", "weight_decay", "label_smoothing"):  # fields with defaults, added after the first release
        crafted["meta"]["recipe"].pop(name)
    torch.save(crafted, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").meta["recipe"] == payload(resumable)["meta"]["recipe"]


def _onnx_file(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), path)


def _torchscript_file(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)


def _zip_bomb(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 << 20))  # 64 MiB in 64 kB


def _zip_file(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")


FOREIGN = {
    "tensor.pt": (lambda p: torch.save(torch.zeros(3), p), "a single tensor"),
    "state_dict.pt": (lambda p: torch.save({"conv.weight": torch.zeros(3)}, p), "a bare state_dict"),
    "plain_dict.pt": (lambda p: torch.save({"a": 1, "b": "x"}, p), "a dict without mnist-edge's format marker"),
    "list.pt": (lambda p: torch.save([1, 2], p), "holding a list"),
    "legacy.pt": (
        lambda p: torch.save(torch.zeros(2), p, _use_new_zipfile_serialization=False),
        "is a pickle .* not loaded",
    ),
    "bomb.pt": (_zip_bomb, "a zip bomb"),
    "global.pt": (
        lambda p: torch.save({"format": FORMAT, "when": datetime.datetime(2020, 1, 1)}, p),
        "refused: it holds Python objects",
    ),
    "model.onnx": (_onnx_file, "is an ONNX model"),
    "model.pt": (_onnx_file, "is an ONNX model"),  # an ONNX file named .pt
    "scripted.pt": (_torchscript_file, "is a TorchScript archive"),
    "archive.pt": (_zip_file, "is a zip archive holding no PyTorch data"),
    "empty.pt": (lambda p: p.write_bytes(b""), "is an empty file"),
    "huge.pt": (
        lambda p: (p.write_bytes(b"PK\x03\x04"), os.truncate(p, (1 << 30) + 1)),
        "larger than any mnist-edge checkpoint",
    ),
    "notes.pt": (lambda p: p.write_text("epoch 1: loss 0.3\n"), "is a text file"),
    "data.pt": (lambda p: p.write_bytes(gzip.compress(b"x" * 100)), "is a gzip file"),
    "noise.pt": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not a PyTorch file"),
    "unsafe.pt": (
        lambda p: p.write_bytes(pickle.dumps(print, protocol=2)),
        "is a pickle .* not loaded, as unpickling can run code",
    ),
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_foreign_files_say_what_they_are(name, tmp_path):
    write, message = FOREIGN[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(MnistEdgeError, match=message) as raised:
        load_checkpoint(path)
    assert str(raised.value).startswith(f"{path}: ")
    result = CliRunner().invoke(app, ["train", "--resume", str(path)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"error: {raised.value}"]


NOT_REGULAR = {"fifo": (os.mkfifo, "is a pipe"), "dev-zero": (lambda p: os.symlink("/dev/zero", p), "is a device")}
LOADS = (
    "[['train', '--resume', P], ['export', P, '--out', P + '-x'], ['benchmark', P, '--runs', '10'], ['evaluate', P], "
    "['verify', P, '--checkpoint', P]]"
)


@pytest.mark.parametrize("kind", list(NOT_REGULAR))
def test_a_path_that_is_no_regular_file_is_named_by_every_loader(kind, tmp_path):
    """A FIFO blocks a reader forever, /dev/zero never ends: every command that takes a model file stats it first.
    In a subprocess with a time limit, so a loader that reads it fails the test instead of hanging or eating memory."""
    make, message = NOT_REGULAR[kind]
    path = tmp_path / "model.pt"
    make(path)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from cli_runner import cli_runner; "
            f"from mnist_edge.cli.commands import app; P = {str(path)!r}\n"
            f"for args in {LOADS}:\n    r = cli_runner().invoke(app, args); print(r.exit_code, repr(r.stderr))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 5, done.stdout + done.stderr
    for line in lines:
        status, stderr = line.split(" ", 1)
        stderr = ast.literal_eval(stderr)
        assert status == "1" and stderr.startswith(f"error: {path}: {message}") and stderr.count("\n") == 1, line


def _relocated(path, location: bytes) -> bytes:
    """PATH's bytes as torch.save would have written them from a LOCATION device (the storages' location tag)."""
    source, out = zipfile.ZipFile(path), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                tag = b"X\x03\x00\x00\x00cpu"  # BINUNICODE 'cpu': the location in every storage's persistent id
                assert tag in data
                data = data.replace(tag, b"X" + len(location).to_bytes(4, "little") + location)
            target.writestr(info, data)
    return out.getvalue()


def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu(tiny_checkpoint, tmp_path):
    path = tmp_path / "from-cuda.pt"
    path.write_bytes(_relocated(tiny_checkpoint, b"cuda:0"))
    if not torch.cuda.is_available():  # the file really asks for CUDA: a plain torch.load refuses it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in loaded.model.state_dict().values())
    assert same_weights(path, tiny_checkpoint)


def test_save_refuses_a_nan_model_and_a_failed_save_keeps_the_file(tiny_checkpoint, tmp_path):
    model = load_checkpoint(tiny_checkpoint).model
    path = tmp_path / "kept.pt"
    save_checkpoint(path, model, {"arch": "tiny"})
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(MnistEdgeError, match="NaN or inf"):
        save_checkpoint(path, model, {"arch": "tiny"})
    assert path.read_bytes() == before


def test_seeded_checkpoints_are_reproducible(tmp_path):
    a, b, c = (
        seeded_checkpoint(tmp_path / f"{seed}{name}.pt", "basic", seed=seed)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert same_weights(a, b) and not same_weights(a, c)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(Recipe.__dataclass_fields__) + ["extra"]), JSONISH, max_size=4))
def test_any_recipe_is_a_sane_recipe_or_one_error(changes):
    values = {**Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1).as_dict(), **changes}
    try:
        recipe = recipe_from_dict(values, "x.pt")
    except MnistEdgeError as exc:
        assert str(exc).startswith("x.pt: recipe ") and "\n" not in str(exc)
        return
    assert 0 < recipe.lr <= 10 and recipe.epochs >= 1 and recipe.batch_size >= 1 and isinstance(recipe.augment, bool)


SANE_FIELDS = st.fixed_dictionaries({
    "optimizer": st.sampled_from(["sgd", "adam"]), "lr": st.floats(1e-6, 10),
    "momentum": st.sampled_from([0.0, 1.0]) | st.floats(0, 1), "nesterov": st.booleans(),
    "weight_decay": st.sampled_from([0.0]) | st.floats(0, 1), "label_smoothing": st.floats(0, 1),
})  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(fields=SANE_FIELDS)
def test_a_recipe_of_sane_fields_that_torch_refuses_is_one_error(fields):
    # each field in range, but together perhaps not: what check_recipe accepts, torch's optimizers must take
    try:
        base = Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1).as_dict()
        recipe = recipe_from_dict({**base, **fields}, "x.pt")
    except MnistEdgeError as exc:
        assert str(exc).startswith("x.pt: recipe ") and "\n" not in str(exc)
        return
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    build_optimizer(recipe, model, torch.device("cpu")).step()


@settings(max_examples=200, deadline=None)
@given(meta=st.dictionaries(st.sampled_from(sorted(META) + ["extra"]), JSONISH, max_size=4))
def test_any_metadata_loads_checked_or_is_one_error(meta, tiny_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "m.pt"
    crafted = payload(tiny_checkpoint)
    crafted["meta"] = {"arch": "tiny", **meta}
    torch.save(crafted, path)
    try:
        loaded = load_checkpoint(path)
    except MnistEdgeError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert all(META[key](value) is None for key, value in loaded.meta.items() if key != "recipe")
