"""Text models to ONNX: dynamic batch and sequence, named inputs and outputs, no KV cache.

Each export costs seconds, so each model is exported once per module and several tests read the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from app.architectures.libraries.transformers import TransformersLibrary
from app.architectures.spec import Architecture
from app.onnx.export import ExportResult, export_and_check
from app.onnx.options import OnnxOptions

pytest.importorskip("transformers")

from tests.fixtures.text_architectures import TINY_BERT, TINY_GPT2, VOCAB

SIZES = [(1, 8), (1, 16), (3, 8), (3, 16)]


def _export(architecture: Architecture, workdir: Path, seed: int = 0) -> tuple[nn.Module, ExportResult]:
    config = architecture.effective_config({})
    torch.manual_seed(seed)
    module = architecture.build(config).eval()
    result = export_and_check(
        architecture=architecture,
        config=config,
        weights=module.state_dict(),
        options=OnnxOptions(),
        workdir=workdir,
    )
    return module, result


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ExportResult]:
    return _export(TINY_BERT, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, ExportResult]:
    return _export(TINY_GPT2, tmp_path_factory.mktemp("gpt2"))


def _tokens(names: list[str], batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    made = {
        "input_ids": torch.randint(0, VOCAB, (batch, length), generator=generator),
        "attention_mask": (torch.arange(length)[None, :] < lengths[:, None]).long(),
        "token_type_ids": torch.randint(0, 2, (batch, length), generator=generator),
    }
    return {name: made[name] for name in names}


def _runs_like_pytorch(module: nn.Module, result: ExportResult, outputs: list[str]) -> None:
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    assert [item.name for item in session.get_outputs()] == outputs
    for batch, length in SIZES:
        inputs = _tokens(names, batch, length, seed=batch * 100 + length)
        got = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
        with torch.inference_mode():
            want = module(**inputs, use_cache=False)
        for name, array in zip(outputs, got, strict=True):
            assert array.shape[:1] == (batch,)
            np.testing.assert_allclose(array, want[name].numpy(), atol=1e-4, rtol=1e-3)


def test_bert_exports_with_dynamic_batch_and_sequence(bert: tuple[nn.Module, ExportResult]) -> None:
    module, result = bert
    report = result.report
    assert report["exporter"] == "dynamo" and result.packaging == "onnx"
    tokens = ["input_ids", "attention_mask", "token_type_ids"]
    assert report["inputs"] == [
        {"name": name, "shape": ["batch", "sequence"], "dtype": "int64"} for name in tokens
    ]
    assert report["outputs"] == [
        {"name": "last_hidden_state", "shape": ["batch", "sequence", 32], "dtype": "float32"},
        {"name": "pooler_output", "shape": ["batch", 32], "dtype": "float32"},
    ]
    assert report["batch_sizes"] == [1, 3] and report["sequence_lengths"] == [8, 16]
    assert report["checked"] == [{name: [b, n] for name in tokens} for b, n in SIZES]
    assert [(item["batch_size"], item["sequence_length"]) for item in report["per_batch"]] == SIZES
    assert report["max_abs_diff"] <= 1e-4
    _runs_like_pytorch(module, result, ["last_hidden_state", "pooler_output"])


def test_gpt2_exports_without_a_kv_cache(gpt2: tuple[nn.Module, ExportResult]) -> None:
    module, result = gpt2
    report = result.report
    assert report["exporter"] == "dynamo"
    assert [item["name"] for item in report["inputs"]] == ["input_ids", "attention_mask"]
    assert report["outputs"] == [
        {"name": "logits", "shape": ["batch", "sequence", VOCAB], "dtype": "float32"}
    ]
    assert len(report["checked"]) == 4 and report["checked"][-1] == {
        "input_ids": [3, 16],
        "attention_mask": [3, 16],
    }
    _runs_like_pytorch(module, result, ["logits"])


def test_transformers_models_lose_their_cache_and_others_are_left_alone() -> None:
    gpt2 = TINY_GPT2.build(TINY_GPT2.effective_config({}))
    assert TransformersLibrary().prepare_export(gpt2) == {"use_cache": False}
    assert gpt2.config.use_cache is False and gpt2.config.return_dict is True
    assert TransformersLibrary().prepare_export(nn.Linear(2, 2)) == {}
