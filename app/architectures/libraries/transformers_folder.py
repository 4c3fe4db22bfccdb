"""Hugging Face folders for ``transformers`` architectures: config checks, ``save_pretrained``, ``from_pretrained``.

Writing and loading go through transformers itself, so the ``hf`` artifact is exactly what ``from_pretrained``
reads, tied weights and sharding included. Only local folders are read (no hub, no remote code).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.architectures.libraries import transformers as library

# Entries that describe how a config was written, not the model: they never make a difference.
_BOOKKEEPING = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "architectures",
        "torch_dtype",
        "dtype",
        "auto_map",
        "_commit_hash",
    }
)
_MAX_DIFFERENCES = 32


class TransformersFolder:
    artifact_kind = "hf"

    def __init__(self, registered: Mapping[str, Any]) -> None:
        self.registered = dict(registered)
        self.cls = library.model_class(self.registered)

    def config_differences(self, uploaded: Mapping[str, Any]) -> list[dict[str, Any]]:
        library.check_layers(uploaded)
        changed = sorted(
            key
            for key in (set(self.registered) | set(uploaded)) - _BOOKKEEPING
            if self.registered.get(key) != uploaded.get(key)
        )
        if not changed:
            return []
        base = self._shapes(self.registered)
        given = {**self.registered, **{key: uploaded[key] for key in changed if key in uploaded}}
        if self._shapes(given) == base:
            return []
        # Name the entries that change shapes by themselves; if none does alone, all of them together did.
        culprits = [
            key for key in changed[:_MAX_DIFFERENCES] if self._shapes(self._with(key, uploaded)) != base
        ]
        return [
            {"key": key, "expected": self.registered.get(key), "got": uploaded.get(key)}
            for key in (culprits or changed[:_MAX_DIFFERENCES])
        ]

    def _with(self, key: str, uploaded: Mapping[str, Any]) -> dict[str, Any]:
        config = dict(self.registered)
        if key in uploaded:
            config[key] = uploaded[key]
        else:
            config.pop(key, None)
        return config

    def _shapes(self, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
        """Tensor shapes of the model ``config`` builds (meta device, no memory); None if it cannot be built."""
        try:
            hf_config = library.config_object(self.cls, config)
            with torch.device("meta"), _quiet():
                module = self.cls(hf_config)
        except Exception:
            return None
        return {key: tuple(value.shape) for key, value in module.state_dict().items()}

    def module_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """transformers' own renaming of checkpoint keys to module keys (v5 saves some models, ViT among them,
        under their original names). Renamings only: a key that needs a tensor operation keeps its name."""
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        with torch.device("meta"), _quiet():
            module = self.cls(library.config_object(self.cls, self.registered))
        conversions = get_model_conversion_mapping(module)  # type: ignore[arg-type]
        renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
        converters = [c for c in conversions if isinstance(c, WeightConverter)]
        meta = module.state_dict()
        prefix = getattr(module, "base_model_prefix", None) or None
        renamed = {}
        for key in keys:
            new, converted = rename_source_key(key, renamings, converters, prefix, meta)
            renamed[key] = key if converted is not None else new
        return renamed

    def save(self, module: nn.Module, folder: Path, *, shard_bytes: int) -> None:
        with _quiet():
            module.save_pretrained(str(folder), max_shard_size=shard_bytes)  # type: ignore[operator]

    def load(self, folder: Path, input_names: Sequence[str]) -> nn.Module:
        positional = library.positional_class(self.cls, tuple(input_names))
        with _quiet(), _offline():
            module: nn.Module = positional.from_pretrained(  # type: ignore[attr-defined]
                str(folder), local_files_only=True
            )
        return module.eval()


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers reports progress and advice through warnings, logging and tqdm; none of it is ours."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def _offline() -> Iterator[None]:
    """A local folder never needs the network; this makes sure nothing is looked up on a hub."""
    saved = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
