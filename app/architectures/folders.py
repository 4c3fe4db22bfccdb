"""Model folders (``save_pretrained``'s layout) for the libraries that have one: the seam ingest calls.

A library with its own folder format (today ``transformers``) checks an uploaded folder's config against the
registration, writes a version's weights as that folder and loads such a folder back, with its own code.
Architectures without one accept folder uploads for their weights alone and get no ``hf`` artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from app.architectures.spec import Architecture


class FolderFormat(Protocol):
    # The artifact kind a version gets in this format (format ``zip``).
    artifact_kind: str

    def config_differences(self, uploaded: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``[{key, expected, got}]`` for config entries that change tensor shapes; empty when none do."""

    def module_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """The library's own renaming of checkpoint keys (as its files name them) to the module's keys."""

    def save(self, module: nn.Module, folder: Path, *, shard_bytes: int) -> None:
        """Write ``module`` (holding the version's weights) as the library writes a model folder."""

    def load(self, folder: Path, input_names: Sequence[str]) -> nn.Module:
        """Load a folder written by ``save`` with the library's own loader (what a user will run)."""


def folder_format(architecture: Architecture) -> FolderFormat | None:
    registration = architecture.registration
    if registration is not None and registration.library == "transformers" and registration.config:
        from app.architectures.libraries.transformers_folder import TransformersFolder

        return TransformersFolder(registration.config)
    return None
