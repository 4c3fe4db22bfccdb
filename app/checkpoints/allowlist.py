"""Globals a whole-module pickle may name: the architecture's own class and plain torch.nn building blocks.

Names are bound to *guards*, never to the real objects: a guard class can be instantiated the way
``torch.save(model)`` pickles modules (``__new__`` then ``__setstate__``) but refuses to be called, so
a file cannot make us run a constructor with its own arguments (``nn.Linear(100000, 100000)``); a
guard function refuses to be called at all. The rebuilt tree is only read for its tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from pickle import UnpicklingError
from typing import Any, NoReturn

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


def _refuse_call(name: str) -> NoReturn:
    raise UnpicklingError(f"Unsupported global: GLOBAL {name} (the file asked to call it)")


_GUARD_CLASSES: dict[str, type[nn.Module]] = {}


def _guard_class(cls: type[nn.Module]) -> type[nn.Module]:
    name = qualified_name(cls)
    if name not in _GUARD_CLASSES:

        def __init__(self: nn.Module, *args: object, **kwargs: object) -> None:
            _refuse_call(name)

        attributes = {
            "__init__": __init__,
            "__qualname__": cls.__qualname__,
            "__module__": cls.__module__,
            "_pickle_newable": True,  # created by NEWOBJ, filled by BUILD (__setstate__), never called
        }
        _GUARD_CLASSES[name] = type(cls.__name__, (cls,), attributes)
    return _GUARD_CLASSES[name]


@cache
def _guard_function(function: Callable[..., Any]) -> Callable[..., Any]:
    name = qualified_name(function)

    def guard(*args: object, **kwargs: object) -> NoReturn:
        _refuse_call(name)

    guard.__qualname__ = function.__qualname__
    return guard


def module_pickle_globals(architecture_classes: Iterable[type[nn.Module]]) -> dict[str, Callable[..., Any]]:
    """Map every name a module pickle may use to the guard that stands for it.

    A class saved from a training script is named ``__main__.<Class>``: the classic tutorial's
    ``torch.save(model, f)``. That name stands for the architecture's class of the same name, so the
    pickle rebuilds *our* class and none of the script's code is needed or run.
    """
    allowed: dict[str, Callable[..., Any]] = {qualified_name(c): _guard_class(c) for c in _TORCH_NN_CLASSES}
    allowed.update({qualified_name(f): _guard_function(f) for f in _TORCH_FUNCTIONS})
    for cls in architecture_classes:
        allowed[qualified_name(cls)] = _guard_class(cls)
        allowed[f"__main__.{cls.__qualname__}"] = _guard_class(cls)
    return allowed
