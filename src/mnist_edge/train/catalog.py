"""What `mnist-edge models` reports about each registered architecture."""

from __future__ import annotations

from typing import Any

from mnist_edge.train.architectures import arch_info, count_macs, count_params, create_model, list_models


def describe_models() -> list[dict[str, Any]]:
    rows = []
    for name in list_models():
        info, model = arch_info(name), create_model(name)
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "macs": count_macs(model),
                "notebook": info.notebook,
                "reported_accuracy": info.reported_accuracy,
                "description": info.description,
                "normalize": info.normalize,
                "recipes": {name: recipe.as_dict() for name, recipe in info.recipes.items()},
            }
        )
    return rows
