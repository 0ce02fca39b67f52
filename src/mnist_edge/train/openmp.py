"""OpenMP's wait policy for training, set before torch loads OpenMP (this module imports no torch)."""

from __future__ import annotations

import os


def spin_briefly() -> None:
    """Idle OpenMP threads spin about 10k polls (microseconds), then sleep. A long spin takes the cores other
    processes (and our own other threads) need on a shared machine; sleeping at once (OMP_WAIT_POLICY=PASSIVE)
    costs a wake-up between every two small ops of a step. A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
