"""The result objects `predict --json` prints (and how many CPUs this process may use), kept apart from predict.py
and runtime.py because those load ONNX Runtime, which the server's HTTP process never does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, containers), not all the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Prediction:
    file: str
    digit: int
    probability: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (digit, probability), most likely first

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "digit": self.digit, "probability": self.probability, "top": [
            {"digit": digit, "probability": p} for digit, p in self.top
        ]}


@dataclass(frozen=True)
class Failure:
    file: str
    error: str  # one line, naming the file

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error}


Result = Prediction | Failure
