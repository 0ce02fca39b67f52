import contextlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from checkpoints import same_weights, train_quietly
from cli_runner import cli_runner
from mnist_edge.train.checkpoint import load_checkpoint, save_checkpoint
from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.train.config import TrainConfig, default_threads
from mnist_edge.train.loop import train

# `basic` is the cheapest network; a raised learning rate makes a few hundred digits enough to learn.
# The notebook's constant-LR recipe: a run cut short and resumed with more --epochs then matches a straight run.
QUICK = dict(
    arch="basic", recipe="notebook", limit=512, batch_size=32, lr=0.05, device="cpu", progress=False, threads=1
)
META_KEYS = {
    "arch", "recipe", "epochs_done", "test_accuracy", "normalize", "seed", "device",
    "wall_time_s", "versions", "dataset_sha256", "history",
}  # fmt: skip


def _untimed(history: list[dict]) -> list[dict]:
    """Per-epoch records without the wall-clock fields, which differ from run to run."""
    return [{k: v for k, v in record.items() if k not in ("seconds", "images_per_s")} for record in history]


@pytest.fixture(scope="module")
def two_epochs(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "basic.pt"
    result = train_quietly(epochs=2, data_dir=mnist_dir, out=out, **QUICK)
    return result, out


def test_short_run_beats_chance_and_writes_the_meta_contract(two_epochs):
    result, out = two_epochs
    assert result.epochs_done == 2 and not result.interrupted
    assert result.test_accuracy > 40  # chance is 10%; 2 epochs of 512 digits reach ~52%
    checkpoint = load_checkpoint(out)
    assert checkpoint.meta.keys() >= META_KEYS
    assert checkpoint.meta["epochs_done"] == 2 and checkpoint.meta["test_accuracy"] == result.test_accuracy
    assert checkpoint.meta["recipe"]["lr"] == 0.05 and checkpoint.meta["recipe"]["momentum"] == 0.5
    assert [h["epoch"] for h in checkpoint.meta["history"]] == [1, 2]
    assert len(checkpoint.meta["dataset_sha256"]) == 4
    payload = torch.load(out, weights_only=True)  # plain tensors, dicts and numbers only
    assert payload["training"]["epoch"] == 2 and "optimizer" in payload["training"]


def test_same_seed_gives_identical_weights(two_epochs, mnist_dir, tmp_path):
    _, out = two_epochs
    again = tmp_path / "again.pt"
    train_quietly(epochs=2, data_dir=mnist_dir, out=again, **QUICK)
    assert same_weights(out, again)
    other = tmp_path / "other.pt"
    train_quietly(epochs=1, seed=2, data_dir=mnist_dir, out=other, **QUICK)
    assert not same_weights(out, other)


def test_resume_after_an_epoch_continues_exactly(two_epochs, mnist_dir, tmp_path):
    _, straight = two_epochs
    out = tmp_path / "resumed.pt"
    train_quietly(epochs=1, data_dir=mnist_dir, out=out, **QUICK)
    assert load_checkpoint(out).meta["epochs_done"] == 1
    result = train_quietly(resume=out, epochs=2, data_dir=mnist_dir, device="cpu", progress=False, threads=1)
    assert result.epochs_done == 2
    assert same_weights(straight, out)
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
    result = train_quietly(resume=out, data_dir=mnist_dir, device="cpu", progress=False, threads=1)
    assert result.epochs_done == 2 and not result.interrupted
    assert same_weights(straight, out)


def test_resume_refuses_another_recipe_or_nothing_left_to_train(two_epochs, mnist_dir):
    _, out = two_epochs
    with pytest.raises(MnistEdgeError, match="cannot change lr"):
        train_quietly(resume=out, lr=0.1, data_dir=mnist_dir, progress=False)
    with pytest.raises(MnistEdgeError, match="already trained 2 of 2 epochs"):
        train_quietly(resume=out, data_dir=mnist_dir, progress=False)


def test_checkpoint_round_trip(tmp_path, two_epochs):
    _, out = two_epochs
    checkpoint = load_checkpoint(out)
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, checkpoint.model, checkpoint.meta)
    again = load_checkpoint(copy)
    assert again.arch == "basic" and again.meta == checkpoint.meta and again.training == {}
    assert same_weights(copy, out)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again.model(x), checkpoint.model(x))


def test_train_cli_prints_recipe_and_epochs(mnist_dir, tmp_path):
    out = tmp_path / "cli.pt"
    args = [
        "train", "--arch", "basic", "--recipe", "notebook", "--epochs", "1", "--limit", "128", "--device", "cpu",
        "--out", str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert "recipe: sgd lr 0.01 momentum 0.5, batch 64, 1 epochs" in result.output
    assert "epoch 1/1: train loss" in result.output and "threads" in result.output and out.is_file()


def test_train_cli_bad_input_is_one_line(mnist_dir):
    runner = CliRunner()
    bad = (["--arch", "nope"], ["--arch", "tiny", "--recipe", "fast"])
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
    result = CliRunner().invoke(
        app, [*args, "--schedule", "constant", "--out", str(constant), "--data-dir", str(mnist_dir)]
    )
    assert result.exit_code == 0 and "LR schedule" not in result.output
    assert load_checkpoint(constant).meta["recipe"]["schedule"] == "constant"


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


BAD_NUMBERS = [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--lr", "0"), ("--lr", "1e308"),
    ("--epochs", "0"), ("--epochs", "-1"), ("--batch-size", "0"), ("--batch-size", str(10**9)),
    ("--seed", str(2**70)), ("--seed", "-1"), ("--limit", "0"), ("--threads", "0"),
    ("--threads", str((os.cpu_count() or 1) + 1)),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "value"), BAD_NUMBERS)
def test_bad_numbers_are_one_line_before_any_work(flag, value, tmp_path):
    # A data folder that does not exist and an --out that would be created: the number must be refused first.
    out = tmp_path / "never.pt"
    args = ["train", "--arch", "basic", flag, value, "--data-dir", str(tmp_path / "no-data"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output  # a usage error, with the hint every command's usage errors give
    line, hint = result.output.strip().splitlines()
    assert line.startswith("error: ") and flag in line and "no-data" not in line
    assert hint == "try 'mnist-edge train --help'"
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", float("nan")), ("lr", 1e308), ("epochs", 0), ("batch_size", 0), ("seed", 2**70), ("limit", 0),
        ("threads", 0),
    ],
)
def test_the_library_refuses_what_the_command_line_refuses(field, value):
    with pytest.raises(MnistEdgeError, match=field.replace("_", "-")):
        TrainConfig(arch="basic", **{field: value})


@pytest.mark.parametrize(("flag", "value"), [("--device", "tpu"), ("--schedule", "linear")])
def test_device_and_schedule_are_choices(flag, value):
    result = CliRunner().invoke(app, ["train", "--arch", "basic", flag, value])
    assert result.exit_code != 0 and value in result.output and "Traceback" not in result.output
    assert "auto" in result.output or "constant" in result.output  # the choices are listed


def test_cli_schedules_are_the_recipe_schedules():
    from mnist_edge.train.recipes import SCHEDULES
    from mnist_edge.cli.options import Schedule

    assert tuple(s.value for s in Schedule) == SCHEDULES


def _unwritable_targets(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-folder").mkdir()
    targets = {"under /proc": Path("/proc/x.pt"), "under a file": a_file / "x.pt", "a folder": tmp_path / "a-folder"}
    if os.geteuid() != 0:  # root writes into read-only folders
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        targets["read-only folder"] = read_only / "x.pt"
    return targets


def test_unwritable_out_is_refused_before_training(tmp_path, mnist_dir):
    for name, target in _unwritable_targets(tmp_path).items():
        args = ["train", "--arch", "basic", "--epochs", "1", "--limit", "64", "--threads", "1", "--out", str(target)]
        result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path / "no-data")])
        line = _one_error_line(result)  # the data folder is missing too: --out is checked first
        assert str(target) in line and "no-data" not in line, (name, line)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the probe left nothing


SUBPROCESS_TRAIN = """
import resource, signal, sys
from mnist_edge.errors import MnistEdgeError
from mnist_edge.train.config import TrainConfig, default_threads
from mnist_edge.train.loop import train
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
limit_at, out, data = sys.argv[1], sys.argv[2], sys.argv[3]

def log(line):
    print(line, flush=True)
    if limit_at != "start" and line.startswith(limit_at):
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

if limit_at == "start":
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try:
    train(TrainConfig(arch="basic", recipe="notebook", epochs=2, limit=256, batch_size=32, lr=0.05,
                      device="cpu", threads=1, progress=False, data_dir=data, out=out), log=log)
except MnistEdgeError as exc:
    print(f"error: {exc}")
    sys.exit(1)
"""


def _train_with_a_file_size_limit(limit_at: str, out: Path, mnist_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SUBPROCESS_TRAIN, limit_at, str(out), str(mnist_dir)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def test_a_full_disk_is_found_before_training(tmp_path, mnist_dir):
    out = tmp_path / "basic.pt"
    run = _train_with_a_file_size_limit("start", out, mnist_dir)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert run.stdout.strip().splitlines() == [run.stdout.strip().splitlines()[0]]  # nothing trained
    assert run.stdout.startswith("error: ") and "no space" in run.stdout and not out.exists()


def test_a_write_error_mid_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, mnist_dir):
    out = tmp_path / "basic.pt"
    run = _train_with_a_file_size_limit("epoch 2/2", out, mnist_dir)  # the disk fills during epoch 2
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: cannot write the checkpoint") and "unchanged" in last
    assert load_checkpoint(out).meta["epochs_done"] == 1  # epoch 1's checkpoint, intact
    assert [p.name for p in tmp_path.iterdir()] == ["basic.pt"]  # no temp file left


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(two_epochs, mnist_dir, tmp_path):
    # Finite weights large enough that the logits overflow: the loss turns inf/NaN at the first step.
    _, good = two_epochs
    crafted = torch.load(good, weights_only=True)
    crafted["state_dict"]["net.fc.weight"] *= 1e38
    out = tmp_path / "huge.pt"
    torch.save(crafted, out)
    before = out.read_bytes()
    args = ["train", "--resume", str(out), "--epochs", "3", "--threads", "1", "--data-dir", str(mnist_dir)]
    line = CliRunner().invoke(app, args).output.strip().splitlines()[-1]
    assert line.startswith("error: training diverged in epoch 3") and str(out) in line
    assert out.read_bytes() == before
    lines = []
    with pytest.raises(MnistEdgeError, match="diverged"):  # found at the next progress check, not at epoch end
        train(
            TrainConfig(resume=out, epochs=3, data_dir=mnist_dir, device="cpu", threads=1, progress_every_s=0),
            log=lines.append,
        )
    assert not any("step 2/" in line for line in lines)


def test_resume_with_augmentation_continues_exactly(mnist_dir, tmp_path):
    quick = dict(
        arch="tiny",
        recipe="annealed",
        limit=256,
        batch_size=32,
        device="cpu",
        progress=False,
        threads=1,
        data_dir=mnist_dir,
    )
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    train_quietly(epochs=2, out=straight, **quick)
    assert load_checkpoint(straight).meta["recipe"]["augment"]

    def press_ctrl_c(line: str) -> None:
        if line.startswith("epoch 1/2: step 3/"):  # mid-epoch 1
            signal.raise_signal(signal.SIGINT)

    config = TrainConfig(epochs=2, out=resumed, progress_every_s=0, **{**quick, "progress": True})
    assert train(config, log=press_ctrl_c).interrupted
    assert torch.load(resumed, weights_only=True)["training"]["step"] == 3
    train_quietly(resume=resumed, data_dir=mnist_dir, device="cpu", progress=False, threads=1)
    assert same_weights(straight, resumed)
    assert _untimed(load_checkpoint(resumed).meta["history"]) == _untimed(load_checkpoint(straight).meta["history"])


def test_progress_lines_come_at_intervals_when_not_on_a_terminal(mnist_dir, tmp_path):
    lines: list[str] = []
    config = TrainConfig(
        epochs=1, data_dir=mnist_dir, out=tmp_path / "p.pt", **{**QUICK, "progress": True}, progress_every_s=0
    )
    train(config, log=lines.append)
    steps = [line for line in lines if ": step " in line]
    assert len(steps) == 512 // 32 and steps[0].startswith("epoch 1/1: step 1/16, loss ") and steps[0].endswith("img/s")
    quiet: list[str] = []
    train(
        TrainConfig(epochs=1, data_dir=mnist_dir, out=tmp_path / "q.pt", **{**QUICK, "progress": True}),
        log=quiet.append,
    )
    assert not any(": step " in line for line in quiet)  # the default interval is seconds, longer than this run


def test_train_json_summary_on_stdout_progress_on_stderr(mnist_dir, tmp_path):
    out = tmp_path / "j.pt"
    args = [
        "train",
        "--arch",
        "basic",
        "--epochs",
        "1",
        "--limit",
        "128",
        "--threads",
        "1",
        "--json",
        "--out",
        str(out),
    ]
    result = cli_runner().invoke(app, [*args, "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["epochs_done"] == 1 and summary["arch"] == "basic"
    assert summary["test_accuracy"] == load_checkpoint(out).meta["test_accuracy"]
    assert "epoch 1/1: train loss" in result.stderr


def test_threads_are_used_recorded_and_restored(mnist_dir, tmp_path):
    before = torch.get_num_threads()
    lines: list[str] = []
    train(TrainConfig(epochs=1, data_dir=mnist_dir, out=tmp_path / "t.pt", **{**QUICK, "threads": 2}), log=lines.append)
    assert "2 threads" in lines[0] and load_checkpoint(tmp_path / "t.pt").meta["threads"] == 2
    assert torch.get_num_threads() == before


def test_default_threads_leave_busy_cores_alone():
    usable = len(os.sched_getaffinity(0))
    busy = round(os.getloadavg()[0])
    assert default_threads() == max(1, usable - busy)
    assert 1 <= default_threads() <= usable


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["state"][0].update(momentum_buffer=torch.zeros(3)),  # the wrong shape
        lambda o: o["state"][0].update(momentum_buffer=torch.full_like(o["state"][0]["momentum_buffer"], float("nan"))),
        lambda o: o["state"].update({99: {}}),  # a parameter the model does not have
        lambda o: o.update(state=[1]),
        lambda o: o["param_groups"][0].update(momentum="fast"),  # ignored: the recipe decides the hyperparameters
    ],
)
def test_a_crafted_optimizer_state_is_one_line_or_ignored(change, two_epochs, mnist_dir, tmp_path):
    _, good = two_epochs
    crafted = torch.load(good, weights_only=True)
    change(crafted["training"]["optimizer"])
    path = tmp_path / "crafted.pt"
    torch.save(crafted, path)
    args = ["train", "--resume", str(path), "--epochs", "3", "--threads", "1", "--data-dir", str(mnist_dir)]
    result = CliRunner().invoke(app, args)
    if crafted["training"]["optimizer"]["param_groups"][0]["momentum"] == "fast":
        assert result.exit_code == 0, result.output
        assert load_checkpoint(path).meta["recipe"]["momentum"] == 0.5
    else:
        line = _one_error_line(result)
        assert line.startswith(f"error: {path}: its training state") and "optimizer state" in line


def test_an_existing_checkpoint_is_not_replaced_unless_asked(two_epochs, mnist_dir, tmp_path):
    _, done = two_epochs
    out = tmp_path / "kept.pt"
    out.write_bytes(done.read_bytes())
    args = [
        "train",
        "--arch",
        "basic",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--threads",
        "1",
        "--out",
        str(out),
        "--data-dir",
        str(mnist_dir),
    ]
    line = _one_error_line(CliRunner().invoke(app, args))
    assert line == f"error: {out}: exists; --resume it, choose another --out, or give --overwrite to replace it"
    assert out.read_bytes() == done.read_bytes()
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert load_checkpoint(out).meta["epochs_done"] == 1


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["epochs", "batch_size", "lr", "seed", "limit", "threads", "progress_every_s"]),
    value=st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=4) | st.none() | st.booleans(),
)
def test_any_training_number_is_accepted_in_range_or_one_error(field, value):
    try:
        config = TrainConfig(arch="basic", **{field: value})
    except MnistEdgeError as exc:
        assert "\n" not in str(exc)
        return
    accepted = getattr(config, field)
    assert accepted is None or (not isinstance(accepted, (bool, str)) and math.isfinite(accepted) and accepted >= 0)


def _train_process(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mnist_edge", "train", "--arch", "basic", "--recipe", "notebook", "--limit", "64",
            "--batch-size", "32", "--device", "cpu", "--threads", "1", "--out", str(out), "--data-dir", str(data),
            *extra]  # fmt: skip


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_that_is_a_fifo_or_a_device_is_refused_before_any_work(kind, overwrite, tmp_path):
    out = tmp_path / "x.pt"
    if kind == "fifo":
        os.mkfifo(out)
    elif os.geteuid() == 0:
        os.mknod(out, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own: root would replace it
    else:
        out = Path("/dev/null")
    command = [*_train_process(out, tmp_path / "no-data"), *overwrite]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"error: {out}: is a "), run.stderr
    assert not stat.S_ISREG(os.lstat(out).st_mode)  # still the FIFO or the device
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".x.pt")) == []


def _lock_holder(lock: Path, timeout: float = 120.0) -> str:
    """The pid a lock file names once its holder wrote it."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if (text := lock.read_text().strip()).isdigit():
                return text
        time.sleep(0.1)
    raise AssertionError(f"{lock} never named its holder")


def test_a_second_run_on_the_same_out_fails_at_once_and_a_killed_holder_blocks_nothing(tmp_path, mnist_dir):
    out = tmp_path / "basic.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    again = _train_process(out, mnist_dir, "--epochs", "1", "--overwrite")
    first = subprocess.Popen(_train_process(out, mnist_dir, "--epochs", "100000"), env=env, **quiet)
    try:
        assert _lock_holder(tmp_path / ".basic.pt.lock") == str(first.pid)
        second = subprocess.run(again, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith(f"error: {out}: process {first.pid} is writing it"), second.stderr
    finally:
        first.kill()  # SIGKILL: no cleanup runs, the lock file stays
        first.wait()
    assert (tmp_path / ".basic.pt.lock").exists()
    third = subprocess.run(again, capture_output=True, text=True, env=env, timeout=300)
    assert third.returncode == 0, third.stderr  # the kernel released the dead run's lock
    assert load_checkpoint(out).meta["epochs_done"] == 1 and not (tmp_path / ".basic.pt.lock").exists()


OUT_OF_MEMORY = """
import resource, sys
import mnist_edge.train.loop  # torch and the training code load before the limit
from mnist_edge.cli.runtime import main

data = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
limit = data + 400 * 2**20  # enough for MNIST, far too little for a batch of 8192 through `basic`
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
sys.argv = ["mnist-edge", "train", *sys.argv[1:]]
main()
"""


def test_running_out_of_memory_is_one_line_exit_1_and_keeps_the_last_checkpoint(tmp_path, mnist_dir):
    out = tmp_path / "basic.pt"
    train_quietly(epochs=1, data_dir=mnist_dir, out=out, **QUICK)
    before = out.read_bytes()
    args = ["--arch", "basic", "--recipe", "notebook", "--batch-size", "8192", "--limit", "8192", "--epochs", "1",
            "--device", "cpu", "--threads", "1", "--out", str(out), "--data-dir", str(mnist_dir),
            "--overwrite"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, *args], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr  # the system's limit, not a bug (70)
    assert run.stderr.startswith("error: out of memory on cpu; stopped, ")
    assert f"{out} keeps the last checkpoint" in run.stderr
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["basic.pt"]


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 822083584 bytes. Error code 12"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: not enough memory: you tried to allocate"),
])  # fmt: skip
def test_every_way_torch_says_out_of_memory_is_the_systems_error(exc):
    from mnist_edge.errors import out_of_memory

    assert out_of_memory(exc) and not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_a_fifo_where_the_lock_goes_is_one_line_not_a_hang(tmp_path):
    out = tmp_path / "x.pt"
    os.mkfifo(tmp_path / ".x.pt.lock")
    run = subprocess.run([*_train_process(out, tmp_path / "no-data")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr == f"error: {tmp_path / '.x.pt.lock'}: is a pipe (FIFO), not a lock file; remove it\n"
    assert sorted(os.listdir(tmp_path)) == [".x.pt.lock"]
