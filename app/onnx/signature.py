"""The exported graph's interface: input names and dynamic axes from the architecture's input specs,
output names from what forward returns, and the shapes at which the file is checked."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.architectures.spec import InputSpec
from app.onnx.options import OnnxOptions

BATCH = "batch"
SEQUENCE = "sequence"
# Models with a sequence axis are checked at every pair of these (the first batch size is always 1).
TEXT_BATCH_SIZES = (1, 3)
SEQUENCE_LENGTHS = (8, 16)
# torch.export specialises a dimension traced at size 1, and one equal to another dynamic dimension's
# size is taken to be that dimension: trace at sizes no check uses and no two dimensions share.
TRACE_SIZES = {BATCH: 2, SEQUENCE: 11}


@dataclass(frozen=True)
class Plan:
    """What is exported (input names, per input ``{axis: dim name}``) and the sizes it is checked at."""

    input_names: tuple[str, ...]
    dynamic_axes: tuple[dict[int, str], ...]
    trace: dict[str, int]
    checks: tuple[dict[str, int], ...]

    @property
    def has_sequence(self) -> bool:
        return any(SEQUENCE in axes.values() for axes in self.dynamic_axes)

    @property
    def dynamic_dims(self) -> set[str]:
        return {name for axes in self.dynamic_axes for name in axes.values()}


def plan(specs: Sequence[InputSpec], options: OnnxOptions) -> Plan:
    """``batch`` is dynamic unless ``dynamic_batch`` is false; ``sequence``, wherever a spec names it, always."""
    dynamic = {SEQUENCE} | ({BATCH} if options.dynamic_batch else set())
    axes = tuple({i: dim for i, dim in enumerate(spec.shape) if dim in dynamic} for spec in specs)
    has_sequence = any(SEQUENCE in a.values() for a in axes)
    if not has_sequence:
        checks = tuple({BATCH: size} for size in options.batch_sizes())
    else:
        batches = TEXT_BATCH_SIZES if options.dynamic_batch else (1,)
        checks = tuple({BATCH: b, SEQUENCE: n} for b in batches for n in SEQUENCE_LENGTHS)
    trace = {BATCH: TRACE_SIZES[BATCH] if options.dynamic_batch else 1}
    if has_sequence:
        trace[SEQUENCE] = TRACE_SIZES[SEQUENCE]
    return Plan(tuple(spec.name for spec in specs), axes, trace, checks)


def named_tensors(result: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors a forward returned, in order, each with its name.

    A mapping (a transformers ModelOutput is one) names them by key; a tuple or list by position
    (``output_0``, ``output_1``); a lone tensor is ``output``; nested ones join with ``_``. Values that
    are not tensors (None, a KV cache object) are left out.
    """
    if isinstance(result, Mapping):
        return [pair for key, value in result.items() for pair in _named(value, str(key))]
    return _named(result, "output")


def _named(result: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(result, torch.Tensor):
        return [(name, result)]
    if isinstance(result, Mapping):
        return [pair for key, value in result.items() for pair in _named(value, f"{name}_{key}")]
    if isinstance(result, list | tuple):
        return [pair for i, value in enumerate(result) for pair in _named(value, f"{name}_{i}")]
    return []


_PREFIX = "module."


class Exported(nn.Module):
    """The architecture's forward as the exporters see it: inputs by name, outputs as one flat tuple."""

    def __init__(self, module: nn.Module, names: Sequence[str], kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        self.module = module
        self.names = list(names)
        self.kwargs = dict(kwargs)
        # Input specs are named after forward's arguments; a module whose arguments are named otherwise
        # (or take *args) still gets them in order.
        accepts = inspect.signature(module.forward).parameters
        self.by_name = all(name in accepts for name in self.names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(tensor for _, tensor in named_tensors(self.raw(*inputs)))

    def raw(self, *inputs: torch.Tensor) -> Any:
        if self.by_name:
            return self.module(**dict(zip(self.names, inputs, strict=True)), **self.kwargs)
        return self.module(*inputs, **self.kwargs)


def describe_graph(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ONNX file's inputs and outputs as ``{name, shape, dtype}``, symbolic dimensions by name."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [_value(v) for v in graph.input], [_value(v) for v in graph.output]


def _value(value: Any) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    shape = [
        dim.dim_param or (dim.dim_value if dim.HasField("dim_value") else None) for dim in tensor.shape.dim
    ]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else None
    return {"name": value.name, "shape": shape, "dtype": dtype}


def tidy_graph(path: Path, shapes: Sequence[tuple[dict[str, int], list[tuple[int, ...]]]]) -> None:
    """Rewrite the exported file's names as the model's own: weights without ``Exported``'s ``module.``
    prefix, and output dimensions named after the input dimension they follow.

    ``shapes`` holds, for each check, its dimension sizes and PyTorch's output shapes.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    renamed = _strip_wrapper_prefix(proto.graph)
    named = _name_output_dims(proto.graph, shapes)
    if renamed or named:
        onnx.save(proto, str(path))


def _strip_wrapper_prefix(graph: Any) -> bool:
    taken = {init.name for init in graph.initializer}
    renames = {
        init.name: init.name[len(_PREFIX) :]
        for init in graph.initializer
        if init.name.startswith(_PREFIX) and init.name[len(_PREFIX) :] not in taken
    }
    if not renames:
        return False
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for value in (*graph.input, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    _rename_uses(graph, renames)
    return True


def _rename_uses(graph: Any, renames: Mapping[str, str]) -> None:
    # Subgraphs (If/Loop bodies) may read the outer graph's weights by name.
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for attribute in node.attribute:
            for sub in (attribute.g, *attribute.graphs) if attribute.HasField("g") else attribute.graphs:
                _rename_uses(sub, renames)


def _name_output_dims(graph: Any, shapes: Sequence[tuple[dict[str, int], list[tuple[int, ...]]]]) -> bool:
    """An output axis whose size equals one dimension's at every check, and that one's alone, takes its
    name; an axis fixed in the graph keeps its number."""
    if len(shapes) < 2:
        return False
    changed = False
    for index, output in enumerate(graph.output):
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            sizes = [
                out[index][axis] if index < len(out) and axis < len(out[index]) else -1 for _, out in shapes
            ]
            names = [name for name in shapes[0][0] if [sizes_of[name] for sizes_of, _ in shapes] == sizes]
            if len(names) == 1 and dim.dim_param != names[0]:
                dim.dim_param = names[0]
                changed = True
    return changed


ATTENTION_MASK = "attention_mask"


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
