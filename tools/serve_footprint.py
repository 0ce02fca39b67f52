"""What an ASGI/HTTP stack costs a Raspberry Pi: the stack `mnist-edge serve` uses against the usual alternatives.

For each stack, a fresh virtual environment gets it from the package index (pip, the versions it resolves
today); then the tool prints the size the stack adds to site-packages, and the resident memory and time of a
fresh interpreter importing what serving needs (median of --runs). Sizes are this machine's wheels (x86-64);
a Pi's aarch64 wheels are within a few percent for these pure-Python-plus-small-C packages.

usage: python tools/serve_footprint.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from _toolcli import Parser, run

STACKS = {
    "starlette + uvicorn + httptools + python-multipart (serve's)": (
        ["starlette", "uvicorn", "httptools", "python-multipart"],
        "import uvicorn, python_multipart, starlette.applications, starlette.routing, starlette.requests, "
        "starlette.responses",
    ),
    "fastapi + uvicorn + httptools + python-multipart": (
        ["fastapi", "uvicorn", "httptools", "python-multipart"],
        "import uvicorn, python_multipart, fastapi",
    ),
    "aiohttp": (["aiohttp"], "import aiohttp.web"),
}
MEASURE = """
import time, sys
begin = time.perf_counter()
exec(sys.argv[1])
took = time.perf_counter() - begin
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(took, rss)
"""


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


def main() -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare"
        subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
        python = bare / "bin" / "python"
        baseline_rss = statistics.median(
            float(
                subprocess.run(
                    [python, "-c", MEASURE, "pass"], capture_output=True, text=True, check=True
                ).stdout.split()[1]
            )
            for _ in range(args.runs)
        )
        baseline_size = size(site_packages(bare))
        print(
            f"| stack | adds to site-packages | import RSS (bare Python: {baseline_rss / 1024:.1f} MiB) | import time |"
        )
        print("| --- | ---: | ---: | ---: |")
        for k, (name, (packages, imports)) in enumerate(STACKS.items()):
            venv = Path(tmp) / f"stack{k}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([venv / "bin" / "pip", "install", "-q", *packages], check=True)
            runs = [
                subprocess.run(
                    [venv / "bin" / "python", "-c", MEASURE, imports], capture_output=True, text=True, check=True
                ).stdout.split()
                for _ in range(args.runs)
            ]
            took = statistics.median(float(t) for t, _ in runs)
            rss = statistics.median(float(r) for _, r in runs)
            added = size(site_packages(venv)) - baseline_size
            print(f"| {name} | {added / 1e6:.1f} MB | {rss / 1024:.1f} MiB | {took * 1e3:.0f} ms |")
    return 0


if __name__ == "__main__":
    run(main)
