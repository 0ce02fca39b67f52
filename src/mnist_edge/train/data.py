"""MNIST from the four standard IDX files: read, verify, or download into a user cache.

Images come back as uint8 arrays [N, 28, 28] and labels as int64 [N], loaded once into memory;
numpy only, so the reader is usable without torch.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
import io

import numpy as np

from mnist_edge.errors import MnistEdgeError, first_line, install_hint, require_file
from mnist_edge.spec import IMAGE_SIZE

# SHA-256 of the decompressed bytes: a recompressed .gz still verifies.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
COUNTS = {
    "train-images-idx3-ubyte": 60_000, "train-labels-idx1-ubyte": 60_000, "t10k-images-idx3-ubyte": 10_000,
    "t10k-labels-idx1-ubyte": 10_000,
}
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
DATA_ENV = "MNIST_EDGE_DATA"  # a folder with the IDX files, used when no --data-dir is given
CACHE_ENV = "MNIST_EDGE_CACHE"  # where downloads go; default ~/.cache/mnist-edge
WILD_ENV = "MNIST_EDGE_WILD"  # a folder of digits-in-the-wild, real photographed, scanned and drawn digits
# Where this project's machines keep offline copies of the datasets: shared/data beside the checkouts.
SHARED_DATA = Path("shared") / "data"
# The most one IDX file may hold: 1 GiB is 1.3 million digits (MNIST has 70,000), far below what breaks a machine.
MAX_IDX_BYTES = 1 << 30


@dataclass(frozen=True)
class MNIST:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    sha256: dict[str, str]  # file stem -> SHA-256 of its decompressed bytes


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
        if os.path.lexists(data_dir / name):  # a folder, FIFO or device under the name: said so, never read
            require_file(data_dir / name, "IDX file")
    raise MnistEdgeError(f"{data_dir / (stem + '.gz')}: missing (neither {stem}.gz nor {stem} is in {data_dir})")


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # the caller closes


def _read_into(f: io.BufferedIOBase, buffer: memoryview) -> int:
    """Fill BUFFER from F as far as F goes; returns the bytes read."""
    done = 0
    while done < len(buffer):
        got = f.readinto(buffer[done:])
        if not got:
            break
        done += got
    return done


def read_idx(
    path: Path, magic: int, verify_sha256: str | None = None, count: int | None = None
) -> tuple[np.ndarray, str]:
    """Read one IDX file (.gz or raw) into an array; returns it with its content SHA-256.

    COUNT: the number of items the file must hold (MNIST's, when verifying), checked before reading the data.

    The header is read and checked first, and no more than the bytes it promises are ever read or held:
    a gzip bomb costs at most one MNIST-sized array, and an absurd header is refused before allocating.
    """
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") != magic:
                found = head.hex() if len(head) == 4 else "nothing"
                raise MnistEdgeError(f"{path}: not an IDX file of this kind (magic {found}, expected {magic:08x})")
            ndim = magic & 0xFF
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise MnistEdgeError(f"{path}: truncated IDX header")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            if count is not None and shape[0] != count:
                raise MnistEdgeError(f"{path}: header promises {shape[0]:,} items; MNIST's file holds {count:,}")
            if ndim == 3 and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise MnistEdgeError(f"{path}: images are {shape[1]}x{shape[2]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
            size = math.prod(shape)
            if size > MAX_IDX_BYTES:
                raise MnistEdgeError(
                    f"{path}: header promises {size:,} bytes for shape {shape}, over the {MAX_IDX_BYTES:,} allowed"
                )
            array = np.empty(size, dtype=np.uint8)
            got, header = _read_into(f, array.data), 4 + 4 * ndim
            if got < size:
                raise MnistEdgeError(
                    f"{path}: header promises {header + size} bytes for shape {shape}, file has {header + got}"
                )
            if f.read(1):
                raise MnistEdgeError(
                    f"{path}: holds more than the {header + size} bytes its header promises for shape {shape}"
                )
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise MnistEdgeError(f"{path}: corrupt or truncated gzip ({exc})") from None
    except OSError as exc:
        raise MnistEdgeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    sha = hashlib.sha256(head + dims)
    sha.update(array.data)
    digest = sha.hexdigest()
    if verify_sha256 is not None and digest != verify_sha256:
        raise MnistEdgeError(f"{path}: SHA-256 {digest[:12]}... does not match MNIST's {verify_sha256[:12]}...")
    return array.reshape(shape), digest


def _read_split(data_dir: Path, prefix: str, verify: bool) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    images_stem, labels_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images_path, labels_path = _find(data_dir, images_stem), _find(data_dir, labels_stem)
    images, images_sha = read_idx(
        images_path, IMAGES_MAGIC, *((SHA256[images_stem], COUNTS[images_stem]) if verify else ())
    )
    labels, labels_sha = read_idx(
        labels_path, LABELS_MAGIC, *((SHA256[labels_stem], COUNTS[labels_stem]) if verify else ())
    )
    if len(images) != len(labels):
        raise MnistEdgeError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.size and labels.max() > 9:
        raise MnistEdgeError(f"{labels_path}: label {labels.max()} is not a digit")
    return images, labels.astype(np.int64), {images_stem: images_sha, labels_stem: labels_sha}


def checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), or None (an installed wheel)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def local_dataset(name: str, env: str, start: Path | None = None) -> Path | None:
    """A local copy of the dataset NAME ("mnist", "digits-in-the-wild"): $ENV when set (a configured folder,
    even a wrong one: it is read or fails, never silently replaced), else shared/data/NAME in the nearest folder
    above START (default: this package's checkout) that has one, else None. The code and the tests both find
    the data through this, so a checkout beside ../shared/data needs no setting."""
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    start = start or checkout()
    for folder in start.resolve().parents if start else ():
        if (folder / SHARED_DATA / name).is_dir():
            return folder / SHARED_DATA / name
    return None


def local_mnist() -> Path | None:
    return local_dataset("mnist", DATA_ENV)


def local_wild() -> Path | None:
    return local_dataset("digits-in-the-wild", WILD_ENV)


def load_mnist(data_dir: Path | str | None = None, *, verify: bool = True) -> MNIST:
    """Load all 70k digits from DATA_DIR, $MNIST_EDGE_DATA, a local copy (local_dataset), or a checksummed
    download into the cache.

    verify=False accepts other datasets in MNIST's IDX layout (Fashion-MNIST, or a subset).
    """
    data_dir = home_expanded(data_dir or local_mnist() or download_mnist())
    if not data_dir.is_dir():
        raise MnistEdgeError(f"{data_dir}: no such data folder")
    train_x, train_y, train_sha = _read_split(data_dir, "train", verify)
    test_x, test_y, test_sha = _read_split(data_dir, "t10k", verify)
    return MNIST(train_x, train_y, test_x, test_y, {**train_sha, **test_sha})


def cache_dir() -> Path:
    cache = os.environ.get(CACHE_ENV) or "~/.cache/mnist-edge"
    return home_expanded(cache, f"; set {CACHE_ENV} to a folder, or pass --data-dir DIR")


def home_expanded(path: Path | str, hint: str = "") -> Path:
    """PATH with a leading `~` or `~user` made the home folder it names; one line (ending with HINT) when there is
    none: an unknown user, or HOME unset and no passwd entry for this user (a container's arbitrary uid)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        home = Path(path).parts[0]
        why = "HOME is unset and this user has no passwd entry" if home == "~" else f"no user {home[1:]!r}"
        raise MnistEdgeError(f"{path}: no home folder for {home} ({why}){hint}") from None


def download_mnist() -> Path:
    """Fetch MNIST through torchvision (mirrors, MD5 checks) into the cache; returns the raw folder."""
    root = cache_dir()
    raw = root / "MNIST" / "raw"
    if all((raw / f"{stem}.gz").is_file() for stem in SHA256):
        return raw
    try:
        from torchvision.datasets import MNIST as TorchvisionMNIST
    except ImportError:
        hint = install_hint("train")
        raise MnistEdgeError(f"downloading MNIST needs torchvision ({hint}), or pass --data-dir DIR") from None
    try:
        TorchvisionMNIST(str(root), train=True, download=True)
        TorchvisionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError or OSError depending on the mirror
        raise MnistEdgeError(
            f"could not download MNIST into {root} ({first_line(exc, 120)}); offline? "
            "pass --data-dir DIR with the four IDX files"
        ) from None
    return raw
