"""Benchmarks: weightvault against the floor, nginx, a fresh export script and MLflow, on one machine.

Run ``python -m benchmarks.run`` (see docs/benchmarks.md). The harness itself imports no torch: every
piece of torch work (making checkpoints, the in-process ingest, the fresh ONNX script) runs in a child
process, so the harness stays small and the numbers are the children's.
"""
