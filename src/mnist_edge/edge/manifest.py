"""exported/manifest.json: which files a folder of exported models holds, and which one `predict` uses.

Export updates the manifest in place (entries for other files survive) and always through an atomic
rename, so a reader never sees a half-written manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mnist_edge.atomic import write_text
from mnist_edge.errors import MnistEdgeError

MANIFEST = "manifest.json"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The wheel carries exported/ inside the package; a checkout (editable install) has it at the repo root.
SHIPPED_DIRS = (_PACKAGE_DIR / "exported", _PACKAGE_DIR.parents[1] / "exported")

FORMATS = ("onnx", "torchscript", "checkpoint")
QUANTIZATIONS = ("none", "dynamic", "static")


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, or an empty one when there is none yet."""
    path = folder / MANIFEST
    if not path.exists():
        return {"default": None, "artifacts": []}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MnistEdgeError(f"{path}: unreadable manifest ({exc}); fix or remove it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise MnistEdgeError(f"{path}: not a mnist-edge manifest (no 'artifacts' list); fix or remove it")
    return manifest


def update_manifest(folder: Path, entries: list[dict[str, Any]], default: str | None = None) -> Path:
    """Add or replace ENTRIES (keyed by file name) and, if given, make DEFAULT the default model.

    A manifest without a default whose file still exists gets the first ONNX entry as default, so
    `predict` always has a model to use.
    """
    for entry in entries:
        if entry["format"] not in FORMATS or entry["quantization"] not in QUANTIZATIONS:
            raise ValueError(f"bad manifest entry {entry}")  # a bug in the caller, not a user error
    manifest = read_manifest(folder)
    new_files = {e["file"] for e in entries}
    kept = [a for a in manifest["artifacts"] if a.get("file") not in new_files and (folder / a.get("file", "")).is_file()]
    manifest["artifacts"] = sorted(kept + entries, key=lambda a: a["file"])
    present = {a["file"] for a in manifest["artifacts"]}
    if default is not None:
        manifest["default"] = default
    elif manifest.get("default") not in present:
        onnx = [e["file"] for e in entries if e["format"] == "onnx"]
        manifest["default"] = onnx[0] if onnx else None
    path = folder / MANIFEST
    write_text(path, json.dumps({"default": manifest["default"], "artifacts": manifest["artifacts"]}, indent=2) + "\n")
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
        if not isinstance(default, str) or not default:
            raise MnistEdgeError(f"{folder / MANIFEST}: names no default model; pass --model FILE")
        return folder / default
    raise MnistEdgeError(
        f"no model is shipped with this install (no {MANIFEST} in {' or '.join(map(str, SHIPPED_DIRS))}); pass --model FILE"
    )
