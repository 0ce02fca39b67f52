"""Range checks for training numbers, shared by the command line, the library API and checkpoint loading.

A value that would train a NaN model, overflow a seed or allocate without bound is refused with one line
naming it, wherever it comes from: a flag, a TrainConfig, or the recipe stored in an untrusted checkpoint.
Every recipe field has one Check (schema.py) that all three go through.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mnist_edge.errors import MnistEdgeError
from mnist_edge.schema import Check, boolean, check_fields, choice, int_in, number_in, shown, text
from mnist_edge.train.recipes import AUGMENTATIONS, SCHEDULES, Recipe

OPTIMIZERS = ("sgd", "adam")
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0  # far above any recipe's; larger only diverges
MAX_SEED = 2**32 - 1  # numpy's and every seeded tool's range; torch's rank offset stays far from its limit

_RULES: dict[str, Check] = {
    "optimizer": choice(OPTIMIZERS),
    "lr": number_in(0.0, MAX_LR, low_open=True),
    "momentum": number_in(0.0, 1.0),
    "epochs": int_in(1, MAX_EPOCHS),
    "batch_size": int_in(1, MAX_BATCH_SIZE),
    "seed": int_in(0, MAX_SEED),
    "schedule": choice(SCHEDULES),
    "augmentation": choice(AUGMENTATIONS),
    "label_smoothing": number_in(0.0, 1.0),
    "weight_decay": number_in(0.0, 1.0),
    "warmup": number_in(0.0, 0.49),  # a fraction of the steps; below half, at least one step anneals
}
# Fields without a rule of their own are checked by their declared type (numbers finite and >= 0), so a field added to
# Recipe is covered from the start; one of another type stops this import until it is given a rule.
_BY_TYPE: dict[str, Check] = {"bool": boolean, "str": text(), "float": number_in(0.0), "int": int_in(0)}
RECIPE_FIELDS: dict[str, Check] = {
    f.name: _RULES.get(f.name) or _BY_TYPE[f.type if isinstance(f.type, str) else f.type.__name__]
    for f in dataclasses.fields(Recipe)
}


def check_recipe(recipe: Recipe) -> Recipe:
    """RECIPE if every field is a sane value, else one line naming its flag ("--lr 0.0: must be ...")."""
    for name, check in RECIPE_FIELDS.items():
        value = getattr(recipe, name)
        if (problem := check(value)) is not None:
            raise MnistEdgeError(f"--{name.replace('_', '-')} {shown(value)}: {problem}")
    _check_combination(recipe, "--")
    return recipe


def _check_combination(recipe: Recipe, prefix: str) -> None:
    """Fields that are each sane but that torch's optimizers refuse together (a ValueError deep in set-up), or that
    the optimizer would silently ignore: SGD's Nesterov needs a momentum; Adam has neither momentum nor Nesterov."""
    if recipe.optimizer == "sgd" and recipe.nesterov and recipe.momentum <= 0:
        raise MnistEdgeError(f"{prefix}nesterov needs a momentum above 0 (the recipe's is {recipe.momentum:g})")
    if recipe.optimizer == "adam" and (recipe.momentum or recipe.nesterov):
        raise MnistEdgeError(f"{prefix}optimizer adam takes no momentum and no nesterov (SGD's settings)")


def recipe_from_dict(values: Any, where: str) -> Recipe:
    """The Recipe a checkpoint stores as a dict: exactly Recipe's fields, each a sane value; else one line
    starting "WHERE: recipe "."""
    # a field added since the checkpoint was written takes its default, which is what training did before it existed
    required = [f.name for f in dataclasses.fields(Recipe) if f.default is dataclasses.MISSING]
    recipe = Recipe(**check_fields(where, "recipe", values, RECIPE_FIELDS, required))
    _check_combination(recipe, f"{where}: recipe ")
    return recipe
