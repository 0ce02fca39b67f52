"""The command an export records in its manifest: the flags it was given, and no absolute path of this machine."""

from __future__ import annotations

import shlex
from pathlib import Path

from mnist_edge.formats import CALIBRATION_SIZE


def portable(path: Path) -> str:
    """PATH as a manifest may record it: relative as given, an absolute path relative to the working folder
    when inside it, else only its name (a machine's absolute paths mean nothing on another)."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def export_command(
    checkpoint: Path,
    out: Path,
    data_dir: Path | None,
    formats: list[str],
    quantizations: list[str],
    *,
    limit: int | None = None,
    calibration_size: int = CALIBRATION_SIZE,
    tolerances: dict[str, float] | None = None,
    make_default: bool = False,
) -> str:
    """`mnist-edge export` with the flags that differ from the defaults. An absolute --data-dir is written as
    $MNIST_EDGE_DATA, the variable that points any machine at its copy. TOLERANCES: verify.Tolerances fields."""
    options = [*(a for f in formats for a in ("--format", f)), *(a for q in quantizations for a in ("--quantize", q))]
    given = {
        "--limit": limit,
        "--calibration-size": None if calibration_size == CALIBRATION_SIZE else calibration_size,
        **{"--" + name.replace("_", "-"): value for name, value in (tolerances or {}).items()},
    }
    options += [a for flag, value in given.items() if value is not None for a in (flag, f"{value:g}")]
    options += ["--make-default"] if make_default else []
    command = shlex.join(["mnist-edge", "export", portable(checkpoint), *options, "--out", portable(out)])
    if data_dir is not None:
        command += " --data-dir " + ("$MNIST_EDGE_DATA" if data_dir.is_absolute() else shlex.quote(str(data_dir)))
    return command
