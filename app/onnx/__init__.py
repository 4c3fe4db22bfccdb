"""ONNX export and its proof in onnxruntime: pure functions, no database, no HTTP."""
