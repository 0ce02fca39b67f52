"""The torch-free edge side: open an exported model, prepare images, predict.

Everything in this package imports only the standard library, numpy, Pillow, ONNX Runtime and the
project's shared facts (`mnist_edge.spec`, `mnist_edge.errors`, `mnist_edge.atomic`), so it runs on the
base install (`pip install .` in a checkout, no extras) of a Raspberry Pi. tests/test_layout.py enforces that by
reading every module's imports.
"""
