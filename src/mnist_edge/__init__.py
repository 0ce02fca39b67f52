"""mnist-edge: train the reference MNIST notebooks' models, export them, verify them, predict at the edge."""

__version__ = "0.1.0"
