"""What `mnist-edge models` reports about each registered architecture, without torch.

The figures (parameters, multiply-accumulates, recipes) come from building every model, which needs torch; they
are kept in catalog.json beside this file, so listing the architectures works on the base install too.
tests/test_catalog.py checks the file against the registry; `python -m mnist_edge.train.catalog` rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CATALOG_FILE = Path(__file__).with_name("catalog.json")
# A human name for each reference notebook (../shared/seeds/README.md), shown instead of its file's id.
NOTEBOOK_TITLES = {
    "000_f69d7aa103122d14": "000: basic + Inception CNNs",
    "001_5728f5b63760230c": "001: wide CNN, dropout",
    "002_2128578c4b91858e": "002: nn.Sequential CNN",
    "003_046b4e35bb6cf4bf": "003: two conv blocks + FC",
    "004_fa5cafab2b41519e": "004: tiny CNN <20k params",
    "-": "- (designed here)",
}


def describe_models() -> list[dict[str, Any]]:
    """Every architecture's row, as `mnist-edge models --json` prints it (from catalog.json: no torch)."""
    return json.loads(CATALOG_FILE.read_text())


def compute_models() -> list[dict[str, Any]]:
    """The rows computed from the registry itself (imports torch): what catalog.json must hold."""
    from mnist_edge.train.architectures import arch_info, create_model, list_models
    from mnist_edge.train.cost import count_macs, count_params

    rows = []
    for name in list_models():
        info, model = arch_info(name), create_model(name)
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "macs": count_macs(model),
                "notebook": info.notebook,
                "notebook_title": NOTEBOOK_TITLES[info.notebook],
                "reported_accuracy": info.reported_accuracy,
                "description": info.description,
                "normalize": info.normalize,
                "recipes": {name: recipe.as_dict() for name, recipe in info.recipes.items()},
            }
        )
    return rows


def catalog_text(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


if __name__ == "__main__":  # after a change to the registry: python -m mnist_edge.train.catalog
    from mnist_edge.atomic import write_text

    write_text(CATALOG_FILE, catalog_text(compute_models()))
    print(f"wrote {CATALOG_FILE}")
