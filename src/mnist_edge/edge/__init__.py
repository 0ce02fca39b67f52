"""The torch-free edge side: open an exported model, prepare images, predict.

Everything in this package imports only the standard library, numpy, Pillow, ONNX Runtime (or, for a .tflite
file, LiteRT from the [litert] extra instead) and the project's shared modules (`mnist_edge.spec`,
`mnist_edge.errors`, `mnist_edge.atomic`, `mnist_edge.formats`, `mnist_edge.schema`), so it runs on the base install
(`pip install mnist-edge`) of a Raspberry Pi. tests/test_layout.py enforces that by reading every module's imports.
"""
