"""Versions: one uploaded, validated checkpoint each."""
