"""mnist-edge: train the reference MNIST notebooks' models, export them, verify them, predict at the edge."""

import os

__version__ = "0.1.0"

# ONNX Runtime (1.32) writes a telemetry database under ~/.cache/Microsoft on import, creating a missing home
# folder, and warns where home is read-only (systemd's ProtectHome). A digit reader stores and sends nothing of
# the kind: this is its only switch, read once, when the library loads; set before any of this package loads it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
