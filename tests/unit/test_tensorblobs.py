"""Tensor blobs written beside the hashing: durable before anyone reads a path, errors not lost, and
composed files hashed in parallel equal to hashing them one by one."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest
import torch

from app.checkpoints.compose import StorageBlobs, safetensors_pieces, torch_pieces
from app.storage.composed import Recipe
from app.storage.recipe_hash import build_recipes
from app.storage.tensorblobs import DESCRIBE_CHUNK, TensorBlobs, describe, describe_file


@pytest.mark.parametrize("size", [0, 1, 7, DESCRIBE_CHUNK - 1, DESCRIBE_CHUNK, 3 * DESCRIBE_CHUNK + 5])
def test_describe_reads_in_chunks_and_agrees_with_hashlib_and_zlib(size: int) -> None:
    data = bytes((i * 7 + i // 251) % 256 for i in range(size))
    blob = describe(memoryview(data))
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert blob.crc32 == zlib.crc32(data)
    assert blob.size == size and blob.head == data[:8]


def test_every_blob_is_durable_once_finished_and_a_path_waits_for_it(tmp_path: Path) -> None:
    blobs = TensorBlobs(tmp_path / "tensors")
    added = [blobs.add(memoryview(bytes([n]) * (DESCRIBE_CHUNK + n))) for n in range(4)]
    # path_for is for reading: it returns only once the writes behind it are done.
    assert describe_file(blobs.path_for(added[-1].sha256)) == added[-1]
    blobs.finish()
    for blob in added:
        assert describe_file(blobs.staged_path(blob.sha256)) == blob
    assert not list(blobs.root.glob("??/.*.tmp"))


def test_a_failed_write_is_raised_by_finish_and_leaves_no_blob(tmp_path: Path) -> None:
    root = tmp_path / "tensors"
    blobs = TensorBlobs(root)
    data = memoryview(b"x" * 1000)
    target = blobs.staged_path(describe(data).sha256)
    target.parent.parent.mkdir(parents=True)
    target.parent.write_bytes(b"a file where the shard folder goes")
    blobs.add(data)
    with pytest.raises(OSError):
        blobs.finish()
    assert not target.exists()
    blobs.finish()  # nothing pending any more


def test_abandon_drops_queued_writes(tmp_path: Path) -> None:
    blobs = TensorBlobs(tmp_path / "tensors")
    for n in range(3):
        blobs.add(memoryview(bytes([n]) * DESCRIBE_CHUNK))
    blobs.abandon()
    for path in blobs.root.glob("??/*"):  # what was written before the stop is whole, nothing else
        assert describe_file(path).sha256 == path.name


def test_recipes_hashed_in_parallel_equal_recipes_built_one_by_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = {"a": torch.randn(600, 700), "b": torch.randn(9, dtype=torch.float16), "c": torch.arange(5)}
    weights["tied"] = weights["a"]
    blobs = TensorBlobs(tmp_path / "tensors")
    storages = StorageBlobs(blobs)
    drafts = {
        "full": torch_pieces({"model_state_dict": weights, "epoch": 3}, blobs=storages),
        "safetensors": safetensors_pieces(weights, blobs=storages, tied_groups=[["a", "tied"]]),
        "pt": torch_pieces(weights, blobs=storages),
    }
    blobs.finish()
    assert build_recipes(drafts, blobs) == {
        key: Recipe.build(pieces, blobs) for key, pieces in drafts.items()
    }
    assert build_recipes({}, blobs) == {}
