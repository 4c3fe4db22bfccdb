"""The hf folder zip composed from blobs (``compose_folder``) and the CRC-32 combination it relies on."""

from __future__ import annotations

import io
import json
import random
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.checkpoints.compose import StorageBlobs, compose_safetensors
from app.checkpoints.compose_folder import (
    LITERAL_FILE_BYTES,
    ComposedZipMismatch,
    check_composed_zip,
    compose_folder_zip,
)
from app.storage.composed import BlobRange, Literal, Recipe, iter_chunks
from app.storage.crc32 import crc32_combine
from app.storage.tensorblobs import TensorBlobs


@pytest.fixture
def blobs(tmp_path: Path) -> TensorBlobs:
    return TensorBlobs(tmp_path / "tensors")


def _bytes(recipe: Recipe, blobs: TensorBlobs) -> bytes:
    return b"".join(iter_chunks(recipe, blobs))


def _weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(64, 16, generator=generator),
        "layer.weight": torch.randn(16, 16, generator=generator).half(),
        "layer.bias": torch.zeros(16),
        "empty": torch.zeros(0),
    }


def _folder(tmp_path: Path, weights: dict[str, torch.Tensor]) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    (folder / "tokenizer.json").write_text("x" * (LITERAL_FILE_BYTES + 1))
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.mark.parametrize("seed", range(20))
def test_crc32_combine_equals_the_crc_of_the_concatenation(seed: int) -> None:
    rng = random.Random(seed)
    first, second = rng.randbytes(rng.randrange(0, 500)), rng.randbytes(rng.randrange(0, 5000))
    assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)


def test_the_composed_zip_is_the_folder_and_reads_the_same_blobs_as_safetensors(
    tmp_path: Path, blobs: TensorBlobs
) -> None:
    weights = _weights()
    folder = _folder(tmp_path, weights)
    composed_st = compose_safetensors(weights, blobs=StorageBlobs(blobs))
    stored_before = set(blobs)
    recipe = compose_folder_zip(folder, blobs=blobs)
    check_composed_zip(recipe, blobs, folder)

    # Tensors are the safetensors download's blobs (nothing new), plus the large tokenizer as one blob.
    (new,) = set(blobs) - stored_before
    assert new.read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert composed_st.blob_shas() <= recipe.blob_shas()
    tensor_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    literal = sum(piece.length for piece in recipe.pieces if isinstance(piece, Literal))
    assert literal < 4096 and recipe.size > tensor_bytes + LITERAL_FILE_BYTES

    data = _bytes(recipe, blobs)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every CRC right
        assert archive.namelist() == sorted(path.name for path in folder.iterdir())
        for name in archive.namelist():
            assert archive.read(name) == (folder / name).read_bytes(), name
        archive.extractall(tmp_path / "back")
    loaded = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(torch.equal(loaded[key], tensor) for key, tensor in weights.items())
    again = compose_folder_zip(folder, blobs=blobs)
    assert again == recipe and again.to_json() == recipe.to_json()  # the same bytes every time


def test_a_composition_that_is_not_the_folder_is_refused(tmp_path: Path, blobs: TensorBlobs) -> None:
    folder = _folder(tmp_path, _weights())
    recipe = compose_folder_zip(folder, blobs=blobs)
    (folder / "config.json").write_text(json.dumps({"model_type": "tinY"}))  # same size, other bytes
    with pytest.raises(ComposedZipMismatch, match=r"config\.json"):
        check_composed_zip(recipe, blobs, folder)
    (folder / "extra.txt").write_text("more")
    with pytest.raises(ComposedZipMismatch, match="holds"):
        check_composed_zip(recipe, blobs, folder)


def test_a_tensor_blob_with_other_bytes_fails_the_crc(tmp_path: Path, blobs: TensorBlobs) -> None:
    folder = _folder(tmp_path, _weights())
    recipe = compose_folder_zip(folder, blobs=blobs)
    target = next(p for p in recipe.pieces if isinstance(p, BlobRange) and p.length > 1000)
    path = blobs.path_for(target.sha256)
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ComposedZipMismatch):
        check_composed_zip(recipe, blobs, folder)


def test_a_safetensors_file_whose_header_does_not_parse_is_stored_whole(
    tmp_path: Path, blobs: TensorBlobs
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"junk" * 30_000)
    recipe = compose_folder_zip(folder, blobs=blobs)
    check_composed_zip(recipe, blobs, folder)
    assert [p.length for p in recipe.pieces if isinstance(p, BlobRange)] == [8 + 4 * 30_000]


def test_new_blobs_are_written_whole_while_the_folder_is_composed(tmp_path: Path, blobs: TensorBlobs) -> None:
    """Every tensor and large extra is new here, so each is written by the sink's writer thread after
    ``add`` returned: the bytes must stay readable until the writes are done."""
    weights = {f"layer{i}.weight": torch.full((128, 128), float(i)) for i in range(6)}
    folder = _folder(tmp_path, weights)
    (folder / "vocab.txt").write_text("y" * (3 * LITERAL_FILE_BYTES))
    recipe = compose_folder_zip(folder, blobs=blobs)
    check_composed_zip(recipe, blobs, folder)
    with zipfile.ZipFile(io.BytesIO(_bytes(recipe, blobs))) as archive:
        for name in archive.namelist():
            assert archive.read(name) == (folder / name).read_bytes(), name
