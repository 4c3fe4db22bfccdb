"""Bounds on what an uploaded file may ask of the reader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadLimits:
    max_tensors: int = 100_000
    max_pickle_bytes: int = 64 * 1024 * 1024
    max_safetensors_header_bytes: int = 100 * 1024 * 1024
