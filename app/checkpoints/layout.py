"""Recognise what a loaded checkpoint holds and bring it to one shape: a state_dict plus training state."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from app.checkpoints.modules import module_state
from app.errors import UnreadableCheckpoint

Layout = Literal["state_dict", "training_checkpoint", "lightning", "module"]

_MODEL_KEYS = ("model_state_dict", "state_dict", "model", "module", "net", "network")
_OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer", "optim", "optimizer_state")
_OPTIMIZER_NAME_KEYS = ("optimizer_name", "optimizer_class", "optimizer_type")
# Wrapper prefixes that training tools add to every key: DataParallel/DDP, Lightning's usual attributes.
_WRAPPER_PREFIXES = ("module.", "model.", "net.", "network.")
_COMPILE_PREFIX = "_orig_mod."


@dataclass
class Normalised:
    layout: Layout
    state_dict: dict[str, torch.Tensor]
    # Everything else the file holds, renamed to the classic layout (optimizer_state_dict, epoch, ...).
    training_state: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "step": None, "optimizer": None})
    renamed_keys: bool = False
    # The weights' keys as the file named them, before any prefix was removed or added.
    original_keys: list[str] = field(default_factory=list)


def normalise(content: Any, expected_keys: Collection[str]) -> Normalised:
    """Find the model weights in ``content`` and name them as the architecture does."""
    if isinstance(content, nn.Module):
        return _finish("module", module_state(content), {}, expected_keys)
    if not isinstance(content, Mapping):
        raise UnreadableCheckpoint(
            f"The checkpoint holds a {type(content).__name__}; expected a state_dict or a checkpoint dict."
        )
    if _is_state_dict(content):
        return _finish("state_dict", dict(content), {}, expected_keys)
    if "pytorch-lightning_version" in content or "optimizer_states" in content:
        return _lightning(content, expected_keys)
    for key in _MODEL_KEYS:
        weights = content.get(key)
        if isinstance(weights, nn.Module):
            weights = module_state(weights)
        if isinstance(weights, Mapping) and _is_state_dict(weights):
            # The weights go out as model_state_dict; a stale entry of that name must not overwrite them.
            rest = {k: v for k, v in content.items() if k not in (key, "model_state_dict")}
            return _finish("training_checkpoint", dict(weights), _classic_training_state(rest), expected_keys)
    raise UnreadableCheckpoint(
        "The checkpoint dict has no model weights: expected tensors, or one of the keys "
        f"{', '.join(_MODEL_KEYS)} holding a state_dict (found keys: {', '.join(map(str, list(content)[:20]))})."
    )


def _is_state_dict(candidate: Mapping[Any, Any]) -> bool:
    return bool(candidate) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()
    )


def _lightning(content: Mapping[str, Any], expected_keys: Collection[str]) -> Normalised:
    weights = content.get("state_dict")
    if not isinstance(weights, Mapping) or not _is_state_dict(weights):
        raise UnreadableCheckpoint("The Lightning checkpoint has no state_dict of tensors.")
    rest: dict[str, Any] = {k: v for k, v in content.items() if k != "state_dict"}
    optimizer_states = rest.get("optimizer_states")
    if isinstance(optimizer_states, list) and optimizer_states:
        rest["optimizer_state_dict"] = optimizer_states[0]
        if len(optimizer_states) == 1:
            del rest["optimizer_states"]
    return _finish("lightning", dict(weights), _classic_training_state(rest), expected_keys)


def _classic_training_state(rest: Mapping[str, Any]) -> dict[str, Any]:
    """Rename the optimizer entry to ``optimizer_state_dict`` and put the classic keys first.

    Modules stored beside the weights (an EMA copy, say) become their state_dicts, so the full
    checkpoint stays loadable with ``weights_only=True``.
    """
    state = {k: _weights_only(v) for k, v in rest.items() if k != "model_state_dict"}
    for key in _OPTIMIZER_KEYS[1:]:
        if "optimizer_state_dict" not in state and isinstance(state.get(key), Mapping):
            state["optimizer_state_dict"] = state.pop(key)
    ordered: dict[str, Any] = {k: state.pop(k) for k in ("optimizer_state_dict", "epoch") if k in state}
    return {**ordered, **state}


def _weights_only(value: Any, depth: int = 0) -> Any:
    if depth > 32:
        return value
    if isinstance(value, nn.Module):
        return module_state(value)
    if isinstance(value, dict):
        return (
            type(value)((k, _weights_only(v, depth + 1)) for k, v in value.items())
            if not isinstance(value, defaultdict)
            else value
        )
    if isinstance(value, list):
        return [_weights_only(v, depth + 1) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_weights_only(v, depth + 1) for v in value)
    return value


def _finish(
    layout: Layout,
    weights: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    expected_keys: Collection[str],
) -> Normalised:
    renamed = strip_wrapper_prefixes(weights, expected_keys)
    return Normalised(
        layout=layout,
        state_dict=renamed,
        training_state=training_state,
        training=training_summary(training_state),
        renamed_keys=list(renamed) != list(weights),
        original_keys=list(weights),
    )


def strip_wrapper_prefixes(
    weights: Mapping[str, torch.Tensor], expected_keys: Collection[str]
) -> dict[str, torch.Tensor]:
    """Remove ``module.`` (DataParallel/DDP), ``_orig_mod.`` (torch.compile), Lightning attribute prefixes and
    base-model prefixes (``bert.``); add a base-model prefix where the architecture has a head around it."""
    expected = set(expected_keys)
    renamed = {_drop_compile_prefix(key): value for key, value in weights.items()}
    if len(renamed) != len(weights):
        raise UnreadableCheckpoint(
            "The state_dict names the same weight twice (with and without a torch.compile '_orig_mod.' prefix)."
        )
    while renamed and set(renamed) != expected:
        heads = {key.split(".", 1)[0] for key in renamed}
        if len(heads) != 1 or any("." not in key for key in renamed):
            break
        prefix = heads.pop() + "."
        if expected and all(key.startswith(prefix) for key in expected):
            break  # the architecture itself has this attribute
        stripped = {key[len(prefix) :]: value for key, value in renamed.items()}
        # An unfamiliar prefix is removed only when that makes keys line up with the architecture.
        if prefix not in _WRAPPER_PREFIXES and not (set(stripped) & expected):
            break
        renamed = stripped
    return _add_base_prefix(renamed, expected)


def _add_base_prefix(weights: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Put a base model's weights under the attribute a model with a head keeps it in.

    A ``GPT2Model`` state_dict fits ``GPT2LMHeadModel`` as ``transformer.*`` (its head is tied to the
    embeddings); ``from_pretrained`` does the same with ``base_model_prefix``. Done only when every key
    then names a weight of the architecture, so nothing the upload holds is dropped or misread.
    """
    if not weights or not expected or set(weights) & expected:
        return weights
    heads = {key.split(".", 1)[0] + "." for key in expected if "." in key}
    for prefix in sorted(heads):
        added = {prefix + key: value for key, value in weights.items()}
        if set(added) <= expected:
            return added
    return weights


def prefixes_tried(original_keys: Collection[str], expected_keys: Collection[str]) -> dict[str, list[str]]:
    """For a mismatch's details: the prefixes every uploaded key shares (each tried as a wrapper to remove)
    and the architecture's top-level attributes (each tried as a base-model prefix to add)."""
    keys = [_drop_compile_prefix(key) for key in original_keys]
    shared: list[str] = []
    while keys and all("." in key for key in keys) and len({key.split(".", 1)[0] for key in keys}) == 1:
        head = keys[0].split(".", 1)[0] + "."
        shared.append(head)
        keys = [key[len(head) :] for key in keys]
    heads = sorted({key.split(".", 1)[0] + "." for key in expected_keys if "." in key})
    return {"removed": shared, "added": heads[:16]}


def _drop_compile_prefix(key: str) -> str:
    if key.startswith(_COMPILE_PREFIX):
        key = key[len(_COMPILE_PREFIX) :]
    return key.replace("." + _COMPILE_PREFIX, ".")


# What the version row keeps of the file's own values: counters a database column holds, and a class name.
_MAX_COUNTER = 2**63 - 1
_CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")


def _counter(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNTER:
        return value
    return None


def training_summary(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "epoch": _counter(state.get("epoch")),
        "step": _counter(state.get("global_step", state.get("step"))),
        "optimizer": optimizer_name(state),
    }


def optimizer_name(state: Mapping[str, Any]) -> str | None:
    """The optimizer's class where the file names it or its param-group keys leave no doubt."""
    for key in _OPTIMIZER_NAME_KEYS:
        value = state.get(key)
        if isinstance(value, str):
            # Only a name that looks like a class: anything else is not one we would show or store.
            return value if _CLASS_NAME.match(value) else None
    optimizer = state.get("optimizer_state_dict")
    if not isinstance(optimizer, Mapping):
        return None
    groups = optimizer.get("param_groups")
    if not isinstance(groups, list) or not groups or not isinstance(groups[0], Mapping):
        return None
    return _optimizer_from_group(groups[0])


def _optimizer_from_group(group: Mapping[str, Any]) -> str | None:
    keys = set(group)
    if {"dampening", "nesterov"} <= keys:
        return "SGD"
    if {"etas", "step_sizes"} <= keys:
        return "Rprop"
    if {"lambd", "alpha", "t0"} <= keys:
        return "ASGD"
    if {"alpha", "centered"} <= keys:
        return "RMSprop"
    if {"lr_decay", "initial_accumulator_value"} <= keys:
        return "Adagrad"
    if "momentum_decay" in keys:
        return "NAdam"
    if "rho" in keys and "betas" not in keys:
        return "Adadelta"
    if {"betas", "amsgrad"} <= keys:
        decoupled = group.get("decoupled_weight_decay")
        if decoupled is True:
            return "AdamW"
        if decoupled is False:
            return "Adam"
        return None  # older torch wrote identical groups for Adam and AdamW
    if "betas" in keys and "decoupled_weight_decay" in keys:
        return "RAdam"
    return None
