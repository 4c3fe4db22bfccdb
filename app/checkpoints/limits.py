"""Bounds on what an uploaded file may ask of the reader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadLimits:
    max_tensors: int = 100_000
    max_pickle_bytes: int = 64 * 1024 * 1024
    max_safetensors_header_bytes: int = 100 * 1024 * 1024
    # A save_pretrained folder: its small extra files (tokenizer, generation config), its weights files,
    # and what one tar or zip body may unpack to (the server passes its upload limit).
    max_extra_file_bytes: int = 16 * 1024 * 1024
    max_extra_files: int = 64
    max_weight_files: int = 1024
    max_unpacked_bytes: int = 16 * 1024**3
