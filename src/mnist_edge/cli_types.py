"""Numbers that mean what they say: the one range check for every numeric flag, TrainConfig field and checkpoint
field (validate.py re-exports it for training), and its form as a typer option callback.

A float must be finite (`nan` compares false with every bound, so a range check alone would let it switch a check
off) and inside its range; an int inside its range (Python ints have no overflow to stop `--seed 2**70`). Flags are
refused while the command line is parsed, before any work starts. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mnist_edge.errors import MnistEdgeError

N = TypeVar("N", int, float)


def integer(name: str, value: Any, low: int, high: int) -> int:
    """VALUE as an int in [LOW, HIGH], else one line naming NAME."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MnistEdgeError(f"{name} {value!r}: must be a whole number from {low:,} to {high:,}")
    return value


def number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """VALUE as a finite float in [LOW, HIGH] (or (LOW, HIGH] if LOW_OPEN), else one line naming NAME."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise MnistEdgeError(f"{name} {value!r}: must be a finite number {bound} and at most {high:g}")
    return float(value)


def bounded(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[typer.Context, typer.CallbackParam, Any], Any]:
    """A typer option callback: None (not given), or the option's value checked by `integer` (int options) or
    `number` (float options) against [LOW, HIGH]; anything else is a usage error naming the option."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is None:
            return None
        name = param.opts[0] if param.opts else str(param.name)
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return integer(name, value, int(low), int(high))
            return number(name, value, low, high, low_open=low_open)
        except MnistEdgeError as exc:
            raise typer.BadParameter(str(exc).removeprefix(f"{name} ")) from None

    return check
