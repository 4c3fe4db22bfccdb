"""Pure readers: format detection and malformed safetensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.checkpoints.formats import detect_format, scan_pickle_globals
from app.checkpoints.limits import ReadLimits
from app.checkpoints.reader import read_checkpoint, read_safetensors
from app.errors import CheckpointRejected, LimitExceeded, UnreadableCheckpoint, UnsafeCheckpoint


def _write(tmp_path: Path, data: bytes, name: str = "file.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _safetensors(header: dict[str, object], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_detection_ignores_the_file_name(tmp_path: Path) -> None:
    state = {"w": torch.ones(2)}
    torch.save(state, tmp_path / "model.safetensors")
    save_file(state, str(tmp_path / "model.pt"))
    torch.save(state, tmp_path / "legacy.zip", _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "model.safetensors") == "torch_zip"
    assert detect_format(tmp_path / "model.pt") == "safetensors"
    assert detect_format(tmp_path / "legacy.zip") == "torch_legacy"


def test_safetensors_tensors_are_views_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(0)}, str(path))
    tensors, metadata = read_safetensors(path, limits=ReadLimits())
    assert torch.equal(tensors["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert tensors["b"].shape == (0,)
    assert metadata == {}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (struct.pack("<Q", 10**6) + b'{"a": 1}', UnreadableCheckpoint),  # header past EOF
        (struct.pack("<Q", 4) + b"{\xff\xfe}", UnreadableCheckpoint),  # not UTF-8
        (
            _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            UnreadableCheckpoint,
        ),
        (
            _safetensors({"a": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            UnreadableCheckpoint,
        ),
        (
            _safetensors(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                },
                b"\0" * 4,
            ),
            UnreadableCheckpoint,
        ),  # overlapping offsets
        (
            _safetensors({"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]}}, b"\0" * 4),
            UnreadableCheckpoint,
        ),
        (
            _safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
            UnreadableCheckpoint,
        ),  # trailing bytes
        (_safetensors([1, 2]), UnreadableCheckpoint),  # type: ignore[arg-type]
    ],
)
def test_malformed_safetensors_are_refused(tmp_path: Path, data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_checkpoint(_write(tmp_path, data), limits=ReadLimits())


def test_safetensors_header_limit(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(2)}, str(path))
    with pytest.raises(LimitExceeded):
        read_safetensors(path, limits=ReadLimits(max_safetensors_header_bytes=8))


def test_tensor_count_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.pt"
    torch.save({f"t{i}": torch.ones(1) for i in range(20)}, path)
    with pytest.raises(LimitExceeded):
        read_checkpoint(path, limits=ReadLimits(max_tensors=5))


def test_pickle_scan_names_globals_without_running_them() -> None:
    payload = b"cposix\nsystem\n(S'touch /tmp/never'\ntR."
    assert scan_pickle_globals(payload) == {"posix.system"}


def test_every_refusal_is_a_checkpoint_rejection(tmp_path: Path) -> None:
    for data in (b"", b"\x00" * 100, b"PK\x05\x06" + b"\0" * 18, b"\x80\x04K\x01."):
        with pytest.raises((CheckpointRejected, UnsafeCheckpoint)):
            read_checkpoint(_write(tmp_path, data), limits=ReadLimits())
