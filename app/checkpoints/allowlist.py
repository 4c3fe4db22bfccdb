"""Globals a whole-module pickle may name: the architecture's own class and plain torch.nn building blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn
from torch.nn import functional
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

_TORCH_NN_CLASSES: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Linear, nn.Bilinear, NonDynamicallyQuantizableLinear,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.LeakyReLU, nn.ELU,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.Flatten, nn.Unflatten, nn.Embedding,
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict,
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder,
    nn.TransformerDecoderLayer, nn.TransformerDecoder,
)  # fmt: skip
_TORCH_FUNCTIONS: tuple[Callable[..., Any], ...] = (functional.relu, functional.gelu)


def qualified_name(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"  # type: ignore[attr-defined]


def module_pickle_globals(architecture_classes: Iterable[type[nn.Module]]) -> dict[str, Callable[..., Any]]:
    """Map every name a module pickle may use to the object it stands for.

    A class saved from a training script is named ``__main__.<Class>``: the classic tutorial's
    ``torch.save(model, f)``. We let that name stand for the architecture's class of the same name,
    so the pickle rebuilds *our* class and none of the script's code is needed or run.
    """
    building_blocks: tuple[Callable[..., Any], ...] = (*_TORCH_NN_CLASSES, *_TORCH_FUNCTIONS)
    allowed = {qualified_name(obj): obj for obj in building_blocks}
    for cls in architecture_classes:
        allowed[qualified_name(cls)] = cls
        allowed[f"__main__.{cls.__qualname__}"] = cls
    return allowed
