"""One checker for untrusted mappings: a checkpoint's metadata and training state, the recipe it stores, a manifest's
entries. Each field has a Check; `check_fields` refuses a value that is no mapping, has keys its schema does not know
or lacks required ones, or holds a field its Check refuses, in one line naming the field and what it must be.

`integer` and `number` are the one range check of every number, here and in every numeric flag (cli/checks.py) and
TrainConfig field: a bool is no number, a float must be finite (`nan` compares false with every bound, so a range
check alone would let it switch a check off) and an int must fit a float's range and the bounds (Python ints have no
overflow to stop `--seed 2**70`). Torch-free and typer-free: the edge side reads manifests with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mnist_edge.errors import MnistEdgeError, mismatch

# A field's check: None when VALUE passes, else what is wrong, as the end of a sentence ("must be a whole number ...").
Check = Callable[[Any], str | None]
MAX_INT = 2**63 - 1  # the default upper bound: what torch and numpy store in an int64
MAX_TEXT = 4096  # a string field's default bound in characters: far above any name, path or version


def shown(value: Any) -> str:
    """VALUE in a message: a scalar's repr, a container's type. An int of more than 1000 bits is told by its size:
    its repr could flood a terminal, and Python refuses to print one of more than 4300 digits at all."""
    if isinstance(value, int) and value.bit_length() > 1000:
        return f"an int of {value.bit_length():,} bits"
    return repr(value) if isinstance(value, (type(None), bool, int, float, str, bytes)) else type(value).__name__


def _finite(value: Any) -> bool:
    """An int or float that a float can hold and that is neither NaN nor infinite (a bool is no number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float: every use of it as a number would overflow
        return False


def _int_problem(value: Any, low: int, high: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be a whole number from {low:,} to {high:,}"
    return None


def _number_problem(value: Any, low: float, high: float, low_open: bool) -> str | None:
    if _finite(value) and (low < value if low_open else low <= value) and value <= high:
        return None
    bound = f"above {low:g}" if low_open else f"at least {low:g}"
    return f"must be a finite number {bound} and at most {high:g}"


def integer(name: str, value: Any, low: int, high: int) -> int:
    """VALUE as an int in [LOW, HIGH], else one line naming NAME."""
    if (problem := _int_problem(value, low, high)) is not None:
        raise MnistEdgeError(f"{name} {shown(value)}: {problem}")
    return value


def number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """VALUE as a finite float in [LOW, HIGH] (or (LOW, HIGH] if LOW_OPEN), else one line naming NAME."""
    if (problem := _number_problem(value, low, high, low_open)) is not None:
        raise MnistEdgeError(f"{name} {shown(value)}: {problem}")
    return float(value)


# --- field checks -------------------------------------------------------------------------------------------


def int_in(low: int = 0, high: int = MAX_INT) -> Check:
    return lambda v: _int_problem(v, low, high)


def number_in(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False) -> Check:
    return lambda v: _number_problem(v, low, high, low_open)


def anything(value: Any) -> str | None:
    """Every value passes: for a field whose own reader checks it (a recipe, an optimizer's state)."""
    return None


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def text(limit: int = MAX_TEXT) -> Check:
    return lambda v: (
        None if isinstance(v, str) and len(v) <= limit else f"must be a string of at most {limit:,} characters"
    )


def choice(options: Sequence[str]) -> Check:
    # the isinstance first: `in` compares with ==, which an array or tensor answers element-wise
    return lambda v: None if isinstance(v, str) and v in options else f"must be one of {', '.join(options)}"


def optional(check: Check) -> Check:
    """CHECK, or None (the figure is unknown)."""
    return lambda v: None if v is None else check(v)


def list_of(check: Check, limit: int, at_least: int = 0) -> Check:
    """A list of AT_LEAST to LIMIT items, each passing CHECK."""

    def problem(value: Any) -> str | None:
        if not isinstance(value, list) or not at_least <= len(value) <= limit:
            return f"must be a list of {at_least:,} to {limit:,} items"
        return next((f"item {i} {why}" for i, item in enumerate(value) if (why := check(item)) is not None), None)

    return problem


def map_of(keys: Check = anything, values: Check = anything, limit: int = MAX_INT) -> Check:
    """A mapping of at most LIMIT entries, each key passing KEYS and each value VALUES."""

    def problem(value: Any) -> str | None:
        if not isinstance(value, dict) or len(value) > limit:
            return "must be a mapping" + (f" of at most {limit:,} entries" if limit < MAX_INT else "")
        for key, item in value.items():
            if (why := keys(key)) is not None:
                return f"key {shown(key)[:40]} {why}"
            if (why := values(item)) is not None:
                return f"{shown(key)[:40]} {why}"
        return None

    return problem


# --- whole mappings -----------------------------------------------------------------------------------------


def fields_problem(
    value: Any, checks: Mapping[str, Check], required: Sequence[str] = (), extra: Check | None = None
) -> str | None:
    """What is wrong with VALUE as a mapping of CHECKS' fields, REQUIRED among them, as the end of a sentence ("has a
    bad 'seed' (-1): must be ..."); None when nothing is. Keys CHECKS does not name are refused, unless EXTRA checks
    them (a newer version's fields, kept by an older one)."""
    if not isinstance(value, dict):
        name = type(value).__name__
        return f"is {'an' if name[0] in 'aeiou' else 'a'} {name}, not a mapping"
    unknown = [] if extra is not None else sorted(map(str, set(value) - set(checks)))
    missing = [key for key in required if key not in value]
    if unknown or missing:
        return f"does not fit this mnist-edge ({mismatch(unknown[:5], missing)})"
    for key, item in value.items():
        check = checks.get(key, extra)
        if check is not None and (why := check(item)) is not None:
            return f"has a bad {shown(key)[:40]} ({shown(item)[:80]}): {why}"
    return None


def check_fields(
    where: str,
    what: str,
    value: Any,
    checks: Mapping[str, Check],
    required: Sequence[str] = (),
    extra: Check | None = None,
) -> dict[str, Any]:
    """VALUE if fields_problem finds nothing wrong with it, else one MnistEdgeError "WHERE: WHAT <the problem>"."""
    if (problem := fields_problem(value, checks, required, extra)) is not None:
        raise MnistEdgeError(f"{where}: {what} {problem}")
    return value
