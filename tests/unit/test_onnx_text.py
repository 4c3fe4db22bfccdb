"""Text models to ONNX: dynamic batch and sequence, named inputs and outputs, no KV cache.

Each export costs seconds, so each model is exported once per module and several tests read the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from pydantic import BaseModel
from torch import nn

from app.architectures.spec import Architecture, InputSpec
from app.onnx import advice, signature, text
from app.onnx.export import ConversionFailed, ExportResult, export_and_check
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


# --- the pure parts, without exporting ---------------------------------------------------------------


class _Empty(BaseModel):
    pass


def test_plan_makes_batch_and_sequence_dynamic_and_checks_both() -> None:
    tokens = [InputSpec("input_ids", ("batch", "sequence"), dtype="int64", high=9)]
    layout = signature.plan(tokens, OnnxOptions())
    assert layout.dynamic_axes == ({0: "batch", 1: "sequence"},)
    assert layout.checks == tuple({"batch": b, "sequence": n} for b, n in SIZES)
    fixed_batch = signature.plan(tokens, OnnxOptions(dynamic_batch=False))
    assert fixed_batch.dynamic_axes == ({1: "sequence"},) and fixed_batch.trace["batch"] == 1
    assert fixed_batch.checks == ({"batch": 1, "sequence": 8}, {"batch": 1, "sequence": 16})
    # Models without a sequence axis are checked as before; other symbolic names stay fixed.
    images = signature.plan([InputSpec("x", ("batch", 3, "side"))], OnnxOptions())
    assert images.dynamic_axes == ({0: "batch"},) and images.checks == ({"batch": 1}, {"batch": 7})


def test_outputs_are_named_by_key_or_position() -> None:
    t = torch.zeros(1)
    named = signature.named_tensors
    assert [n for n, _ in named(t)] == ["output"]
    assert [n for n, _ in named((t, t))] == ["output_0", "output_1"]
    assert [n for n, _ in named({"logits": t, "cache": object(), "hidden": (t, t)})] == [
        "logits",
        "hidden_0",
        "hidden_1",
    ]
    assert named([None, t])[0][0] == "output_1"


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_plain_modules_get_positional_output_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: str
) -> None:
    import onnx

    from app.onnx import export
    from tests.fixtures.architectures import ARCHITECTURES, TwoHeads

    if exporter == "torchscript":

        def refuse(*_args: object) -> None:
            raise RuntimeError("dynamo is unavailable in this test")

        monkeypatch.setattr(export, "_export_dynamo", refuse)
    two_heads = next(a for a in ARCHITECTURES if a.name == "two-heads")
    result = export_and_check(
        architecture=two_heads,
        config={},
        weights=TwoHeads().state_dict(),
        options=OnnxOptions(),
        workdir=tmp_path,
    )
    assert result.report["exporter"] == exporter
    assert result.report["inputs"] == [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]
    assert result.report["outputs"] == [
        {"name": "output_0", "shape": ["batch", 2], "dtype": "float32"},
        {"name": "output_1", "shape": ["batch", 3], "dtype": "float32"},
    ]
    assert result.report["checked"] == [{"x": [1, 4]}, {"x": [7, 4]}]
    assert result.report["sequence_lengths"] == []
    # The weights keep the module's own names, not those of the wrapper the exporters were given.
    weights = {init.name for init in onnx.load(str(result.path)).graph.initializer}
    assert {"body.weight", "left.weight", "right.bias"} <= weights
    assert not any(name.startswith("module.") for name in weights)


def test_transformers_models_lose_their_cache_and_others_are_left_alone() -> None:
    gpt2 = TINY_GPT2.build(TINY_GPT2.effective_config({}))
    assert text.prepare(gpt2) == {"use_cache": False}
    assert gpt2.config.use_cache is False and gpt2.config.return_dict is True
    assert text.prepare(nn.Linear(2, 2)) == {}


def test_check_masks_look_like_a_tokenizers() -> None:
    ids, mask = torch.ones(4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long)
    _, padded = text.tokenizer_like(["input_ids", "attention_mask"], (ids, mask), torch.Generator())
    assert padded[0].tolist() == [1] * 6 and bool((padded[:, 0] == 1).all())
    assert bool((padded[:, :-1] >= padded[:, 1:]).all()), "ones, then padding"


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("No ONNX function found for aten::special_bessel_j0", "replace aten::special_bessel_j0"),
        ("Constraints violated (sequence)! You marked sequence as dynamic", "instead of `sequence`"),
        ("Could not guard on data-dependent expression Eq(u0, 1)", "torch.where"),
        ("Unsupported: DynamicCache is not a tensor (past_key_values)", "use_cache"),
        ("something else entirely", "opset"),
    ],
)
def test_failed_exports_say_what_to_change(reason: str, says: str) -> None:
    tokens = [InputSpec("input_ids", ("batch", "sequence"), dtype="int64", high=9)]
    assert says in advice.what_to_change(
        reason, options=OnnxOptions(), layout=signature.plan(tokens, OnnxOptions())
    )


class _FixedLength(nn.Module):
    """Flattens the sequence into a Linear layer, so it only runs at one length."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4 * 8, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(input_ids).flatten(1))  # type: ignore[no-any-return]


def test_a_model_that_fixes_the_sequence_length_is_told_to_declare_it(tmp_path: Path) -> None:
    spec = InputSpec("input_ids", ("batch", "sequence"), dtype="int64", high=10, example_dims={"sequence": 8})
    architecture = Architecture(
        name="fixed-length",
        description="",
        config_model=_Empty,
        factory=lambda _config: _FixedLength(),
        input_specs=lambda _config: [spec],
    )
    with pytest.raises(ConversionFailed) as failed:
        export_and_check(
            architecture=architecture,
            config={},
            weights=_FixedLength().state_dict(),
            options=OnnxOptions(),
            workdir=tmp_path,
        )
    assert failed.value.code == "export_failed"
    message = failed.value.message
    assert "sequence length 11" in message and "instead of `sequence`" in message
    assert "Traceback" not in message
