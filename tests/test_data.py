import gzip
import time

import numpy as np
import pytest

from idx_files import write_dataset, write_idx
from mnist_edge.data import load_mnist
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
    write_dataset(tmp_path)
    with pytest.raises(MnistEdgeError, match="train-images-idx3-ubyte.gz: SHA-256 .* does not match"):
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
