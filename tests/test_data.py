import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from idx_files import idx_bytes, write_dataset, write_idx
from mnist_edge.train import data as data_module
from mnist_edge.train.data import DATA_ENV, LABELS_MAGIC, WILD_ENV, load_mnist, local_dataset, read_idx
from mnist_edge.errors import MnistEdgeError


@pytest.mark.parametrize("gz", [True, False])
def test_reads_small_idx_files(tmp_path, gz):
    write_dataset(tmp_path, n_train=30, n_test=8, gz=gz)
    data = load_mnist(tmp_path, verify=False)
    assert data.train_images.shape == (30, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_labels.shape == (8,) and data.test_labels.dtype == np.int64
    suffix = ".gz" if gz else ""
    raw = gzip.decompress((tmp_path / f"t10k-labels-idx1-ubyte{suffix}").read_bytes()) if gz else None
    if raw is not None:
        assert list(data.test_labels) == list(raw[8:])


def test_checksums_reject_files_that_are_not_mnist(tmp_path):
    write_dataset(tmp_path, n_train=60_000, n_test=10_000, gz=False)  # MNIST's shapes, other digits
    with pytest.raises(MnistEdgeError, match="train-images-idx3-ubyte: SHA-256 .* does not match"):
        load_mnist(tmp_path)


def test_a_tampered_test_set_beside_real_training_files_is_refused(mnist_dir, tmp_path):
    """The t10k files are verified as the train files are: parity and accuracy are measured on them."""
    for stem in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / stem).symlink_to(mnist_dir / stem)
    rng = np.random.default_rng(0)  # MNIST's counts, other digits
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10_000, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 10_000))
    with pytest.raises(MnistEdgeError, match="t10k-images-idx3-ubyte.gz: SHA-256 .* does not match"):
        load_mnist(tmp_path)


def test_missing_file_is_named(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistEdgeError, match="t10k-labels-idx1-ubyte.gz: missing"):
        load_mnist(tmp_path, verify=False)


def test_truncated_gzip(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(MnistEdgeError, match="train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path, verify=False)


def test_garbage_gzip(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage garbage")
    with pytest.raises(MnistEdgeError, match="train-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path, verify=False)


def test_wrong_magic(tmp_path):
    write_dataset(tmp_path)
    # a labels file where images belong: magic 0x801 instead of 0x803
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(40, dtype=np.uint8))
    with pytest.raises(MnistEdgeError, match="train-images-idx3-ubyte.gz: not an IDX file of this kind .*00000801"):
        load_mnist(tmp_path, verify=False)


def test_payload_shorter_than_header_says(tmp_path):
    write_dataset(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-28])
    with pytest.raises(MnistEdgeError, match="t10k-images-idx3-ubyte: header promises"):
        load_mnist(tmp_path, verify=False)


def test_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(MnistEdgeError, match="39 labels for 40 images"):
        load_mnist(tmp_path, verify=False)


def test_missing_folder(tmp_path):
    with pytest.raises(MnistEdgeError, match="no such data folder"):
        load_mnist(tmp_path / "nope")


def test_real_mnist_loads_verified_and_fast(mnist_dir):
    start = time.perf_counter()
    data = load_mnist(mnist_dir)
    elapsed = time.perf_counter() - start
    assert data.train_images.shape == (60_000, 28, 28)
    assert data.test_images.shape == (10_000, 28, 28)
    assert np.bincount(data.test_labels).tolist()[:2] == [980, 1135]
    assert elapsed < 5  # generous for a loaded CI machine; tools/bench_data.py measures the real figure


BOMB_READER = """
import resource, sys
from mnist_edge.train.data import read_idx, IMAGES_MAGIC
from mnist_edge.errors import MnistEdgeError
try:
    read_idx(__import__("pathlib").Path(sys.argv[1]), IMAGES_MAGIC)
    print("accepted")
except MnistEdgeError as exc:
    print(f"error: {exc}")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # peak RSS, MiB
"""


def _bomb(path, header: bytes, megabytes: int) -> None:
    """A gzip of HEADER then MEGABYTES MiB of zeros, as concatenated gzip members: ~1 kB per MiB."""
    member = gzip.compress(b"\0" * (1 << 20))
    path.write_bytes(gzip.compress(header) + member * megabytes)


def _read_in_a_subprocess(path) -> tuple[str, int]:
    run = subprocess.run([sys.executable, "-c", BOMB_READER, str(path)], capture_output=True, text=True, timeout=120)
    message, rss = run.stdout.strip().splitlines()
    return message, int(rss)


def test_a_gzip_bomb_is_read_only_as_far_as_its_header_promises(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = idx_bytes(np.zeros((1000, 28, 28), np.uint8))[:16]  # promises 784,000 bytes
    _bomb(path, header, 2048)  # 2 GiB of zeros in ~2 MB
    assert path.stat().st_size < 4 << 20
    message, rss = _read_in_a_subprocess(path)
    assert message.startswith(f"error: {path}: holds more than the 784016 bytes its header promises")
    baseline = _read_in_a_subprocess(tmp_path / "missing.gz")[1]  # the interpreter and numpy alone
    assert rss - baseline < 64  # MiB: the bomb never got decompressed


def test_an_absurd_header_is_refused_before_allocating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = (0x803).to_bytes(4, "big") + (2**31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2  # 1.7 TB promised
    _bomb(path, header, 4)
    message, _ = _read_in_a_subprocess(path)
    assert "header promises 1,683,627,180,032 bytes" in message and "allowed" in message


@pytest.mark.parametrize("gz", [True, False])
def test_trailing_bytes_beyond_the_header_are_refused(tmp_path, gz):
    path = tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))
    data = idx_bytes(np.zeros(10, np.uint8)) + b"\x01"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(MnistEdgeError, match="holds more than the 18 bytes its header promises"):
        read_idx(path, LABELS_MAGIC)


def test_verifying_refuses_a_header_that_is_not_mnists_before_reading(tmp_path):
    write_dataset(tmp_path)  # 40 training images: not MNIST's 60,000
    with pytest.raises(
        MnistEdgeError, match="train-images-idx3-ubyte.gz: header promises 40 items; MNIST's file holds 60,000"
    ):
        load_mnist(tmp_path)
    header = (
        idx_bytes(np.zeros((1, 28, 28), np.uint8))[:4] + (1_300_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    )
    _bomb(tmp_path / "train-images-idx3-ubyte.gz", header, 1)  # under the 1 GiB cap, but not MNIST: refused unread
    with pytest.raises(MnistEdgeError, match="header promises 1,300,000 items"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "kind, make",
    [("a device", lambda p: p.symlink_to("/dev/zero")), ("a pipe \\(FIFO\\)", os.mkfifo), ("a folder", os.mkdir)],
)
def test_an_idx_name_that_is_no_regular_file_is_named_as_such(tmp_path, kind, make):
    """/dev/zero, a FIFO or a folder under an IDX file's name (.gz or raw) is said to be what it is, never read."""
    for name in ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte"):
        folder = write_dataset(tmp_path / name, gz=name.endswith(".gz"))
        (folder / name).unlink()
        make(folder / name)
        with pytest.raises(MnistEdgeError, match=f"{name}: is {kind}, not an IDX file"):
            load_mnist(folder, verify=False)


def test_a_data_folder_under_an_unknown_user_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from mnist_edge.cli.commands import app

    tiny = Path(__file__).resolve().parents[1] / "exported" / "tiny.onnx"
    result = CliRunner().invoke(app, ["evaluate", str(tiny), "--data-dir", "~no-such-user-here/mnist"])
    assert result.exit_code == 1, result.output  # not a bug (70)
    expected = "error: ~no-such-user-here/mnist: no home folder for ~no-such-user-here (no user 'no-such-user-here')\n"
    assert result.output == expected


def test_no_home_folder_at_all_is_one_line_naming_the_way_out(monkeypatch):
    import pwd

    from typer.testing import CliRunner

    from mnist_edge.cli.commands import app

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "MNIST_EDGE_DATA", "MNIST_EDGE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # a container's arbitrary uid: no passwd entry
    monkeypatch.setattr("mnist_edge.train.data.checkout", lambda: None)  # and no copy of MNIST beside the checkout
    tiny = Path(__file__).resolve().parents[1] / "exported" / "tiny.onnx"
    result = CliRunner().invoke(app, ["evaluate", str(tiny)])
    assert result.exit_code == 1, result.output  # not a bug (70)
    assert result.output == ("error: ~/.cache/mnist-edge: no home folder for ~ (HOME is unset and this user has no "
                             "passwd entry); set MNIST_EDGE_CACHE to a folder, or pass --data-dir DIR\n")


# One rule finds the local copies for the code and the tests (tests/conftest.py): the variable, else
# shared/data/NAME in the nearest folder above the checkout that has one.
def test_a_local_copy_is_found_above_the_checkout_the_nearest_first(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(WILD_ENV, raising=False)
    checkout = tmp_path / "work" / "clones" / "mnist-edge"
    checkout.mkdir(parents=True)
    assert local_dataset("mnist", DATA_ENV, checkout) is None
    far = tmp_path / "shared" / "data" / "mnist"
    far.mkdir(parents=True)
    assert local_dataset("mnist", DATA_ENV, checkout) == far
    near = tmp_path / "work" / "shared" / "data" / "mnist"
    near.mkdir(parents=True)
    assert local_dataset("mnist", DATA_ENV, checkout) == near
    assert local_dataset("digits-in-the-wild", WILD_ENV, checkout) is None  # each dataset by its own name


def test_the_variable_wins_even_when_its_folder_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "typo"))
    assert local_dataset("mnist", DATA_ENV, tmp_path / "checkout") == tmp_path / "typo"  # refused, not replaced
    monkeypatch.setattr(data_module, "checkout", lambda: tmp_path / "checkout")
    with pytest.raises(MnistEdgeError, match="typo: no such data folder"):
        load_mnist()


def test_load_mnist_reads_the_copy_beside_the_checkout_without_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    write_dataset(tmp_path / "shared" / "data" / "mnist", n_train=12, n_test=5)
    monkeypatch.setattr(data_module, "checkout", lambda: tmp_path / "mnist-edge")
    monkeypatch.setattr(data_module, "download_mnist", lambda: pytest.fail("downloaded although a local copy exists"))
    assert len(load_mnist(verify=False).test_labels) == 5


def test_the_package_knows_its_checkout():
    # Run from this repository's src/ (an editable install): the repository; from an installed wheel (CI's
    # lowest-versions run): none, so only the variables and the tests' own checkout point at the data.
    root = Path(__file__).resolve().parents[1]
    from_source = Path(data_module.__file__).resolve().is_relative_to(root / "src")
    assert data_module.checkout() == (root if from_source else None)


def _pytest(test: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1], timeout=300)


def test_a_test_skipped_for_missing_data_is_reported_loudly_and_fails_under_ci(tmp_path):
    test = "tests/test_preprocess.py::test_real_images_all_become_mnist_form"
    missing = _pytest(test, MNIST_EDGE_WILD=str(tmp_path / "nowhere"), CI="")
    assert missing.returncode == 0 and "1 skipped" in missing.stdout
    assert "1 TESTS DID NOT RUN: their data is missing" in missing.stdout and f"  {test}" in missing.stdout
    under_ci = _pytest(test, MNIST_EDGE_WILD=str(tmp_path / "nowhere"), CI="true")
    assert under_ci.returncode == 1 and "CI=true: digits-in-the-wild" in under_ci.stdout
