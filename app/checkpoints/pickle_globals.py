"""What a checkpoint's pickle may name, and the guards that stand for it.

torch.save writes a handful of globals for data: the tensor and parameter rebuild functions, storage
and dtype names, ``OrderedDict``, ``set``, ``torch.Size``, ``torch.device`` and, for bytes in protocol 2,
``_codecs.encode(text, "latin1")``. Each is bound to a guard that checks its arguments and cannot
allocate memory the file did not send: a tensor is only ever a view on a storage the container reader
built from the file's own bytes (``TensorRules.storages``), never a fresh allocation.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.storage import _get_dtype_from_pickle_storage_type

from app.checkpoints.allowlist import module_pickle_globals
from app.checkpoints.unpickler import check_key, pickle_callable
from app.errors import UnreadableCheckpoint

# Tensors of more dimensions, or with more elements, are not weights of any model.
MAX_DIMS = 32
MAX_ELEMENTS = 2**48
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})
_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "hpu", "npu"})

# dtypes a stored tensor may have (quantized and bit-packed kinds are refused by omission).
DATA_DTYPES: tuple[torch.dtype, ...] = (
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
    torch.uint16, torch.uint32, torch.uint64,
    torch.complex64, torch.complex128,
    torch.float8_e4m3fn, torch.float8_e5m2,
)  # fmt: skip


@dataclass(frozen=True)
class StorageKind:
    """What a storage type name (``torch.FloatStorage``) stands for: its dtype, nothing callable."""

    dtype: torch.dtype


class _Marker:
    """An inert stand-in for a class a pickle may name as an argument but not call."""

    def __init__(self, name: str) -> None:
        self.name = name


TENSOR_TYPE = _Marker("torch.Tensor")
PARAMETER_TYPE = _Marker("torch.nn.parameter.Parameter")


def storage_kinds() -> dict[str, StorageKind]:
    kinds: dict[str, StorageKind] = {"torch.storage.UntypedStorage": StorageKind(torch.uint8)}
    for cls in torch._storage_classes:
        if cls in (torch.storage.TypedStorage, torch.storage.UntypedStorage):
            continue
        # The class's own ``dtype`` warns that TypedStorage is deprecated; this is what torch.load uses.
        dtype = _get_dtype_from_pickle_storage_type(cls.__name__)
        if dtype in DATA_DTYPES:
            kinds[f"{cls.__module__}.{cls.__name__}"] = StorageKind(dtype)
    return kinds


def _refuse(message: str) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(f"The checkpoint's pickle {message}")


def _int(value: Any, what: str, low: int = 0, high: int = 2**62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _refuse(f"gives {what} as {str(value)[:40]!r}; expected an integer in [{low}, {high}].")
    return value


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list | torch.Size) or len(value) > MAX_DIMS:
        raise _refuse(f"gives a {what} that is not a tuple of at most {MAX_DIMS} integers.")
    return tuple(_int(item, what) for item in value)


def _empty_hooks(hooks: Any) -> None:
    if hooks is not None and (not isinstance(hooks, Mapping) or hooks):
        raise _refuse("attaches backward hooks to a tensor; save plain tensors.")


@dataclass
class TensorRules:
    """The guards for one load. ``storages`` holds every storage the container built from file bytes."""

    storages: dict[int, torch.storage.TypedStorage] = field(default_factory=dict)

    def register(self, storage: torch.storage.TypedStorage) -> torch.storage.TypedStorage:
        self.storages[id(storage)] = storage
        return storage

    def view(
        self, storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        if not isinstance(storage, torch.storage.TypedStorage) or id(storage) not in self.storages:
            raise _refuse("builds a tensor on something that is not one of the file's storages.")
        element = storage.dtype if dtype is None else dtype
        if element not in DATA_DTYPES:
            raise _refuse(f"builds a tensor of dtype {element}, which is not stored.")
        shape, strides = _ints(size, "size"), _ints(stride, "stride")
        start = _int(offset, "storage offset")
        if len(shape) != len(strides):
            raise _refuse("gives a tensor a size and a stride of different lengths.")
        if math.prod(shape) > MAX_ELEMENTS or any(
            math.prod(shape[index:]) * element.itemsize >= 2**62 for index in range(len(shape))
        ):
            raise _refuse(f"builds a tensor of size {list(shape)}, too large for any tensor.")
        available = storage._untyped_storage.nbytes() // element.itemsize
        if math.prod(shape) > max(available, 1):
            # A view repeating its storage (stride 0, overlaps) would cost its full size wherever it is
            # made contiguous: bytes the file never sent.
            raise _refuse(
                f"builds a tensor of {math.prod(shape)} elements over a storage of {available}; "
                "save tensor.contiguous() (or tensor.clone())."
            )
        if math.prod(shape):
            last = start + sum((dim - 1) * step for dim, step in zip(shape, strides, strict=True))
            if last >= available:
                raise UnreadableCheckpoint(
                    f"A tensor of size {list(shape)} reaches element {last} of a storage that holds "
                    f"{available}; the file is corrupt."
                )
        tensor = torch.empty((0,), dtype=element)
        return tensor.set_(storage._untyped_storage, start, shape, strides)

    def globals(self, module_classes: Iterable[type[nn.Module]] = ()) -> dict[str, object]:
        rules = self

        @pickle_callable
        def _rebuild_tensor_v2(
            storage: Any,
            offset: Any,
            size: Any,
            stride: Any,
            requires_grad: Any = False,
            hooks: Any = None,
            metadata: Any = None,
        ) -> torch.Tensor:
            _empty_hooks(hooks)
            if metadata:
                raise _refuse("marks a tensor conjugated or negated; save resolved tensors.")
            return rules.view(storage, offset, size, stride)

        @pickle_callable
        def _rebuild_tensor_v3(
            storage: Any,
            offset: Any,
            size: Any,
            stride: Any,
            requires_grad: Any,
            hooks: Any,
            dtype: Any,
            metadata: Any = None,
        ) -> torch.Tensor:
            _empty_hooks(hooks)
            if metadata:
                raise _refuse("marks a tensor conjugated or negated; save resolved tensors.")
            if not isinstance(dtype, torch.dtype):
                raise _refuse("gives a tensor a dtype that is not a dtype.")
            return rules.view(storage, offset, size, stride, dtype)

        @pickle_callable
        def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
            return rules.view(storage, offset, size, stride)

        @pickle_callable
        def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> nn.Parameter:
            _empty_hooks(hooks)
            if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
                raise _refuse("builds a parameter from something that is not a tensor.")
            return nn.Parameter(data, requires_grad and data.is_floating_point())

        @pickle_callable
        def _rebuild_parameter_with_state(
            data: Any, requires_grad: Any, hooks: Any, state: Any
        ) -> nn.Parameter:
            # Python attributes on a parameter are not weights; they are dropped, not set.
            return _rebuild_parameter(data, requires_grad, hooks)

        @pickle_callable
        def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
            if func not in tensor_functions or new_type not in (TENSOR_TYPE, PARAMETER_TYPE):
                raise _refuse("rebuilds a tensor subclass; save plain tensors.")
            if not isinstance(args, tuple):
                raise _refuse("rebuilds a tensor without arguments.")
            return func(*args)

        tensor_functions = (
            _rebuild_tensor_v2,
            _rebuild_tensor_v3,
            _rebuild_tensor,
            _rebuild_parameter,
            _rebuild_parameter_with_state,
        )
        allowed: dict[str, object] = dict(module_pickle_globals(module_classes))
        allowed.update(DATA_GLOBALS)
        allowed.update(storage_kinds())
        allowed.update(
            {
                "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
                "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
                "torch._utils._rebuild_tensor": _rebuild_tensor,
                "torch._utils._rebuild_parameter": _rebuild_parameter,
                "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
                "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
            }
        )
        return allowed


@pickle_callable
def _encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(text, "latin1"): one byte per character, linear time.
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in _LATIN1:
        raise UnreadableCheckpoint(
            f"The checkpoint's pickle asks for the codec {str(encoding)[:40]!r}; only the latin1 encoding "
            "that pickles bytes is allowed."
        )
    return text.encode("latin1")


@pickle_callable
def _bytearray(*args: Any) -> bytearray:
    # bytearray(n) would allocate n bytes the file never sent; only copies of sent bytes are allowed.
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], bytes):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str):
        return bytearray(_encode(args[0], args[1]))
    raise UnreadableCheckpoint(
        "The checkpoint's pickle asks for a bytearray of a given size; only bytes it holds can be stored."
    )


@pickle_callable
def _ordered_dict(items: Any = ()) -> OrderedDict[Any, Any]:
    if not isinstance(items, list | tuple):
        raise _refuse("builds an OrderedDict from something that is not a list of pairs.")
    result: OrderedDict[Any, Any] = OrderedDict()
    for pair in items:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _refuse("builds an OrderedDict from something that is not a list of pairs.")
        result[check_key(pair[0])] = pair[1]
    return result


@pickle_callable
def _counter(items: Any = None) -> Counter[Any]:
    if items is None:
        return Counter()
    if not isinstance(items, dict):
        raise _refuse("builds a Counter from something that is not a dict.")
    return Counter({check_key(k): v for k, v in items.items()})


def _members(items: Any) -> list[Any]:
    if not isinstance(items, list | tuple):
        raise _refuse("builds a set from something that is not a list.")
    return [check_key(item) for item in items]


@pickle_callable
def _set(items: Any = ()) -> set[Any]:
    return set(_members(items))


@pickle_callable
def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not isinstance(real, int | float) or not isinstance(imag, int | float):
        raise _refuse("builds a complex number from something that is not a number.")
    return complex(real, imag)


@pickle_callable
def _size(dims: Any = ()) -> torch.Size:
    return torch.Size(_ints(dims, "torch.Size"))


@pickle_callable
def _device(kind: Any, index: Any = None) -> torch.device:
    name = kind.partition(":")[0] if isinstance(kind, str) else None
    if name not in _DEVICE_TYPES or len(kind) > 16:
        raise _refuse(f"names the device {str(kind)[:40]!r}.")
    return torch.device(kind) if index is None else torch.device(kind, _int(index, "device index", 0, 1024))


DATA_GLOBALS: dict[str, object] = {
    "collections.OrderedDict": _ordered_dict,
    "collections.Counter": _counter,
    "builtins.set": _set,
    "builtins.complex": _complex,
    "builtins.bytearray": _bytearray,
    "_codecs.encode": _encode,
    "torch.Size": _size,
    "torch.device": _device,
    "torch.Tensor": TENSOR_TYPE,
    "torch.nn.parameter.Parameter": PARAMETER_TYPE,
    **{str(dtype): dtype for dtype in DATA_DTYPES},
}
