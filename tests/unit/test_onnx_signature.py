"""The exporter's pure parts: which axes are dynamic, what inputs and outputs are called, masks, advice.

No transformers here; tests/unit/test_onnx_text.py exports real text models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from app.architectures.spec import Architecture, InputSpec
from app.onnx import advice, signature
from app.onnx.export import ConversionFailed, export_and_check
from app.onnx.options import OnnxOptions

SIZES = [(1, 8), (1, 16), (3, 8), (3, 16)]


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
    assert [n for n, _ in named({"output": {"a": t}, "b": [t]})] == ["output_a", "b_0"]


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


def test_check_masks_look_like_a_tokenizers() -> None:
    ids, mask = torch.ones(4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long)
    _, padded = signature.tokenizer_like(["input_ids", "attention_mask"], (ids, mask), torch.Generator())
    assert padded[0].tolist() == [1] * 6 and bool((padded[:, 0] == 1).all())
    assert bool((padded[:, :-1] >= padded[:, 1:]).all()), "ones, then padding"


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("No ONNX function found for aten::special_bessel_j0", "replace aten::special_bessel_j0"),
        ("Constraints violated (sequence)! You marked sequence as dynamic", "instead of `sequence`"),
        ("Could not guard on data-dependent expression Eq(u0, 1)", "torch.where"),
        ("Unsupported: DynamicCache is not a tensor (past_key_values)", "use_cache"),
        ("No ONNX function found for <OpOverload(op='prims.bessel_j0')>", "replace prims.bessel_j0"),
        ("something else entirely", "dynamic_batch=false"),
    ],
)
def test_failed_exports_say_what_to_change(reason: str, says: str) -> None:
    tokens = [InputSpec("input_ids", ("batch", "sequence"), dtype="int64", high=9)]
    assert says in advice.what_to_change(
        reason, options=OnnxOptions(), layout=signature.plan(tokens, OnnxOptions())
    )


def test_the_preferred_exporters_reason_decides_the_advice() -> None:
    layout = signature.plan([InputSpec("x", ("batch", 4))], OnnxOptions())
    told = advice.what_to_change(
        "No ONNX function found for aten.erfinv.default",
        "the model's control flow depends on its input values",
        options=OnnxOptions(),
        layout=layout,
    )
    assert "replace aten.erfinv.default" in told and "opset" in told and "torch.where" not in told


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
