"""Numbers that mean what they say on the command line: schema.py's `integer` and `number`, the one range check of
every numeric flag, TrainConfig field and checkpoint field, as a typer option callback, so a bad flag is refused while
the command line is parsed, before any work starts. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import typer

from mnist_edge.errors import MnistEdgeError
from mnist_edge.schema import integer, number


def bounded(
    low: float, high: float = math.inf, *, low_open: bool = False
) -> Callable[[typer.Context, typer.CallbackParam, Any], Any]:
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
