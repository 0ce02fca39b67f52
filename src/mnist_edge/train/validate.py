"""Range checks for training numbers, shared by the command line, the library API and checkpoint loading.

A value that would train a NaN model, overflow a seed or allocate without bound is refused with one line
naming it, wherever it comes from: a flag, a TrainConfig, or the recipe stored in an untrusted checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mnist_edge.train.recipes import AUGMENTATIONS, SCHEDULES, Recipe
from mnist_edge.cli_types import integer, number
from mnist_edge.errors import MnistEdgeError, mismatch

OPTIMIZERS = ("sgd", "adam")
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0  # far above any recipe's; larger only diverges
MAX_SEED = 2**32 - 1  # numpy's and every seeded tool's range; torch's rank offset stays far from its limit


def check_recipe(recipe: Recipe, where: str = "") -> Recipe:
    """RECIPE if every field is a sane value, else one line (prefixed by WHERE, e.g. a checkpoint's path).

    Fields without a rule of their own are checked by their declared type (numbers finite and >= 0), so a field
    added to Recipe is covered from the start.
    """
    prefix = f"{where}: recipe " if where else "--"
    number(f"{prefix}lr", recipe.lr, 0.0, MAX_LR, low_open=True)
    number(f"{prefix}momentum", recipe.momentum, 0.0, 1.0)
    integer(f"{prefix}epochs", recipe.epochs, 1, MAX_EPOCHS)
    integer(f"{prefix}batch-size", recipe.batch_size, 1, MAX_BATCH_SIZE)
    integer(f"{prefix}seed", recipe.seed, 0, MAX_SEED)
    if recipe.schedule not in SCHEDULES:
        raise MnistEdgeError(f"{prefix}schedule {recipe.schedule!r}: choose {' or '.join(SCHEDULES)}")
    if recipe.optimizer not in OPTIMIZERS:
        raise MnistEdgeError(f"{prefix}optimizer {recipe.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    if recipe.augmentation not in AUGMENTATIONS:
        raise MnistEdgeError(f"{prefix}augmentation {recipe.augmentation!r}: choose {' or '.join(AUGMENTATIONS)}")
    number(f"{prefix}label-smoothing", recipe.label_smoothing, 0.0, 1.0)
    number(f"{prefix}weight-decay", recipe.weight_decay, 0.0, 1.0)
    number(f"{prefix}warmup", recipe.warmup, 0.0, 0.49)  # a fraction of the steps; below half, at least one step anneals
    for f in dataclasses.fields(Recipe):
        name, value = f"{prefix}{f.name.replace('_', '-')}", getattr(recipe, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind == "bool" and not isinstance(value, bool):
            raise MnistEdgeError(f"{name} {value!r}: must be true or false")
        if kind == "str" and not isinstance(value, str):
            raise MnistEdgeError(f"{name} {value!r}: must be a name")
        if kind == "float":
            number(name, value, 0.0, math.inf if f.name != "lr" else MAX_LR)
        if kind == "int":
            integer(name, value, 0, 2**63 - 1)
    _check_combination(recipe, prefix)
    return recipe


def _check_combination(recipe: Recipe, prefix: str) -> None:
    """Fields that are each sane but that torch's optimizers refuse together (a ValueError deep in set-up), or that
    the optimizer would silently ignore: SGD's Nesterov needs a momentum; Adam has neither momentum nor Nesterov."""
    if recipe.optimizer == "sgd" and recipe.nesterov and recipe.momentum <= 0:
        raise MnistEdgeError(f"{prefix}nesterov needs a momentum above 0 (the recipe's is {recipe.momentum:g})")
    if recipe.optimizer == "adam" and (recipe.momentum or recipe.nesterov):
        raise MnistEdgeError(f"{prefix}optimizer adam takes no momentum and no nesterov (SGD's settings)")


def recipe_from_dict(values: Any, where: str) -> Recipe:
    """The Recipe a checkpoint stores as a dict: exactly Recipe's fields, each a sane value."""
    if not isinstance(values, dict):
        raise MnistEdgeError(f"{where}: recipe is a {type(values).__name__}, not a mapping")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    # a field added since the checkpoint was written takes its default, which is what training did before it existed
    required = {f.name for f in dataclasses.fields(Recipe) if f.default is dataclasses.MISSING}
    unknown, missing = sorted(set(values) - fields, key=str), sorted(required - set(values))
    if unknown or missing:
        raise MnistEdgeError(f"{where}: recipe does not fit this mnist-edge ({mismatch(unknown, missing)})")
    return check_recipe(Recipe(**values), where)
