"""Rebuild one model's files in exported/ from a data folder: train the architecture with its default
recipe (seeded, so the same CPU gives the same weights), ship its checkpoint, export ONNX fp32, ONNX static
int8 and TorchScript (with --tflite, LiteRT fp32 and static int8 too) through `mnist-edge export` (each verified
on the 10k test digits), make the int8 ONNX the default model (unless --keep-default: how `tiny`, shipped beside
the default `edgenet`, is rebuilt), and say how long it took.

usage: python tools/rebuild_exported.py --data-dir DIR [--arch edgenet] [--checkpoint FILE] [--work-dir runs]
                                       [--keep-default] [--tflite]

The same seed and thread count give the same weights on the same CPU. The shipped tiny was trained on one thread
before dropout masks came from numpy (src/mnist_edge/dropout.py): retraining it now gives other weights of the same
recipe. The shipped edgenet was trained on two threads (about 12 minutes on this project's 2-core machine).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from reproduce import train  # tools/ is on sys.path when this script runs

from mnist_edge.train.architectures import list_models
from mnist_edge.train.checkpoint import load_checkpoint, save_checkpoint
from mnist_edge.export.publish import checkpoint_entry
from mnist_edge.edge.manifest import update_manifest
from _toolcli import Parser, run, summary

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = Path("exported")  # relative to ROOT, so the manifest records a command that works in any checkout


def ship_checkpoint(source: Path, target: Path, command: str) -> None:
    """Copy the weights and metadata, not the optimizer/RNG state a user has no use for, and list it."""
    ckpt = load_checkpoint(source)
    save_checkpoint(target, ckpt.model, ckpt.meta)
    update_manifest(target.parent, [checkpoint_entry(target, ckpt, command)])


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX folder (default: $MNIST_EDGE_DATA or download)")
    parser.add_argument("--arch", default="edgenet", choices=list_models())
    parser.add_argument("--keep-default", action="store_true", help="leave the manifest's default model as it is")
    parser.add_argument("--checkpoint", type=Path, help="ship this trained checkpoint instead of training one")
    parser.add_argument(
        "--tflite", action="store_true", help="also the LiteRT .tflite files (needs mnist-edge[tflite])"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("runs"), help="where training writes (default: runs)")
    args = parser.parse_args()
    started = time.perf_counter()
    source = args.checkpoint
    if source is None:
        source = args.work_dir / f"{args.arch}.pt"
        train(args.arch, args.data_dir, source)
    data_dir = args.data_dir.resolve() if args.data_dir else None
    target = ROOT / EXPORTED / f"{args.arch}.pt"
    # The manifest records what reproduces the files on any machine: no path of this one.
    flags = [*(["--keep-default"] if args.keep_default else []), *(["--tflite"] if args.tflite else [])]
    command = shlex.join(["python", "tools/rebuild_exported.py", "--arch", args.arch, *flags])
    ship_checkpoint(source, target, command + (" --data-dir $MNIST_EDGE_DATA" if data_dir else ""))
    export = [
        sys.executable, "-m", "mnist_edge", "export", str(EXPORTED / target.name), "--format", "all",
        *(["--format", "tflite"] if args.tflite else []), "--quantize", "static", "--out", str(EXPORTED), "--force",
        *([] if args.keep_default else ["--make-default"]),
    ]
    if data_dir is not None:
        export += ["--data-dir", str(data_dir)]
    print("$ mnist-edge " + shlex.join(export[3:]), flush=True)
    if subprocess.run(export, cwd=ROOT).returncode:
        sys.exit("export failed (see above); exported/ keeps only the files that passed verification")
    print(f"rebuilt {ROOT / EXPORTED} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    run(main)
