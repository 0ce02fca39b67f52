"""Reproduce every notebook: train each architecture with its default (notebook) recipe, then print the
table in docs/training.md (arch, params, MACs, notebook accuracy, ours, epochs, wall time, device).

Checkpoints go to OUT_DIR/ARCH.pt; a finished one is reused, so rerunning only trains what is missing
(an interrupted run resumes). Exits non-zero when an architecture lands below its floor.

usage: python tools/reproduce.py --data-dir DIR [--out-dir runs] [--arch NAME ...] [--markdown FILE] [--table-only]
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from mnist_edge.train.architectures import arch_info, create_model, list_models
from mnist_edge.train.cost import count_macs, count_params
from mnist_edge.train.recipes import Recipe
from mnist_edge.atomic import write_text
from mnist_edge.train.checkpoint import load_checkpoint
from _toolcli import Parser, run, summary

# What each reproduction must reach on the 10k test digits (percent). twoblock's notebook reported 97.93%
# because its test pass skipped the /255 scaling its training used; 98.9% is what the recipe earns. edgenet's
# floor is for one run: its 99.6% floor is for the mean of three seeds (tools/seed_summary.py), whose runs landed
# 0.06 points apart.
FLOORS = {
    "basic": 98.8, "inception": 98.88, "wide": 99.0, "convstack": 97.99, "twoblock": 98.9, "tiny": 99.45,
    "edgenet": 99.5,
}


def train(arch: str, data_dir: Path | None, out: Path) -> None:
    """Train ARCH into OUT (resuming a partial checkpoint) unless OUT already holds the full recipe."""
    command = [sys.executable, "-m", "mnist_edge", "train", "--out", str(out)]
    recipe = arch_info(arch).recipe
    if out.exists():
        meta = load_checkpoint(out).meta
        if dataclasses.replace(Recipe(**meta["recipe"]), epochs=recipe.epochs) != recipe:
            sys.exit(f"{arch}: {out} was trained with another recipe; move it away to retrain")
        if meta["epochs_done"] >= recipe.epochs:
            print(f"{arch}: {out} is complete, reusing it", flush=True)
            return
        command += ["--resume", str(out), "--epochs", str(recipe.epochs)]
    else:
        command += ["--arch", arch]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    print("$ mnist-edge " + " ".join(command[3:]), flush=True)
    if subprocess.run(command).returncode:
        sys.exit(f"{arch}: training failed (see above)")


def table(archs: list[str], out_dir: Path) -> tuple[str, list[str]]:
    """The markdown table, and the architectures below their floor (or not trained)."""
    lines = [
        "| arch | params | MACs/image | notebook reported | floor | ours | recipe | epochs | wall time | device |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    short = []
    for arch in archs:
        info, model = arch_info(arch), create_model(arch)
        reported = f"{info.reported_accuracy:.2f}%" if info.reported_accuracy is not None else "-"
        path = out_dir / f"{arch}.pt"
        if path.exists():
            meta = load_checkpoint(path).meta
            ours, epochs = f"{meta['test_accuracy']:.2f}%", str(meta["epochs_done"])
            trained = dataclasses.replace(Recipe(**meta["recipe"]), epochs=info.recipe.epochs)
            recipe = next((name for name, r in info.recipes.items() if r == trained), "custom")
            wall, device = f"{meta['wall_time_s'] / 60:.1f} min", meta["device"]
            if meta["test_accuracy"] < FLOORS[arch] or meta["epochs_done"] < info.recipe.epochs:
                short.append(arch)
        else:
            ours = recipe = epochs = wall = device = "-"
            short.append(arch)
        lines.append(
            f"| {arch} | {count_params(model):,} | {count_macs(model):,} | {reported} | {FLOORS[arch]:.2f}% "
            f"| {ours} | {recipe} | {epochs} | {wall} | {device} |"
        )
    return "\n".join(lines) + "\n", short


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX folder (default: $MNIST_EDGE_DATA or download)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs"), help="where the checkpoints go (default: runs)")
    parser.add_argument("--arch", action="append", choices=list_models(), help="only these (repeatable; default: all)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--table-only", action="store_true", help="train nothing; tabulate the checkpoints there are")
    args = parser.parse_args()
    archs = args.arch or list_models()
    if not args.table_only:
        for arch in archs:
            train(arch, args.data_dir, args.out_dir / f"{arch}.pt")
    text, short = table(archs, args.out_dir)
    print(text, end="")
    if args.markdown:
        write_text(args.markdown, text)
    if short:
        sys.exit(f"below the floor or not fully trained: {', '.join(short)}")


if __name__ == "__main__":
    run(main)
