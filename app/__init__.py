"""weightvault: a REST model-artifact store for PyTorch."""

__version__ = "0.1.0"
