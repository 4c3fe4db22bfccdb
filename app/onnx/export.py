"""Export a state_dict's architecture to ONNX and prove the file in onnxruntime.

Prefers the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) and falls back to the TorchScript
exporter only when the first fails; the report says which one ran. A file is returned only when onnx's
checker passed and onnxruntime matched PyTorch within the tolerances at every checked size: two batch
sizes, and for models with a ``sequence`` axis (token inputs) two sequence lengths as well. What the
graph is called and which axes vary comes from ``signature``; the transformers-specific part from ``text``.
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

from app.architectures.libraries import export_arguments
from app.architectures.spec import Architecture
from app.checkpoints.validate import load_fresh
from app.onnx import advice, signature
from app.onnx.options import OnnxOptions
from app.onnx.signature import Exported

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
    layout = signature.plan(architecture.inputs(config), options)
    exported = Exported(module, layout.input_names, export_arguments(architecture, module)).eval()
    traced_at = _example(architecture, config, layout, layout.trace, module)
    output_names = [
        name for name, _ in signature.named_tensors(_eager(exported, traced_at, layout.trace, layout))
    ]
    started = time.perf_counter()
    onnx_path = workdir / "model.onnx"
    exporter, notes = _export(exported, traced_at, layout, output_names, options, onnx_path)
    export_seconds = time.perf_counter() - started
    expected = _expected(exported, architecture, config, layout, module)
    signature.tidy_graph(onnx_path, [(check, [want.shape for want in wants]) for check, _, wants in expected])
    packaging, served = _package(onnx_path, workdir)
    _check_model(onnx_path)
    comparison = _compare(expected, layout, onnx_path, options)
    graph_inputs, graph_outputs = signature.describe_graph(onnx_path)
    report = {
        "exporter": exporter,
        "opset": options.opset,
        "batch_sizes": sorted({check[signature.BATCH] for check in layout.checks}),
        "sequence_lengths": sorted(
            {check[signature.SEQUENCE] for check in layout.checks if signature.SEQUENCE in check}
        ),
        "checked": [
            {name: list(tensor.shape) for name, tensor in zip(layout.input_names, example, strict=True)}
            for _, example, _ in expected
        ],
        "inputs": graph_inputs,
        "outputs": graph_outputs,
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
        matched = [item for item in comparison["per_batch"] if item["ok"]]
        message = _mismatch_message(comparison["worst"], options, loosen=not matched)
        if matched:
            # Right at some sizes and wrong at others is not a rounding question.
            message += " " + _size_dependent(matched, layout)
        raise ConversionFailed("onnx_mismatch", message, report)
    return ExportResult(path=served, packaging=packaging, report=report)


def _at(sizes: Mapping[str, int]) -> str:
    where = f"at batch size {sizes[signature.BATCH]}"
    if signature.SEQUENCE in sizes:
        where += f", sequence length {sizes[signature.SEQUENCE]}"
    return where


def _where(item: Mapping[str, Any]) -> str:
    """Where a comparison (an item of ``per_batch``) was made."""
    sizes = {signature.BATCH: item["batch_size"]}
    if item.get("sequence_length") is not None:
        sizes[signature.SEQUENCE] = item["sequence_length"]
    return _at(sizes)


def _mismatch_message(worst: dict[str, Any], options: OnnxOptions, *, loosen: bool = True) -> str:
    where = f"onnxruntime differs from PyTorch {_where(worst)}"
    if worst["max_abs_diff"] is None:
        return f"{where}: {worst['why']}; the exported graph does not compute what the model does."
    if worst["nonfinite_mismatched"]:
        return (
            f"{where}: {worst['nonfinite_mismatched']} of {worst['elements']} values are NaN or infinite in "
            "one and not the same in the other; no tolerance covers that."
        )
    return (
        f"{where} beyond the tolerances: max abs diff {worst['max_abs_diff']:.3g} with atol={options.atol:g}, "
        f"rtol={options.rtol:g} ({worst['mismatched']} of {worst['elements']} values outside)."
        + (" Loosen atol/rtol if that is acceptable." if loosen else "")
    )


def _size_dependent(matched: list[dict[str, Any]], layout: signature.Plan) -> str:
    return (
        f"It matches {'; '.join(_where(item) for item in matched)}: the graph hard-codes something about "
        f"the input's size as traced {_at(layout.trace)}. " + advice.fixed_dimension(layout)
    )


def _example(
    architecture: Architecture,
    config: Mapping[str, Any],
    layout: signature.Plan,
    sizes: Mapping[str, int],
    module: nn.Module,
) -> tuple[torch.Tensor, ...]:
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    batch = sizes[signature.BATCH]
    seed = batch * 1000 + sizes.get(signature.SEQUENCE, 0)
    dims = {name: size for name, size in sizes.items() if name != signature.BATCH}
    inputs = architecture.example_inputs(config, batch_size=batch, seed=seed, dims=dims)
    inputs = signature.tokenizer_like(list(layout.input_names), inputs, torch.Generator().manual_seed(seed))
    return tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)


def _expected(
    exported: Exported,
    architecture: Architecture,
    config: Mapping[str, Any],
    layout: signature.Plan,
    module: nn.Module,
) -> list[tuple[dict[str, int], tuple[torch.Tensor, ...], list[np.ndarray]]]:
    """For each check: its sizes, the inputs, and PyTorch's outputs."""
    expected = []
    for check in layout.checks:
        example = _example(architecture, config, layout, check, module)
        outputs = tuple(t for _, t in signature.named_tensors(_eager(exported, example, check, layout)))
        expected.append((check, example, _flatten(outputs)))
    return expected


def _eager(
    exported: Exported, example: tuple[torch.Tensor, ...], sizes: Mapping[str, int], layout: signature.Plan
) -> Any:
    """The module's own result on ``example``; a model that cannot run at these sizes fails the job."""
    try:
        with torch.inference_mode():
            return exported.raw(*example)
    except Exception as exc:
        fixed = sorted(layout.dynamic_dims)
        raise ConversionFailed(
            "export_failed",
            f"The model does not run {_at(sizes)} ({describe_export_error(exc)}), and the export needs it to: "
            f"{' and '.join(fixed)} {'are' if len(fixed) > 1 else 'is'} exported as dynamic. "
            + advice.fixed_dimension(layout),
        ) from None


def _export(
    exported: Exported,
    example: tuple[torch.Tensor, ...],
    layout: signature.Plan,
    output_names: list[str],
    options: OnnxOptions,
    path: Path,
) -> tuple[str, list[str]]:
    notes: list[str] = []
    try:
        _export_dynamo(exported, example, layout, output_names, options, path)
        return "dynamo", notes
    except Exception as exc:
        reason = describe_export_error(exc)
        log.info("dynamo exporter failed (%s); trying the TorchScript exporter", reason)
        notes.append(f"dynamo exporter failed: {reason}")
        dynamo_error = reason
    try:
        _export_torchscript(exported, example, layout, output_names, options, path)
    except ConversionFailed as exc:
        raise ConversionFailed(
            exc.code,
            f"The model cannot be exported to ONNX. Dynamo exporter: {dynamo_error}. {exc.message}. "
            + advice.what_to_change(dynamo_error, exc.message, options=options, layout=layout),
            {"notes": notes},
        ) from None
    except Exception as exc:
        torchscript_error = describe_export_error(exc)
        raise ConversionFailed(
            "export_failed",
            f"The model cannot be exported to ONNX. Dynamo exporter: {dynamo_error}. "
            f"TorchScript exporter: {torchscript_error}. "
            + advice.what_to_change(dynamo_error, torchscript_error, options=options, layout=layout),
            {"notes": notes},
        ) from None
    return "torchscript", notes


def _export_dynamo(
    exported: Exported,
    example: tuple[torch.Tensor, ...],
    layout: signature.Plan,
    output_names: list[str],
    options: OnnxOptions,
    path: Path,
) -> None:
    dims = {name: torch.export.Dim(name, min=1) for name in layout.dynamic_dims}
    # Exported.forward takes *inputs: its dynamic shapes are one tuple, for that one argument.
    dynamic_shapes = (
        (tuple({axis: dims[name] for axis, name in axes.items()} or None for axes in layout.dynamic_axes),)
        if dims
        else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            exported,
            example,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=list(layout.input_names),
            output_names=output_names,
            opset_version=options.opset,
            optimize=True,
            verbose=False,
            report=False,
        )
    if program is None:
        raise RuntimeError("the exporter returned no program")
    # Small models become one self-contained file; only past protobuf's 2 GB limit does data go beside it.
    program.save(str(path), external_data=_too_big_for_one_file(exported))


def _too_big_for_one_file(module: nn.Module) -> bool:
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return bool(size > PROTOBUF_LIMIT - 64 * 1024**2)


def _export_torchscript(
    exported: Exported,
    example: tuple[torch.Tensor, ...],
    layout: signature.Plan,
    output_names: list[str],
    options: OnnxOptions,
    path: Path,
) -> None:
    dynamic_axes = {
        name: axes for name, axes in zip(layout.input_names, layout.dynamic_axes, strict=True) if axes
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            exported,
            example,
            str(path),
            dynamo=False,
            input_names=list(layout.input_names),
            output_names=output_names,
            dynamic_axes=dynamic_axes or None,
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
        "Constraints violated",
        "specialized",
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
    expected: list[tuple[dict[str, int], tuple[torch.Tensor, ...], list[np.ndarray]]],
    layout: signature.Plan,
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
    # An exporter drops an input the graph never reads (a model may ignore token_type_ids).
    wanted = {item.name for item in session.get_inputs()}
    per_batch = []
    for check, example, want in expected:
        feed = {
            name: tensor.numpy()
            for name, tensor in zip(layout.input_names, example, strict=True)
            if name in wanted
        }
        try:
            got = session.run(None, feed)
        except Exception as exc:
            # Typically "Got: 16 Expected: 8": the graph kept a size it was traced at.
            hint = f" {advice.fixed_dimension(layout)}" if layout.dynamic_dims else ""
            raise ConversionFailed(
                "onnxruntime_failed",
                f"onnxruntime failed to run the exported model {_at(check)}: {_clip(str(exc))}.{hint}",
            ) from None
        result = _diff(check[signature.BATCH], want, got, options)
        if signature.SEQUENCE in check:
            result["sequence_length"] = check[signature.SEQUENCE]
        per_batch.append(result)
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


def _flatten(outputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """PyTorch's outputs (``Exported``'s flat tuple) as arrays, floats widened to float32."""
    return [t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy() for t in outputs]


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
