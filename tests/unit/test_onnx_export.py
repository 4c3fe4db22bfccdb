"""The pure exporter: packaging past the protobuf limit, reports, failures."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from app.architectures.builtin import MLP_ARCH
from app.onnx import export
from app.onnx.options import OnnxOptions


def test_models_past_the_protobuf_limit_travel_as_one_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the limit is tiny, so a small model takes the external-data path a >2 GB one would.
    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 0)
    config = MLP_ARCH.effective_config({"in_features": 16, "hidden_sizes": [32], "out_features": 4})
    torch.manual_seed(0)
    module = MLP_ARCH.build(config).eval()
    work = tmp_path / "work"
    work.mkdir()
    result = export.export_and_check(
        architecture=MLP_ARCH, config=config, weights=module.state_dict(), options=OnnxOptions(), workdir=work
    )
    assert result.packaging == "zip" and result.report["packaging"] == "zip"
    with zipfile.ZipFile(result.path) as bundle:
        names = set(bundle.namelist())
        assert "model.onnx" in names and any(name.endswith(".data") for name in names)
        bundle.extractall(tmp_path / "out")
    session = onnxruntime.InferenceSession(
        str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(5, 16)
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(got, module(x).numpy(), atol=1e-5)


def test_diff_matches_non_finite_values_only_to_themselves_and_stays_json() -> None:
    import json

    options = OnnxOptions()
    want = np.array([[1.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    same = export._diff(1, [want], [want.copy()], options)
    assert same["ok"] and same["max_abs_diff"] == 0.0 and same["nonfinite_mismatched"] == 0

    got = np.array([[1.0, 0.0, -np.inf, -np.inf]], dtype=np.float32)
    differ = export._diff(1, [want], [got], options)
    assert not differ["ok"] and differ["nonfinite_mismatched"] == 2 and differ["mismatched"] == 2
    assert differ["max_abs_diff"] == 0.0  # over the finite pairs only
    for result in (same, differ):
        json.dumps(result, allow_nan=False)


def test_diff_that_cannot_be_measured_says_why_without_infinity() -> None:
    import json

    want = np.zeros((2, 3), dtype=np.float32)
    for got, why in (([want, want], "onnxruntime 2"), ([want[:, :2]], "shape [2, 2]")):
        result = export._diff(2, [want], got, OnnxOptions())
        assert not result["ok"] and result["max_abs_diff"] is None and why in result["why"]
        json.dumps(result, allow_nan=False)
    assert not hasattr(export, "_shape_mismatch")
