"""save_pretrained folders: unpacking tar and zip bodies safely, and sorting files into config, weights, extras."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from app.checkpoints.folder import (
    FolderFile,
    is_folder_archive,
    sort_folder,
    unpack_archive,
)
from app.checkpoints.limits import ReadLimits
from app.errors import LimitExceeded, TooLarge, UnreadableCheckpoint, UnsafeCheckpoint

LIMITS = ReadLimits(max_extra_file_bytes=1024, max_extra_files=4, max_unpacked_bytes=1 << 20)


def _folder(tmp_path: Path, files: dict[str, bytes]) -> list[FolderFile]:
    out = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out.append(FolderFile(name=name, path=tmp_path / name, size=len(data)))
    return out


def _tar(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


CONFIG = json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode()
INDEX = json.dumps(
    {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
).encode()


def test_a_single_file_folder_sorts_into_config_weights_and_extras(tmp_path: Path) -> None:
    files = _folder(
        tmp_path, {"config.json": CONFIG, "model.safetensors": b"w" * 10, "vocab.txt": b"[PAD]\n"}
    )
    folder = sort_folder(files, limits=LIMITS)
    assert folder.weights_format == "safetensors"
    assert [f.name for f in folder.weights] == ["model.safetensors"]
    assert folder.config == {"architectures": ["BertModel"], "model_type": "bert"}
    assert [f.name for f in folder.extras] == ["vocab.txt"]
    assert folder.index is None


def test_shards_come_in_the_order_of_their_index_and_every_one_must_be_sent(tmp_path: Path) -> None:
    names = {
        "model.safetensors.index.json": INDEX,
        "model-00002-of-00002.safetensors": b"2",
        "model-00001-of-00002.safetensors": b"1",
    }
    folder = sort_folder(_folder(tmp_path, names), limits=LIMITS)
    assert [f.name for f in folder.weights] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert folder.index is not None and folder.extras == ()

    missing = {k: v for k, v in names.items() if k != "model-00002-of-00002.safetensors"}
    (tmp_path / "missing").mkdir()
    with pytest.raises(UnreadableCheckpoint, match="not sent") as info:
        sort_folder(_folder(tmp_path / "missing", missing), limits=LIMITS)
    assert info.value.details["missing"] == ["model-00002-of-00002.safetensors"]


def test_a_shard_the_index_does_not_name_is_refused(tmp_path: Path) -> None:
    names = {
        "model.safetensors.index.json": INDEX,
        "model-00001-of-00002.safetensors": b"1",
        "model-00002-of-00002.safetensors": b"2",
        "model-00003-of-00003.safetensors": b"3",
    }
    with pytest.raises(UnreadableCheckpoint, match="not named by the folder's weights index"):
        sort_folder(_folder(tmp_path, names), limits=LIMITS)


def test_pytorch_model_bin_is_the_torch_form_and_safetensors_wins_when_both_are_sent(tmp_path: Path) -> None:
    folder = sort_folder(_folder(tmp_path, {"pytorch_model.bin": b"pt"}), limits=LIMITS)
    assert folder.weights_format == "torch" and [f.name for f in folder.weights] == ["pytorch_model.bin"]
    both = tmp_path / "both"
    both.mkdir()
    folder = sort_folder(
        _folder(both, {"pytorch_model.bin": b"pt", "model.safetensors": b"st"}), limits=LIMITS
    )
    assert folder.weights_format == "safetensors"
    assert folder.ignored == ("pytorch_model.bin",) and folder.extras == ()


def test_a_folder_without_weights_says_what_to_send(tmp_path: Path) -> None:
    with pytest.raises(UnreadableCheckpoint, match=r"model\.safetensors"):
        sort_folder(_folder(tmp_path, {"config.json": CONFIG}), limits=LIMITS)


def test_extras_are_bounded_in_size_and_number(tmp_path: Path) -> None:
    with pytest.raises(TooLarge, match="WEIGHTVAULT_MAX_EXTRA_FILE_BYTES") as info:
        sort_folder(_folder(tmp_path, {"model.safetensors": b"w", "big.txt": b"x" * 2000}), limits=LIMITS)
    assert info.value.details == {"file": "big.txt", "limit": 1024}
    many = tmp_path / "many"
    many.mkdir()
    files = {"model.safetensors": b"w", **{f"extra{i}.txt": b"x" for i in range(5)}}
    with pytest.raises(LimitExceeded, match="at most 4"):
        sort_folder(_folder(many, files), limits=LIMITS)


def test_a_config_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableCheckpoint, match="JSON object"):
        sort_folder(_folder(tmp_path, {"config.json": b"[1, 2]", "model.safetensors": b"w"}), limits=LIMITS)


@pytest.mark.parametrize("prefix", ["", "my-bert/", "./my-bert/"])
def test_a_tar_unpacks_flat_whether_files_are_at_the_top_or_in_one_folder(
    tmp_path: Path, prefix: str
) -> None:
    archive = _tar(tmp_path / "m.tar", {"config.json": CONFIG, "model.safetensors": b"w" * 5}, prefix)
    assert is_folder_archive(archive)
    dest = tmp_path / "out"
    dest.mkdir()
    files = unpack_archive(archive, dest, limits=LIMITS)
    assert sorted((f.name, f.size) for f in files) == [("config.json", len(CONFIG)), ("model.safetensors", 5)]
    assert (dest / "model.safetensors").read_bytes() == b"w" * 5


def test_a_deflated_zip_unpacks_and_torch_saves_own_zip_is_not_a_folder(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "m.zip", {"m/config.json": CONFIG, "m/model.safetensors": b"w"}, zipfile.ZIP_DEFLATED
    )
    assert is_folder_archive(archive)
    dest = tmp_path / "out"
    dest.mkdir()
    assert {f.name for f in unpack_archive(archive, dest, limits=LIMITS)} == {
        "config.json",
        "model.safetensors",
    }
    torch_zip = _zip(tmp_path / "t.pt", {"archive/data.pkl": b"\x80\x02}.", "archive/version": b"3\n"})
    assert not is_folder_archive(torch_zip)


def test_archive_links_and_devices_are_unsafe(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as out:
        link = tarfile.TarInfo("config.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        out.addfile(link)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeCheckpoint, match="link or device"):
        unpack_archive(archive, dest, limits=LIMITS)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.json", "/etc/cron.d/x", "a/../../b", "dir\\x.json"])
def test_names_that_climb_out_or_are_absolute_are_unsafe(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "bad.tar", {name: b"x", "model.safetensors": b"w"})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeCheckpoint):
        unpack_archive(archive, dest, limits=LIMITS)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.json").exists()


def test_subfolders_hidden_files_and_duplicates_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    for i, files in enumerate(
        [
            {"m/onnx/model.onnx": b"x", "m/model.safetensors": b"w"},
            {"a/model.safetensors": b"w", "b/config.json": CONFIG},
            {".hidden": b"x", "model.safetensors": b"w"},
        ]
    ):
        (dest / str(i)).mkdir(parents=True)
        with pytest.raises(UnreadableCheckpoint):
            unpack_archive(_tar(tmp_path / f"{i}.tar", files), dest / str(i), limits=LIMITS)
    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w") as out:
        for data in (b"one", b"two"):
            info = tarfile.TarInfo("model.safetensors")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    (dest / "twice").mkdir()
    with pytest.raises(UnreadableCheckpoint, match="twice"):
        unpack_archive(twice, dest / "twice", limits=LIMITS)


def test_a_zip_bomb_stops_at_the_limit_quickly_and_small(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as out,
        out.open("model.safetensors", "w") as f,
    ):
        zeros = bytes(1 << 20)
        for _ in range(64):  # 64 MiB of zeros, ~64 KiB compressed
            f.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    dest = tmp_path / "out"
    dest.mkdir()
    started = time.monotonic()
    with pytest.raises(TooLarge, match="upload limit"):
        unpack_archive(bomb, dest, limits=LIMITS)
    assert time.monotonic() - started < 30
    assert sum(os.path.getsize(p) for p in dest.iterdir()) <= LIMITS.max_unpacked_bytes + (1 << 20)


def test_an_extra_over_its_limit_stops_while_unpacking(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "x.tar", {"model.safetensors": b"w", "tokenizer.json": b"t" * 5000})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(TooLarge, match=r"tokenizer\.json"):
        unpack_archive(archive, dest, limits=LIMITS)


def test_a_body_that_is_neither_tar_nor_zip_is_unreadable(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(4096))
    assert not is_folder_archive(junk)
    with pytest.raises(UnreadableCheckpoint, match="neither"):
        unpack_archive(junk, tmp_path, limits=LIMITS)
