"""Export a state_dict's architecture to ONNX and prove the file in onnxruntime.

Prefers the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) and falls back to the TorchScript
exporter only when the first fails; the report says which one ran. A file is returned only when onnx's
checker passed and onnxruntime matched PyTorch within the tolerances at every checked batch size.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.jit._trace import TracerWarning

from app.architectures.spec import Architecture
from app.checkpoints.validate import load_fresh
from app.onnx.options import OnnxOptions

log = logging.getLogger("weightvault.onnx")

PROTOBUF_LIMIT = 2 * 1024**3 - 1


class ConversionFailed(Exception):
    """The model could not be exported or the export did not match PyTorch; carries a job error code."""

    def __init__(self, code: str, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.report = report or {}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    packaging: str  # "onnx" (one file) or "zip" (model.onnx + model.onnx.data)
    report: dict[str, Any]


def runtime_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_and_check(
    *,
    architecture: Architecture,
    config: Mapping[str, Any],
    weights: Mapping[str, torch.Tensor],
    options: OnnxOptions,
    workdir: Path,
) -> ExportResult:
    """weights + architecture + options -> a checked ONNX file in ``workdir`` and its report."""
    module = load_fresh(architecture, config, weights)
    names = [spec.name for spec in architecture.inputs(config)]
    started = time.perf_counter()
    onnx_path = workdir / "model.onnx"
    exporter, notes = _export(module, architecture, config, names, options, onnx_path)
    export_seconds = time.perf_counter() - started
    packaging, served = _package(onnx_path, workdir)
    _check_model(onnx_path)
    comparison = _compare(module, architecture, config, names, onnx_path, options)
    report = {
        "exporter": exporter,
        "opset": options.opset,
        "batch_sizes": list(options.batch_sizes()),
        "max_abs_diff": comparison["max_abs_diff"],
        "atol": options.atol,
        "rtol": options.rtol,
        "onnxruntime": runtime_versions()["onnxruntime"],
        "torch": torch.__version__,
        "dynamic_batch": options.dynamic_batch,
        "packaging": packaging,
        "per_batch": comparison["per_batch"],
        "export_seconds": round(export_seconds, 3),
        "notes": notes,
    }
    if not comparison["ok"]:
        raise ConversionFailed("onnx_mismatch", _mismatch_message(comparison["worst"], options), report)
    return ExportResult(path=served, packaging=packaging, report=report)


def _mismatch_message(worst: dict[str, Any], options: OnnxOptions) -> str:
    where = f"onnxruntime differs from PyTorch at batch size {worst['batch_size']}"
    if worst["max_abs_diff"] is None:
        return f"{where}: {worst['why']}; the exported graph does not compute what the model does."
    if worst["nonfinite_mismatched"]:
        return (
            f"{where}: {worst['nonfinite_mismatched']} of {worst['elements']} values are NaN or infinite in "
            "one and not the same in the other; no tolerance covers that."
        )
    return (
        f"{where} beyond the tolerances: max abs diff {worst['max_abs_diff']:.3g} with atol={options.atol:g}, "
        f"rtol={options.rtol:g} ({worst['mismatched']} of {worst['elements']} values outside). "
        "Loosen atol/rtol if that is acceptable."
    )


def _example(
    architecture: Architecture, config: Mapping[str, Any], batch: int, module: nn.Module
) -> tuple[torch.Tensor, ...]:
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    inputs = architecture.example_inputs(config, batch_size=batch, seed=batch)
    return tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)


def _export(
    module: nn.Module,
    architecture: Architecture,
    config: Mapping[str, Any],
    names: list[str],
    options: OnnxOptions,
    path: Path,
) -> tuple[str, list[str]]:
    # Trace at batch 2: torch.export specialises a dimension of size 1.
    example = _example(architecture, config, 2 if options.dynamic_batch else 1, module)
    notes: list[str] = []
    try:
        _export_dynamo(module, example, names, options, path)
        return "dynamo", notes
    except Exception as exc:
        reason = describe_export_error(exc)
        log.info("dynamo exporter failed (%s); trying the TorchScript exporter", reason)
        notes.append(f"dynamo exporter failed: {reason}")
        dynamo_error = reason
    try:
        _export_torchscript(module, example, names, options, path)
    except ConversionFailed as exc:
        raise ConversionFailed(
            exc.code, f"The model cannot be exported to ONNX. Dynamo exporter: {dynamo_error}. {exc.message}"
        ) from None
    except Exception as exc:
        raise ConversionFailed(
            "export_failed",
            f"The model cannot be exported to ONNX. Dynamo exporter: {dynamo_error}. "
            f"TorchScript exporter: {describe_export_error(exc)}",
            {"notes": notes},
        ) from None
    return "torchscript", notes


def _export_dynamo(
    module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], options: OnnxOptions, path: Path
) -> None:
    dynamic_shapes = (
        tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in example)
        if options.dynamic_batch
        else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=names,
            opset_version=options.opset,
            optimize=True,
            verbose=False,
            report=False,
        )
    if program is None:
        raise RuntimeError("the exporter returned no program")
    # Small models become one self-contained file; only past protobuf's 2 GB limit does data go beside it.
    program.save(str(path), external_data=_too_big_for_one_file(module))


def _too_big_for_one_file(module: nn.Module) -> bool:
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return bool(size > PROTOBUF_LIMIT - 64 * 1024**2)


def _export_torchscript(
    module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], options: OnnxOptions, path: Path
) -> None:
    dynamic_axes = {name: {0: "batch"} for name in names} if options.dynamic_batch else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            input_names=names,
            dynamic_axes=dynamic_axes,
            opset_version=min(options.opset, 20),
        )
    tracer = [w for w in caught if issubclass(w.category, TracerWarning)]
    if tracer:
        # Tracing froze one path through input-dependent Python control flow: the file would be wrong.
        raise ConversionFailed(
            "export_failed",
            "TorchScript exporter: the model's control flow depends on its input values, so a traced graph "
            f"would hard-code one branch ({str(tracer[0].message).splitlines()[0][:200]})",
        )


def describe_export_error(exc: BaseException) -> str:
    """The line of an exporter's error that names the operator or construct, not the whole traceback."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keys = (
        "Unsupported",
        "unsupported",
        "data-dependent",
        "Could not guard",
        "not supported",
        "aten::",
        "aten.",
    )
    for line in lines:
        if any(key in line for key in keys):
            return _clip(line)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        inner = describe_export_error(cause)
        if inner:
            return inner
    return _clip(lines[0] if lines else type(exc).__name__)


def _clip(line: str) -> str:
    return line if len(line) <= 400 else line[:397] + "..."


def _package(onnx_path: Path, workdir: Path) -> tuple[str, Path]:
    data_files = [
        p for p in workdir.iterdir() if p.name.startswith(onnx_path.name + ".") or p.suffix == ".data"
    ]
    data_files = [p for p in data_files if p != onnx_path]
    if not data_files:
        return "onnx", onnx_path
    archive = workdir / "model.onnx.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as bundle:
        bundle.write(onnx_path, onnx_path.name)
        for data in data_files:
            bundle.write(data, data.name)
    with archive.open("rb+") as handle:
        os.fsync(handle.fileno())
    return "zip", archive


def _check_model(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:
        raise ConversionFailed(
            "onnx_invalid", f"onnx's checker rejected the exported model: {_clip(str(exc))}"
        ) from None


def _compare(
    module: nn.Module,
    architecture: Architecture,
    config: Mapping[str, Any],
    names: list[str],
    path: Path,
    options: OnnxOptions,
) -> dict[str, Any]:
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionFailed(
            "onnxruntime_failed", f"onnxruntime could not load the exported model: {_clip(str(exc))}"
        ) from None
    per_batch = []
    for batch in options.batch_sizes():
        example = _example(architecture, config, batch, module)
        with torch.inference_mode():
            expected = _flatten(module(*example))
        try:
            got = session.run(
                None, {name: tensor.numpy() for name, tensor in zip(names, example, strict=True)}
            )
        except Exception as exc:
            raise ConversionFailed(
                "onnxruntime_failed",
                f"onnxruntime failed to run the exported model at batch size {batch}: {_clip(str(exc))}",
            ) from None
        per_batch.append(_diff(batch, expected, got, options))
    # Failures first; among them one that could not be measured, then the largest difference.
    worst = max(
        per_batch,
        key=lambda item: (not item["ok"], item["max_abs_diff"] is None, item["max_abs_diff"] or 0.0),
    )
    diffs = [item["max_abs_diff"] for item in per_batch]
    return {
        "ok": all(item["ok"] for item in per_batch),
        "max_abs_diff": None if None in diffs else max(diffs),
        "per_batch": per_batch,
        "worst": worst,
    }


def _flatten(result: Any) -> list[np.ndarray]:
    if isinstance(result, torch.Tensor):
        return [result.detach().float().numpy() if result.is_floating_point() else result.detach().numpy()]
    if isinstance(result, list | tuple):
        return [array for item in result for array in _flatten(item)]
    if isinstance(result, Mapping):
        return [array for item in result.values() for array in _flatten(item)]
    return []


def _diff(batch: int, expected: list[np.ndarray], got: list[Any], options: OnnxOptions) -> dict[str, Any]:
    """How onnxruntime's outputs (``got``) differ from PyTorch's at one batch size.

    Every number in the result is finite, because it is stored as JSON: when the outputs cannot be
    compared (their count or a shape differs) ``max_abs_diff`` is None and ``why`` says what differs.
    NaN matches NaN and an infinity the same infinity (as in the upload's proofs); any other non-finite
    value is a mismatch counted in ``nonfinite_mismatched``, and ``max_abs_diff`` covers the finite pairs.
    """
    if len(expected) != len(got):
        return _unmeasured(batch, f"PyTorch returns {len(expected)} outputs, onnxruntime {len(got)}")
    worst, mismatched, nonfinite, elements = 0.0, 0, 0, 0
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        have64 = np.asarray(have).astype(np.float64)
        want64 = want.astype(np.float64)
        if have64.shape != want64.shape:
            return _unmeasured(
                batch,
                f"output {index} has shape {list(have64.shape)} in onnxruntime, {list(want64.shape)} in PyTorch",
            )
        finite = np.isfinite(want64) & np.isfinite(have64)
        same = (want64 == have64) | (np.isnan(want64) & np.isnan(have64))
        odd = int((~finite & ~same).sum())
        difference = np.abs(have64[finite] - want64[finite])
        if difference.size:
            worst = max(worst, float(difference.max()))
        tolerance = options.atol + options.rtol * np.abs(want64[finite])
        mismatched += int((difference > tolerance).sum()) + odd
        nonfinite += odd
        elements += int(want64.size)
    return {
        "batch_size": batch,
        "ok": mismatched == 0,
        # Finite float32 values can still differ by more than float64 holds after widening float64 ones.
        "max_abs_diff": worst if math.isfinite(worst) else sys.float_info.max,
        "mismatched": mismatched,
        "nonfinite_mismatched": nonfinite,
        "elements": elements,
    }


def _unmeasured(batch: int, why: str) -> dict[str, Any]:
    return {
        "batch_size": batch,
        "ok": False,
        "max_abs_diff": None,
        "mismatched": None,
        "nonfinite_mismatched": None,
        "elements": None,
        "why": why,
    }
