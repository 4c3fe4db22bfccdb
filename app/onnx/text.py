"""What exporting a transformers model needs: no KV cache, a named ModelOutput, tokenizer-like masks.

The one module of the exporter that knows transformers. The rest calls ``prepare`` and ``tokenizer_like``
for every model; for other modules they change nothing (masks aside, see ``tokenizer_like``).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch
from torch import nn

ATTENTION_MASK = "attention_mask"


def is_transformers_model(module: nn.Module) -> bool:
    # Checked through sys.modules: a model of that library means the library is already imported.
    library = sys.modules.get("transformers")
    return library is not None and isinstance(module, library.PreTrainedModel)


def prepare(module: nn.Module) -> dict[str, Any]:
    """Make ``module`` exportable in place; returns the keyword arguments its forward is called with."""
    if not is_transformers_model(module):
        return {}
    config: Any = module.config
    # A KV cache is a Cache object, not a tensor: no exporter can return it, and an ONNX consumer runs
    # the whole prompt anyway. Both the config and the argument, as models read one or the other.
    config.use_cache = False
    # A ModelOutput names its fields (last_hidden_state, logits, ...); those become the graph's outputs.
    config.return_dict = True
    accepts = inspect.signature(module.forward).parameters
    return {name: value for name, value in (("use_cache", False), ("return_dict", True)) if name in accepts}


def tokenizer_like(
    names: list[str], inputs: tuple[torch.Tensor, ...], generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Inputs as a tokenizer makes them: an ``attention_mask`` is ones then right padding.

    Random 0/1 masks hide every key from some query rows; what a model computes for such a row is
    arbitrary (PyTorch and onnxruntime legitimately differ there), so comparing it would prove nothing.
    The first row is unpadded, the others keep at least one token.
    """
    out = list(inputs)
    for index, name in enumerate(names):
        mask = out[index]
        if name != ATTENTION_MASK or mask.dim() != 2 or mask.is_floating_point():
            continue
        batch, length = mask.shape
        lengths = torch.randint(1, length + 1, (batch,), generator=generator)
        if batch:
            lengths[0] = length
        out[index] = (torch.arange(length)[None, :] < lengths[:, None]).to(mask.dtype)
    return tuple(out)
