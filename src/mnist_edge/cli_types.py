"""Number options that mean what they say: one validator for every numeric flag of every command.

A float flag must be finite (`nan` compares false with every bound, so a range check alone would let it switch
a check off) and inside its range; an int flag inside its range (Python ints have no overflow to stop
`--seed 2**70`). Both are refused while the command line is parsed, before any work starts. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import typer

N = TypeVar("N", int, float)


def bounded(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[N | None], N | None]:
    """A typer option callback accepting None (not given) or a finite number in [LO, HI] ((LO, HI] with LO_OPEN);
    anything else is a usage error naming the option and the range."""
    low = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
    high = "" if hi is None else f"{hi:g}]"
    wanted = f"a finite number in {low or '(-inf'}, {high or 'inf)'}"

    def check(value: N | None) -> N | None:
        if value is None:
            return None
        if (
            not math.isfinite(value)
            or (lo is not None and (value <= lo if lo_open else value < lo))
            or (hi is not None and value > hi)
        ):
            raise typer.BadParameter(f"expected {wanted}, got {value}")
        return value

    return check
