"""Artifacts: the stored files of a version (full, weights, onnx) and their downloads."""
