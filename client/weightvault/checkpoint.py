"""The torch side of the client: the file a push sends, and reading downloaded artifacts back.

torch and safetensors are imported on first use, so ``import weightvault`` (and ``weightvault ls``) stays fast.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# Keys of the classic training checkpoint (what the server's `full` artifact holds).
MODEL_KEY = "model_state_dict"
OPTIMIZER_KEY = "optimizer_state_dict"
SCHEDULER_KEY = "scheduler_state_dict"


def training_checkpoint(
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """What ``torch.save`` would get in a training script: a bare state_dict, or the classic checkpoint dict
    when there is more than weights. Tensors are moved to the CPU (ties kept), as the server has no GPU."""
    from torch import nn

    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    if optimizer is None and scheduler is None and epoch is None and step is None:
        return _state_on_cpu(state)
    checkpoint: dict[str, Any] = {MODEL_KEY: state}
    if optimizer is not None:
        checkpoint[OPTIMIZER_KEY] = optimizer.state_dict()
    if scheduler is not None:
        checkpoint[SCHEDULER_KEY] = scheduler.state_dict()
    if epoch is not None:
        checkpoint["epoch"] = epoch
    if step is not None:
        checkpoint["global_step"] = step
    return _state_on_cpu(checkpoint)


def _state_on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    moved: dict[str, Any] = _to_cpu(state, {})
    return moved


def _to_cpu(value: Any, memo: dict[tuple[Any, ...], Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        if value.device.type == "cpu":
            return value
        # Tensors sharing one storage (tied weights) must still share it after the move.
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if key not in memo:
            memo[key] = value.detach().cpu()
        return memo[key]
    if isinstance(value, dict):
        return {k: _to_cpu(v, memo) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v, memo) for v in value)
    return value


def save_temporary(obj: Any) -> Path:
    """``torch.save(obj)`` into a new temp file (the caller deletes it); uploads then stream from disk."""
    import torch

    fd, name = tempfile.mkstemp(prefix="weightvault-push-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def read_weights(path: Path, fmt: str, *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A downloaded ``weights`` artifact as a state_dict; tied tensors come back as one shared tensor."""
    import torch

    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = load_file(path, device=device)
        with safe_open(path, "pt") as handle:
            metadata: dict[str, str] = handle.metadata() or {}
        # safetensors' save_model drops all but one name of a shared tensor and records
        # {dropped_name: kept_name} in the metadata; put the dropped names back.
        for dropped, kept in metadata.items():
            if dropped not in state and kept in state:
                state[dropped] = state[kept]
        return state
    loaded = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return loaded


def read_checkpoint(path: Path, *, device: str = "cpu") -> dict[str, Any]:
    """A downloaded ``full`` artifact: the classic training checkpoint dict."""
    import torch

    loaded = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(loaded, dict) or MODEL_KEY not in loaded:
        raise ValueError(f"{path} is not a training checkpoint (no {MODEL_KEY!r})")
    return loaded


def restore(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> int | None:
    """Load a training checkpoint into model (strict), optimizer and scheduler; return its epoch."""
    model.load_state_dict(checkpoint[MODEL_KEY], strict=True)
    for target, key in ((optimizer, OPTIMIZER_KEY), (scheduler, SCHEDULER_KEY)):
        if target is None:
            continue
        if key not in checkpoint:
            raise ValueError(f"The checkpoint has no {key!r} to restore; it was pushed without one.")
        target.load_state_dict(checkpoint[key])
    epoch = checkpoint.get("epoch")
    return epoch if isinstance(epoch, int) else None
