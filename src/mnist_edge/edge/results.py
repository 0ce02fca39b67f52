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
    """An answer: a digit with its probability, or "not a digit" (digit and probability None). TOP keeps the
    digits the image resembles either way; NOT_DIGIT is the score that decided (None for a model that cannot
    refuse)."""

    file: str
    digit: int | None
    probability: float | None
    top: list[tuple[int, float]] = field(default_factory=list)  # (digit, probability), most likely first
    not_digit: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "digit": self.digit, "probability": self.probability, "top": [
            {"digit": digit, "probability": p} for digit, p in self.top
        ], "not_digit": self.not_digit}

    def line(self, name: str) -> str:
        """What `predict` prints for this answer about the image called NAME."""
        if self.digit is None:
            return f"{name}: not a digit" + (f"  (closest: {self.top[0][0]})" if self.top else "")
        ranked = ", ".join(f"{digit} {p:.1%}" for digit, p in self.top[1:])
        return f"{name}: {self.digit} ({self.probability:.1%})" + (f"  then {ranked}" if ranked else "")

    def as_digit(self) -> Prediction:
        """This answer with its most likely digit even where the model said "not a digit" (--always-digit)."""
        if self.digit is not None or not self.top:
            return self
        return Prediction(self.file, self.top[0][0], self.top[0][1], self.top, self.not_digit)


@dataclass(frozen=True)
class Failure:
    file: str
    error: str  # one line, naming the file

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error}


Result = Prediction | Failure
