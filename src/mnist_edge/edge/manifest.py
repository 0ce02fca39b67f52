"""exported/manifest.json: which files a folder of exported models holds, and which one `predict` uses.

Every read validates the whole manifest (types of every field, file names that are plain names in the
folder), so a malformed one stops a command before it writes anything. Updates are read-modify-write under
an exclusive lock on a lock file beside the manifest, so two processes updating one folder lose nothing,
and are written through an atomic rename, so a reader never sees a half-written manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_edge.atomic import open_lock_file, write_text
from mnist_edge.errors import MnistEdgeError, open_regular
from mnist_edge.formats import FORMATS, QUANTIZATIONS
from mnist_edge.schema import Check, choice, fields_problem, int_in, map_of, number_in, optional, text

MANIFEST = "manifest.json"
LOCK = ".manifest.json.lock"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The wheel carries exported/ inside the package; a checkout (editable install) has it at the repo root.
SHIPPED_DIRS = (_PACKAGE_DIR / "exported", _PACKAGE_DIR.parents[1] / "exported")

# A manifest lists a few models in a few KB; anything far bigger is not one, and is not read into memory.
MAX_MANIFEST_BYTES = 1 << 20
# A manifest's figures are flat; an entry's field nested deeper than this is no manifest's.
MAX_DEPTH = 32


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_by_export(path: Path, content: bytes) -> bool:
    """Whether the manifest beside PATH lists it with CONTENT's SHA-256: the very file export ran through the parity
    gate. A manifest that is missing or unreadable vouches for nothing."""
    try:
        entries = read_manifest(path.parent)["artifacts"]
    except (MnistEdgeError, OSError):
        return False
    digest = hashlib.sha256(content).hexdigest()
    return any(e["file"] == path.name and e.get("sha256") == digest for e in entries)


def is_plain_name(name: object) -> bool:
    """A file name inside the folder: no path separator, not '.', '..' or empty, no NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _json(value: object) -> str | None:
    """No NaN or infinity anywhere in VALUE (Python's json reads them, other readers of the manifest do not), nested
    at most MAX_DEPTH deep. Walked with a stack, not recursion: a value nested hundreds deep that json still reads
    would otherwise end in a RecursionError here, or when the manifest is written back."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"must nest at most {MAX_DEPTH} deep"
        if isinstance(item, float) and not math.isfinite(item):
            return "must hold no NaN or infinity (they are not JSON)"
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return None


def _plain_file(value: object) -> str | None:
    return None if is_plain_name(value) else "must be a plain file name in the folder"


# Each entry's fields (an accuracy None: the figure is unknown). Fields this version does not know (a newer one's)
# are kept, if they are JSON.
_ENTRY: dict[str, Check] = {
    "file": _plain_file,
    "format": lambda v: choice(tuple(FORMATS))(v),  # read when checked: the table is the one truth
    "quantization": choice(QUANTIZATIONS),
    "arch": text(),
    "size_bytes": int_in(0),
    "sha256": text(),
    "test_accuracy": optional(number_in()),
    "checkpoint_test_accuracy": optional(number_in()),
    "command": text(MAX_MANIFEST_BYTES),  # the manifest's own bound: a long command line is still a command line
    "parity": map_of(text(), _json),
}
_REQUIRED = ("file", "format", "quantization")


def validate_manifest(manifest: object, where: str) -> dict[str, Any]:
    """MANIFEST if it is a well-formed mnist-edge manifest, else a MnistEdgeError naming WHERE and the problem."""
    problem = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        problem = "not a mnist-edge manifest (no 'artifacts' list)"
    elif manifest.get("default") is not None and not is_plain_name(manifest["default"]):
        problem = f"default {manifest['default']!r} is not a plain file name"
    else:
        seen: set[str] = set()
        for index, entry in enumerate(manifest["artifacts"]):
            if (problem := fields_problem(entry, _ENTRY, _REQUIRED, extra=_json)) is not None:
                problem = f"artifact {index} {problem}"
                break
            if entry["file"] in seen:
                problem = f"lists {entry['file']!r} twice"
                break
            seen.add(entry["file"])
    if problem is not None:
        raise MnistEdgeError(f"{where}: {problem}; fix or remove it")
    return manifest  # type: ignore[return-value]


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, validated; an empty one when there is none yet."""
    path = folder / MANIFEST
    if not path.exists():
        return {"default": None, "artifacts": []}
    try:
        manifest = json.loads(_read_small_file(path))
    except (OSError, ValueError) as exc:
        raise MnistEdgeError(f"{path}: unreadable manifest ({exc}); fix or remove it") from None
    except RecursionError:  # arrays nested thousands deep: json gives up, and no manifest looks like that
        raise MnistEdgeError(f"{path}: unreadable manifest (nested too deep); fix or remove it") from None
    return validate_manifest(manifest, str(path))


def _read_small_file(path: Path) -> bytes:
    """PATH's bytes if it is a regular file of at most MAX_MANIFEST_BYTES, else OSError or ValueError: a FIFO would
    block the open and the read forever, /dev/zero or a huge file would fill memory."""
    with open_regular(path) as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"over {MAX_MANIFEST_BYTES:,} bytes")
    return data


@contextmanager
def manifest_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's manifest lock: an exclusive flock on LOCK, released when the block ends (or the
    process dies). Not re-entrant: code holding it calls merged/manifest_text, never update_manifest."""
    import fcntl  # POSIX only; the edge side never updates manifests, so predict still imports anywhere

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistEdgeError(f"{folder / LOCK}: cannot create the manifest lock ({exc.strerror or exc})") from None
    fd = open_lock_file(folder / LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merged(
    folder: Path, manifest: dict[str, Any], entries: list[dict[str, Any]], default: str | None = None
) -> dict[str, Any]:
    """MANIFEST with ENTRIES added or replaced (keyed by file name), entries whose file is gone dropped, and
    DEFAULT, if given, the default model. The default changes only when asked: a default whose file is gone
    becomes None rather than silently another model."""
    validate_manifest({"default": default, "artifacts": entries}, "new manifest entries")
    new_files = {e["file"] for e in entries}
    kept = [a for a in manifest["artifacts"] if a["file"] not in new_files and (folder / a["file"]).is_file()]
    artifacts = sorted(kept + entries, key=lambda a: a["file"])
    present = {a["file"] for a in artifacts}
    chosen = default if default is not None else manifest.get("default")
    if default is not None and default not in new_files:
        raise ValueError(f"default {default!r} is not among the new entries")  # a bug in the caller
    return {"default": chosen if chosen in present else None, "artifacts": artifacts}


def manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps({"default": manifest["default"], "artifacts": manifest["artifacts"]}, indent=2) + "\n"


def update_manifest(folder: Path, entries: list[dict[str, Any]], default: str | None = None) -> Path:
    """Add or replace ENTRIES in FOLDER's manifest and, if given, make DEFAULT the default model, under the lock."""
    path = folder / MANIFEST
    with manifest_lock(folder):
        manifest = merged(folder, read_manifest(folder), entries, default)
        try:
            write_text(path, manifest_text(manifest))
        except OSError as exc:
            raise MnistEdgeError(f"{path}: cannot write the manifest ({exc.strerror or exc})") from None
    return path


def default_model_path() -> Path:
    """The model the shipped manifest names as default, from the wheel or the checkout."""
    for folder in SHIPPED_DIRS:
        if not (folder / MANIFEST).is_file():
            continue
        try:
            default = read_manifest(folder).get("default")
        except MnistEdgeError as exc:
            raise MnistEdgeError(f"{exc}, or pass --model FILE") from None
        if default is None:
            raise MnistEdgeError(f"{folder / MANIFEST}: names no default model; pass --model FILE")
        return folder / default
    raise MnistEdgeError(
        f"no model is shipped with this install (no {MANIFEST} in {' or '.join(map(str, SHIPPED_DIRS))}); pass "
        "--model FILE"
    )
