"""What to change when an export fails: one sentence chosen from the exporter's own words."""

from __future__ import annotations

import re

from app.onnx.options import MAX_OPSET, MIN_OPSET, OnnxOptions
from app.onnx.signature import BATCH, SEQUENCE, Plan

_OPERATOR = re.compile(r"\b((?:aten|prims)(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)")


def operator_in(reason: str) -> str | None:
    """The ``aten`` (or ``prims``) operator an exporter's message names, if it names one."""
    found = _OPERATOR.search(reason)
    return found.group(1) if found else None


def what_to_change(*reasons: str, options: OnnxOptions, layout: Plan) -> str:
    """A suggestion for the job's error message from the exporters' reasons, the preferred exporter's first."""
    for reason in reasons:
        specific = _specific(reason, options, layout)
        if specific:
            return specific
    fixed = "" if not options.dynamic_batch else ", or dynamic_batch=false"
    return f"Try {_other_opset(options)}{fixed}."


def _other_opset(options: OnnxOptions) -> str:
    return f"another opset (options.opset, {MIN_OPSET}-{MAX_OPSET}; this job used {options.opset})"


def _specific(reason: str, options: OnnxOptions, layout: Plan) -> str | None:
    lowered = reason.lower()
    if "cache" in lowered and ("dynamiccache" in lowered or "past_key_values" in lowered):
        return (
            "The model returns a key/value cache, which an ONNX graph cannot hold: set `use_cache` to false "
            "in its config (causal LMs are exported without a cache)."
        )
    dims = _dims_in(lowered, layout)
    if dims or "constraint" in lowered or "specializ" in lowered or "dynamic_shapes" in lowered:
        return fixed_dimension(layout, dims)
    if "data-dependent" in lowered or "control flow" in lowered or "guardondatadependent" in lowered:
        return (
            "The forward branches on tensor values, which one graph cannot follow: express the branch with "
            "torch.where or torch.cond, or move it out of forward."
        )
    operator = operator_in(reason)
    if operator is not None:
        return (
            f"ONNX has no translation of {operator} at this opset: try {_other_opset(options)}, or replace "
            f"{operator} in the model's forward with operators ONNX supports."
        )
    return None


def fixed_dimension(layout: Plan, dims: set[str] | None = None) -> str:
    """What to change when the model fixes a dimension that is exported as dynamic."""
    suspects = dims or layout.dynamic_dims
    if SEQUENCE in suspects:
        return (
            "If the model only works at one sequence length, declare that axis with a number instead of "
            "`sequence` in the architecture's input spec; otherwise make forward follow the input's length."
        )
    return "If the model only works at one batch size, convert with dynamic_batch=false."


def _dims_in(lowered: str, layout: Plan) -> set[str]:
    # torch.export names a dimension it could not keep dynamic by the Dim it was given.
    mentioned = set()
    for dim in (BATCH, SEQUENCE):
        if dim in layout.dynamic_dims and re.search(rf"\b{dim}\b", lowered) and "constraint" in lowered:
            mentioned.add(dim)
    return mentioned
