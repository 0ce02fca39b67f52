"""The export side (torch): a checkpoint to ONNX and TorchScript files, quantized or not, each verified against the
PyTorch model before it is published with its manifest entry."""
