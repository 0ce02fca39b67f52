"""Images/s of one `tiny` epoch: the notebook's pipeline vs `mnist-edge train`, side by side in one run.

Both are timed as whole processes (start-up, data loading, one training epoch, the test pass):
  notebook:   torchvision MNIST + per-sample PIL RandomAffine/ColorJitter/ToTensor/Normalize + DataLoader
              (num_workers=0, as the notebook runs on a CPU), the same network with torch's own dropout layers
              (the notebook's; mnist-edge draws dropout masks with numpy, see src/mnist_edge/train/dropout.py),
              SGD, batch 128
  mnist-edge: `mnist-edge train --arch tiny --epochs 1 --device cpu`
Usage: python tools/bench_train.py [--images N] [--repeat R] [--threads T] [--data-dir DIR]
--threads sets OMP_NUM_THREADS for both: on a machine busy with other work, torch's default (one thread per
core) makes OpenMP threads spin against the other load and both figures collapse; 1 thread each stays fair.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from _toolcli import Parser, run

ARCH = "tiny"


def notebook_epoch(data_dir: Path, images: int) -> None:
    """One epoch the way notebook 004 trains, then its test pass (runs in a child process)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from mnist_edge.train.architectures import arch_info, create_model
    from mnist_edge.train.dropout import Dropout
    from mnist_edge.spec import MNIST_MEAN, MNIST_STD

    recipe = arch_info(ARCH).recipe
    torch.manual_seed(recipe.seed)
    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "MNIST" / "raw"  # torchvision reads the decompressed IDX files from ROOT/MNIST/raw
        raw.mkdir(parents=True)
        for gz in data_dir.glob("*-ubyte.gz"):
            (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
        normalize = transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))
        train_tf = transforms.Compose(
            [
                transforms.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                transforms.ColorJitter(brightness=0.2, contrast=0.2),
                transforms.ToTensor(),
                normalize,
            ]
        )
        test_tf = transforms.Compose([transforms.ToTensor(), normalize])
        train_set = Subset(datasets.MNIST(root, train=True, transform=train_tf), range(images))
        test_set = Subset(datasets.MNIST(root, train=False, transform=test_tf), range(min(images, 10_000)))
        train_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True)
        test_loader = DataLoader(test_set, batch_size=1000)
        net = create_model(ARCH).net  # the bare network: Normalize is in the transforms, as in the notebook
        for module in list(net.modules()):
            for name, child in module.named_children():
                if isinstance(child, Dropout):
                    setattr(module, name, torch.nn.Dropout(child.p))  # the notebook's layer
        optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        net.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.nll_loss(F.log_softmax(net(x), dim=1), y)
            loss.backward()
            optimizer.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((net(x)[:, :10].argmax(1) == y).sum())  # an open-set net has an 11th output
        print(f"notebook pipeline: test accuracy {100 * correct / len(test_set):.2f}%", file=sys.stderr)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60_000, help="training images per epoch (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the two pipelines R times; best of each")
    parser.add_argument("--threads", type=int, help="torch threads in both pipelines (default: torch's choice)")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MNIST_EDGE_DATA"))
    parser.add_argument("--notebook-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("give --data-dir DIR (the four MNIST IDX .gz files) or set MNIST_EDGE_DATA")
    if args.notebook_child:
        notebook_epoch(args.data_dir, args.images)
        return

    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    import torch

    # both pipelines on the same threads (train's default follows the load)
    threads = args.threads or torch.get_num_threads()
    notebook_cmd = [
        sys.executable, __file__, "--notebook-child", "--images", str(args.images), "--data-dir", str(args.data_dir),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ours_cmd = [
            sys.executable, "-m", "mnist_edge", "train", "--arch", ARCH, "--epochs", "1", "--device", "cpu",
            "--limit", str(args.images), "--data-dir", str(args.data_dir), "--out", str(Path(tmp) / "bench.pt"),
            "--overwrite", "--threads", str(threads),
        ]  # fmt: skip
        notebook_s, ours_s = [], []
        for _ in range(args.repeat):
            notebook_s.append(timed(notebook_cmd, env))
            ours_s.append(timed(ours_cmd, env))
    notebook_ips, ours_ips = args.images / min(notebook_s), args.images / min(ours_s)
    print(
        f"{ARCH}, one epoch of {args.images:,} images + test pass, whole process, {threads} threads, best of "
        f"{args.repeat}"
    )
    print(f"notebook pipeline (torchvision + PIL + DataLoader): {min(notebook_s):7.1f} s  {notebook_ips:8,.0f} img/s")
    print(f"mnist-edge train (in-memory, batched augmentation): {min(ours_s):7.1f} s  {ours_ips:8,.0f} img/s")
    print(f"ratio: {ours_ips / notebook_ips:.2f}x")


if __name__ == "__main__":
    run(main)
