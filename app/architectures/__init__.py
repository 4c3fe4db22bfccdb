"""Registered architectures: the model classes uploads are validated against."""
