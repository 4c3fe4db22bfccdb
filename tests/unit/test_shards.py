"""Sharded state_dicts (save_pretrained's model-0000k-of-0000n files) read as one, under the single-file rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.checkpoints.limits import ReadLimits
from app.checkpoints.shards import read_shards
from app.errors import LimitExceeded, UnreadableCheckpoint, UnsafeCheckpoint
from tests.hostile import gadgets, torch_zip_bytes

transformers = pytest.importorskip("transformers")

LIMITS = ReadLimits()


@pytest.fixture(scope="module")
def bert_state() -> dict[str, torch.Tensor]:
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99
    )
    torch.manual_seed(0)
    return {k: v.clone() for k, v in transformers.BertModel(config).state_dict().items()}


def _split(state: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    keys = sorted(state)
    return [{k: state[k] for k in keys[i::parts]} for i in range(parts)]


def _bin_shards(
    folder: Path, state: dict[str, torch.Tensor], parts: int
) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """What transformers 4 wrote with safe_serialization=False: torch.save'd shards and their index."""
    folder.mkdir(parents=True, exist_ok=True)
    shards, weight_map = [], {}
    for i, part in enumerate(_split(state, parts), start=1):
        name = f"pytorch_model-{i:05d}-of-{parts:05d}.bin"
        torch.save(part, folder / name)
        shards.append((name, folder / name))
        weight_map.update(dict.fromkeys(part, name))
    return shards, weight_map


def test_save_pretrained_safetensors_shards_read_as_the_whole_state_dict(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99
    )
    model = transformers.BertModel(config)
    model.load_state_dict(bert_state)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    names = sorted(set(index["weight_map"].values()))
    assert len(names) > 2
    loaded = read_shards([(n, tmp_path / n) for n in names], weight_map=index["weight_map"], limits=LIMITS)
    assert loaded.format == "safetensors"
    assert set(loaded.content) == set(index["weight_map"])
    for key, tensor in loaded.content.items():
        assert torch.equal(tensor, bert_state[key]), key


def test_torch_bin_shards_read_as_the_whole_state_dict(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    shards, weight_map = _bin_shards(tmp_path, bert_state, 3)
    loaded = read_shards(shards, weight_map=weight_map, limits=LIMITS)
    assert loaded.format == "torch_zip"
    assert set(loaded.content) == set(bert_state)
    assert all(torch.equal(loaded.content[k], v) for k, v in bert_state.items())


def test_an_index_that_disagrees_with_its_shards_is_refused(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    shards, weight_map = _bin_shards(tmp_path, bert_state, 2)
    moved = dict(weight_map)
    key = next(iter(moved))
    moved[key] = shards[1][0] if moved[key] == shards[0][0] else shards[0][0]
    with pytest.raises(UnreadableCheckpoint, match="the index puts it in"):
        read_shards(shards, weight_map=moved, limits=LIMITS)
    with pytest.raises(UnreadableCheckpoint, match="no shard holds") as info:
        read_shards(shards, weight_map={**weight_map, "extra.weight": shards[0][0]}, limits=LIMITS)
    assert info.value.details["missing"] == ["extra.weight"]


def test_a_tensor_in_two_shards_is_refused(tmp_path: Path, bert_state: dict[str, torch.Tensor]) -> None:
    first = dict(list(bert_state.items())[:3])
    torch.save(first, tmp_path / "a.bin")
    torch.save(first, tmp_path / "b.bin")
    with pytest.raises(UnreadableCheckpoint, match="more than one shard"):
        read_shards(
            [("a.bin", tmp_path / "a.bin"), ("b.bin", tmp_path / "b.bin")], weight_map=None, limits=LIMITS
        )


def test_a_shard_that_is_not_a_state_dict_is_refused(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    shards, weight_map = _bin_shards(tmp_path, bert_state, 2)
    torch.save({"epoch": 3, "model": dict(list(bert_state.items())[:2])}, shards[1][1])
    with pytest.raises(UnreadableCheckpoint, match="not a state_dict"):
        read_shards(shards, weight_map=weight_map, limits=LIMITS)


def test_a_hostile_shard_is_refused_as_any_upload_is(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    shards, weight_map = _bin_shards(tmp_path, bert_state, 2)
    marker = tmp_path / "pwned"
    hostile = {**dict(list(bert_state.items())[:1]), "x": gadgets(marker)["os.system"]}
    shards[1][1].write_bytes(torch_zip_bytes(hostile))
    with pytest.raises(UnsafeCheckpoint):
        read_shards(shards, weight_map=weight_map, limits=LIMITS)
    assert not marker.exists()


def test_the_tensor_limit_counts_all_shards_together(
    tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    shards, weight_map = _bin_shards(tmp_path, bert_state, 4)
    with pytest.raises(LimitExceeded):
        read_shards(shards, weight_map=weight_map, limits=ReadLimits(max_tensors=len(bert_state) - 1))
