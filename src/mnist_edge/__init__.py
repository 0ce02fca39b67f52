"""mnist-edge: train the reference MNIST notebooks' models, export them, verify them, predict at the edge.

The Python API (docs/api.md), loaded on first use so that `import mnist_edge` stays cheap and torch-free:
`load`, `Model`, `Prediction`, `Failure` (the edge side: numpy, Pillow, ONNX Runtime), `train_model`,
`export_model`, `verify_model` (the train side: torch, when called) and `MnistEdgeError`, which every one of them
raises for bad input.
"""

import importlib  # already loaded by Python itself: free, unlike `typing` (a few ms)
import os

__version__ = "0.1.0"

# ONNX Runtime (1.32) writes a telemetry database under ~/.cache/Microsoft on import, creating a missing home
# folder, and warns where home is read-only (systemd's ProtectHome). A digit reader stores and sends nothing of
# the kind: this is its only switch, read once, when the library loads; set before any of this package loads it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

# Each name of the API and the module that defines it.
_API = {
    "load": "mnist_edge.edge.api",
    "Model": "mnist_edge.edge.api",
    "Prediction": "mnist_edge.edge.results",
    "Failure": "mnist_edge.edge.results",
    "MnistEdgeError": "mnist_edge.errors",
    "train_model": "mnist_edge.api",
    "export_model": "mnist_edge.api",
    "verify_model": "mnist_edge.api",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name not in _API:
        raise AttributeError(f"module 'mnist_edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # found once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
