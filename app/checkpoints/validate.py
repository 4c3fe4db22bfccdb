"""Prove a state_dict fits an architecture: strict load into a fresh instance, then a forward pass."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.architectures.spec import Architecture
from app.errors import ArchitectureMismatch, UnreadableCheckpoint


@dataclass(frozen=True)
class Blueprint:
    """The architecture built on the meta device: key names, shapes and tied groups, no memory."""

    expected: dict[str, torch.Tensor]
    tied_groups: list[list[str]]
    parameters: frozenset[str] = frozenset()

    @property
    def keys(self) -> list[str]:
        return list(self.expected)


def blueprint(architecture: Architecture, config: Mapping[str, Any]) -> Blueprint:
    with torch.device("meta"):
        module = architecture.build(config)
    expected = dict(module.state_dict(keep_vars=True))
    by_identity: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        by_identity.setdefault(id(tensor), []).append(name)
    return Blueprint(
        expected={k: v.detach() for k, v in expected.items()},
        tied_groups=[names for names in by_identity.values() if len(names) > 1],
        parameters=frozenset(name for name, _ in module.named_parameters(remove_duplicate=False)),
    )


# Parameters must be one of these (nn.Parameter refuses integers; CPU kernels lack the exotic floats).
WEIGHT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def _dtype_problem(key: str, tensor: torch.Tensor, plan: Blueprint) -> dict[str, str] | None:
    expected = plan.expected[key].dtype
    got = tensor.dtype
    if tensor.device.type != "cpu":
        return {"key": key, "expected": "a tensor with data", "got": f"{tensor.device.type} tensor"}
    if key in plan.parameters or expected.is_floating_point:
        if got not in WEIGHT_DTYPES:
            return {
                "key": key,
                "expected": "float16, bfloat16, float32 or float64",
                "got": str(got).removeprefix("torch."),
            }
    elif got.is_floating_point or got.is_complex or (got == torch.bool) != (expected == torch.bool):
        return {
            "key": key,
            "expected": str(expected).removeprefix("torch."),
            "got": str(got).removeprefix("torch."),
        }
    return None


def complete_tied(weights: dict[str, torch.Tensor], plan: Blueprint) -> dict[str, torch.Tensor]:
    """Fill a tied key that the file left out (safetensors drops duplicates) from its partner."""
    completed = dict(weights)
    for group in plan.tied_groups:
        present = [name for name in group if name in completed]
        if present:
            for name in group:
                completed.setdefault(name, completed[present[0]])
    return completed


def check_fits(weights: Mapping[str, torch.Tensor], plan: Blueprint) -> None:
    """Raise ``ArchitectureMismatch`` naming every missing, unexpected and mis-shaped key."""
    missing = [key for key in plan.expected if key not in weights]
    unexpected = [key for key in weights if key not in plan.expected]
    shapes = [
        {"key": key, "expected": list(plan.expected[key].shape), "got": list(weights[key].shape)}
        for key in plan.expected
        if key in weights and tuple(weights[key].shape) != tuple(plan.expected[key].shape)
    ]
    dtypes = [
        problem
        for key in plan.expected
        if key in weights and (problem := _dtype_problem(key, weights[key], plan)) is not None
    ]
    untied = [
        group
        for group in plan.tied_groups
        if all(name in weights for name in group)
        and not all(_same_values(weights[group[0]], weights[name]) for name in group[1:])
    ]
    if missing or unexpected or shapes or dtypes or untied:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')")
        if shapes:
            first = shapes[0]
            parts.append(
                f"{len(shapes)} with the wrong shape (e.g. '{first['key']}' {first['got']} vs {first['expected']})"
            )
        if dtypes:
            first_dtype = dtypes[0]
            parts.append(
                f"{len(dtypes)} with an unusable dtype (e.g. '{first_dtype['key']}' is {first_dtype['got']}, "
                f"needs {first_dtype['expected']})"
            )
        if untied:
            parts.append(f"tied weights that differ ({', '.join(untied[0])})")
        raise ArchitectureMismatch(
            "The weights do not fit the model's architecture: " + "; ".join(parts) + ".",
            {
                "missing_keys": missing,
                "unexpected_keys": unexpected,
                "shape_mismatches": shapes,
                "dtype_mismatches": dtypes,
                "tied_mismatches": untied,
            },
        )


# Writing each weight out contiguously may take this much more than the upload (plus a small allowance):
# views that overlap or repeat one element (stride 0) cannot make us store more than the file sent.
_MAX_WEIGHT_BYTES_PER_UPLOAD_BYTE = 2
_WEIGHT_BYTES_ALLOWANCE = 1024 * 1024


def check_proportionate(weights: Mapping[str, torch.Tensor], upload_size: int) -> None:
    """Refuse weights whose stored form would be out of proportion to the bytes uploaded."""
    distinct = {id(tensor): tensor for tensor in weights.values()}
    total = sum(tensor.numel() * tensor.element_size() for tensor in distinct.values())
    if total > _MAX_WEIGHT_BYTES_PER_UPLOAD_BYTE * upload_size + _WEIGHT_BYTES_ALLOWANCE:
        raise UnreadableCheckpoint(
            f"The checkpoint's weights describe {total} bytes but the file is {upload_size} bytes: its tensors "
            "repeat or overlap their storage (stride 0). Save contiguous tensors (tensor.contiguous())."
        )


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.stride() == b.stride():
        return True
    return a.dtype == b.dtype and bool(torch.equal(a, b))


def load_fresh(
    architecture: Architecture, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor]
) -> nn.Module:
    """A new instance holding ``weights`` (strict); built on meta and assigned, so no second copy is made.

    Kernels pick code paths by the alignment of their operands, so a weight that starts off a 64-byte
    boundary (a safetensors data section at 8 mod 64, a crafted zip record) is copied to aligned memory:
    the upload's run and every artifact's run (all 64-byte aligned) then compute the same way.
    """
    weights = _aligned(weights)
    try:
        with torch.device("meta"):
            module = architecture.build(config)
        module.load_state_dict(weights, strict=True, assign=True)
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            # Non-persistent buffers are not in any state_dict: build for real and copy instead.
            module = architecture.build(config)
            module.load_state_dict(weights, strict=True)
    except Exception as exc:
        raise ArchitectureMismatch(
            f"The weights could not be loaded into the architecture: {str(exc).strip()[:300]}",
            {
                "missing_keys": [],
                "unexpected_keys": [],
                "shape_mismatches": [],
                "load_error": str(exc)[:1000],
            },
        ) from None
    return module.eval()


_ALIGNMENT = 64


def _aligned(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    copies: dict[int, torch.Tensor] = {}
    aligned: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if tensor.data_ptr() % _ALIGNMENT == 0:
            aligned[name] = tensor
        else:
            # One copy per tensor object, so tied keys (the same object) stay one tensor.
            aligned[name] = copies.setdefault(id(tensor), tensor.clone())
    return aligned


@dataclass(frozen=True)
class ForwardRun:
    outputs: tuple[torch.Tensor, ...]
    report: dict[str, Any]


def run_forward(module: nn.Module, inputs: Sequence[torch.Tensor]) -> ForwardRun:
    """Run the example inputs (cast to the weights' float dtype); raise ``ArchitectureMismatch`` on failure."""
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    cast = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            result = module(*cast)
    except Exception as exc:
        raise ArchitectureMismatch(
            f"The weights loaded, but a forward pass on the example inputs failed: {str(exc)[:300]}",
            {
                "missing_keys": [],
                "unexpected_keys": [],
                "shape_mismatches": [],
                "forward_error": str(exc)[:1000],
            },
        ) from None
    outputs = _flatten_outputs(result)
    return ForwardRun(
        outputs=outputs,
        report={
            "inputs": [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in cast],
            "outputs": [
                {"shape": list(y.shape), "dtype": str(y.dtype).removeprefix("torch.")} for y in outputs
            ],
            "finite": _all_finite(outputs),
            "seconds": round(time.perf_counter() - started, 6),
        },
    )


def _all_finite(outputs: Sequence[torch.Tensor]) -> bool | None:
    try:
        return all(bool(torch.isfinite(y).all()) for y in outputs if y.is_floating_point())
    except (RuntimeError, NotImplementedError):
        return None


def identical_outputs(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> bool:
    """Bit-for-bit the same, where NaN equals NaN (a diverged model is still stored faithfully)."""
    if len(reference) != len(candidate):
        return False
    for a, b in zip(reference, candidate, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if torch.equal(a, b):
            continue
        if not (
            a.is_floating_point()
            and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        ):
            return False
    return True


def _flatten_outputs(result: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, Mapping):
        return tuple(t for v in result.values() for t in _flatten_outputs(v))
    if isinstance(result, list | tuple):
        return tuple(t for v in result for t in _flatten_outputs(v))
    return ()


def max_abs_diff(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> float | None:
    """Largest absolute difference, or None when the outputs do not even have the same shapes."""
    if len(reference) != len(candidate):
        return None
    worst = 0.0
    for a, b in zip(reference, candidate, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return None
        if a.numel():
            worst = max(worst, float((a.double() - b.double()).abs().max()))
    return worst
