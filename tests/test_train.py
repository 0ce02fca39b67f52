import pickle
import signal

import pytest
import torch
from typer.testing import CliRunner

from mnist_edge.checkpoint import load_checkpoint, save_checkpoint
from mnist_edge.cli import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.train import TrainConfig, train

# `basic` is the cheapest network; a raised learning rate makes a few hundred digits enough to learn.
# The notebook's constant-LR recipe: a run cut short and resumed with more --epochs then matches a straight run.
QUICK = dict(arch="basic", recipe="notebook", limit=512, batch_size=32, lr=0.05, device="cpu", progress=False)
META_KEYS = {
    "arch", "recipe", "epochs_done", "test_accuracy", "normalize", "seed", "device",
    "wall_time_s", "versions", "dataset_sha256", "history",
}  # fmt: skip


def _quiet(_line: str) -> None:
    pass


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def _untimed(history: list[dict]) -> list[dict]:
    """Per-epoch records without the wall-clock fields, which differ from run to run."""
    return [{k: v for k, v in record.items() if k not in ("seconds", "images_per_s")} for record in history]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches this small gain nothing from a second thread, and spinning threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_epochs(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "basic.pt"
    result = train(TrainConfig(epochs=2, data_dir=mnist_dir, out=out, **QUICK), log=_quiet)
    return result, out


def test_short_run_beats_chance_and_writes_the_meta_contract(two_epochs):
    result, out = two_epochs
    assert result.epochs_done == 2 and not result.interrupted
    assert result.test_accuracy > 40  # chance is 10%; 2 epochs of 512 digits reach ~52%
    checkpoint = load_checkpoint(out)
    assert META_KEYS <= checkpoint.meta.keys()
    assert checkpoint.meta["epochs_done"] == 2 and checkpoint.meta["test_accuracy"] == result.test_accuracy
    assert checkpoint.meta["recipe"]["lr"] == 0.05 and checkpoint.meta["recipe"]["momentum"] == 0.5
    assert [h["epoch"] for h in checkpoint.meta["history"]] == [1, 2]
    assert len(checkpoint.meta["dataset_sha256"]) == 4
    payload = torch.load(out, weights_only=True)  # plain tensors, dicts and numbers only
    assert payload["training"]["epoch"] == 2 and "optimizer" in payload["training"]


def test_same_seed_gives_identical_weights(two_epochs, mnist_dir, tmp_path):
    _, out = two_epochs
    again = tmp_path / "again.pt"
    train(TrainConfig(epochs=2, data_dir=mnist_dir, out=again, **QUICK), log=_quiet)
    assert _same(_weights(out), _weights(again))
    other = tmp_path / "other.pt"
    train(TrainConfig(epochs=1, seed=2, data_dir=mnist_dir, out=other, **QUICK), log=_quiet)
    assert not _same(_weights(out), _weights(other))


def test_resume_after_an_epoch_continues_exactly(two_epochs, mnist_dir, tmp_path):
    _, straight = two_epochs
    out = tmp_path / "resumed.pt"
    train(TrainConfig(epochs=1, data_dir=mnist_dir, out=out, **QUICK), log=_quiet)
    assert load_checkpoint(out).meta["epochs_done"] == 1
    result = train(TrainConfig(resume=out, epochs=2, data_dir=mnist_dir, device="cpu", progress=False), log=_quiet)
    assert result.epochs_done == 2
    assert _same(_weights(straight), _weights(out))
    assert _untimed(load_checkpoint(out).meta["history"]) == _untimed(load_checkpoint(straight).meta["history"])


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(two_epochs, mnist_dir, tmp_path):
    _, straight = two_epochs
    out = tmp_path / "interrupted.pt"

    def press_ctrl_c(line: str) -> None:
        if line.startswith("recipe"):  # just before the first step
            signal.raise_signal(signal.SIGINT)

    result = train(TrainConfig(epochs=2, data_dir=mnist_dir, out=out, **QUICK), log=press_ctrl_c)
    assert result.interrupted and result.epochs_done == 0
    training = torch.load(out, weights_only=True)["training"]
    assert training["epoch"] == 0 and training["step"] == 1
    result = train(TrainConfig(resume=out, data_dir=mnist_dir, device="cpu", progress=False), log=_quiet)
    assert result.epochs_done == 2 and not result.interrupted
    assert _same(_weights(straight), _weights(out))


def test_resume_refuses_another_recipe_or_nothing_left_to_train(two_epochs, mnist_dir):
    _, out = two_epochs
    with pytest.raises(MnistEdgeError, match="cannot change lr"):
        train(TrainConfig(resume=out, lr=0.1, data_dir=mnist_dir, progress=False), log=_quiet)
    with pytest.raises(MnistEdgeError, match="already trained 2 of 2 epochs"):
        train(TrainConfig(resume=out, data_dir=mnist_dir, progress=False), log=_quiet)


def test_corrupt_foreign_and_unsafe_checkpoints_get_one_clear_line(tmp_path, two_epochs):
    _, good = two_epochs
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all\n" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(print, protocol=2))  # would call code if loaded without weights_only
    runner = CliRunner()
    for path in (truncated, garbage, foreign, unsafe, tmp_path / "missing.pt"):
        with pytest.raises(MnistEdgeError):
            load_checkpoint(path)
        result = runner.invoke(app, ["evaluate", str(path)])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]


def test_checkpoint_round_trip(tmp_path, two_epochs):
    _, out = two_epochs
    checkpoint = load_checkpoint(out)
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, checkpoint.model, checkpoint.meta)
    again = load_checkpoint(copy)
    assert again.arch == "basic" and again.meta == checkpoint.meta and again.training == {}
    assert _same(again.model.state_dict(), checkpoint.model.state_dict())
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again.model(x), checkpoint.model(x))


def test_train_cli_prints_recipe_and_epochs(mnist_dir, tmp_path):
    out = tmp_path / "cli.pt"
    args = ["train", "--arch", "basic", "--recipe", "notebook", "--epochs", "1", "--limit", "128", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert "recipe: sgd lr 0.01 momentum 0.5, batch 64, 1 epochs" in result.output
    assert "epoch 1/1: train loss" in result.output and "threads" in result.output and out.is_file()


def test_train_cli_bad_input_is_one_line(mnist_dir):
    runner = CliRunner()
    bad = (["--arch", "nope"], ["--arch", "basic", "--epochs", "0"], ["--arch", "basic", "--device", "tpu"], ["--arch", "tiny", "--recipe", "fast"], ["--arch", "basic", "--schedule", "linear"])
    for args in bad:
        result = runner.invoke(app, ["train", *args, "--data-dir", str(mnist_dir)])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


def test_train_cli_runs_a_named_recipe(mnist_dir, tmp_path):
    out = tmp_path / "annealed.pt"
    args = ["train", "--arch", "tiny", "--recipe", "annealed", "--epochs", "1", "--limit", "256", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert "cosine LR schedule" in result.output
    assert load_checkpoint(out).meta["recipe"]["schedule"] == "cosine"
    constant = tmp_path / "constant.pt"
    result = CliRunner().invoke(app, [*args, "--schedule", "constant", "--out", str(constant), "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0 and "LR schedule" not in result.output
    assert load_checkpoint(constant).meta["recipe"]["schedule"] == "constant"
