"""Pure layout normalisation: prefixes, wrapper keys and optimizer names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.checkpoints.layout import normalise, optimizer_name, strip_wrapper_prefixes
from app.errors import UnreadableCheckpoint

EXPECTED = ["linear.weight", "linear.bias"]


def _state(prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}linear.weight": torch.zeros(1, 10), f"{prefix}linear.bias": torch.zeros(1)}


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "module.",
        "_orig_mod.",
        "module._orig_mod.",
        "_orig_mod.module.",
        "model.",
        "net.",
        "my_lightning_attr.",
    ],
)
def test_wrapper_prefixes_are_removed(prefix: str) -> None:
    assert list(strip_wrapper_prefixes(_state(prefix), EXPECTED)) == EXPECTED


def test_compiled_submodule_prefix_in_the_middle() -> None:
    state = {"encoder._orig_mod.weight": torch.zeros(1)}
    assert list(strip_wrapper_prefixes(state, ["encoder.weight"])) == ["encoder.weight"]


def test_a_prefix_the_architecture_itself_has_is_kept() -> None:
    expected = ["model.linear.weight", "model.linear.bias"]
    assert list(strip_wrapper_prefixes(_state("model."), expected)) == expected


def test_an_unknown_prefix_that_does_not_help_is_kept() -> None:
    assert list(strip_wrapper_prefixes(_state("other."), ["something.else"])) == [
        "other.linear.weight",
        "other.linear.bias",
    ]


def test_a_base_model_prefix_is_removed_or_added_when_that_makes_every_key_fit() -> None:
    base = ["embeddings.weight", "encoder.weight"]
    with_head = ["bert.embeddings.weight", "bert.encoder.weight", "classifier.weight"]
    weights = {"bert.embeddings.weight": torch.zeros(1), "bert.encoder.weight": torch.zeros(1)}
    assert list(strip_wrapper_prefixes(weights, base)) == base
    bare = {"embeddings.weight": torch.zeros(1), "encoder.weight": torch.zeros(1)}
    assert list(strip_wrapper_prefixes(bare, with_head)) == with_head[:2]
    # not when some key would still name nothing in the architecture
    assert list(strip_wrapper_prefixes({**bare, "pooler.weight": torch.zeros(1)}, with_head)) == [
        "embeddings.weight",
        "encoder.weight",
        "pooler.weight",
    ]


def _optimizer_state(cls: type[torch.optim.Optimizer], **kwargs: object) -> dict[str, object]:
    params = [nn.Parameter(torch.zeros(2))]
    return {"optimizer_state_dict": cls(params, **kwargs).state_dict()}  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (torch.optim.SGD, {"lr": 0.1}, "SGD"),
        (torch.optim.Adam, {}, "Adam"),
        (torch.optim.AdamW, {}, "AdamW"),
        (torch.optim.RMSprop, {}, "RMSprop"),
        (torch.optim.Adagrad, {}, "Adagrad"),
        (torch.optim.Adadelta, {}, "Adadelta"),
        (torch.optim.NAdam, {}, "NAdam"),
        (torch.optim.RAdam, {}, "RAdam"),
        (torch.optim.Rprop, {}, "Rprop"),
        (torch.optim.ASGD, {}, "ASGD"),
    ],
)
def test_optimizer_is_named_from_its_param_groups(
    cls: type[torch.optim.Optimizer], kwargs: dict[str, object], name: str
) -> None:
    assert optimizer_name(_optimizer_state(cls, **kwargs)) == name


def test_optimizer_named_in_the_file_wins() -> None:
    assert optimizer_name({"optimizer_name": "Lion", "optimizer_state_dict": {}}) == "Lion"
    assert optimizer_name({}) is None


def test_training_checkpoint_fields() -> None:
    result = normalise(
        {
            "model_state_dict": _state(),
            "optimizer_state_dict": {"state": {}, "param_groups": []},
            "epoch": 5,
            "step": 9,
            "loss": 1.5,
        },
        EXPECTED,
    )
    assert result.layout == "training_checkpoint"
    assert result.training == {"epoch": 5, "step": 9, "optimizer": None}
    assert list(result.training_state) == ["optimizer_state_dict", "epoch", "step", "loss"]


@pytest.mark.parametrize("content", [[1, 2, 3], {"epoch": 1}, {}, torch.zeros(3)])
def test_content_without_weights_is_unreadable(content: object) -> None:
    with pytest.raises(UnreadableCheckpoint):
        normalise(content, EXPECTED)
