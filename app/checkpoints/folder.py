"""A ``save_pretrained`` folder as uploaded: unpacked from a tar or zip body, sorted into config, weights, extras.

Pure file handling, no torch: the weights files found here go through the same reader as a single checkpoint.
An archive is hostile like any upload: only regular files, flat (or inside one top-level folder), no names that
climb out, sizes bounded while extracting (a zip bomb stops at the limit, not at the end of the disk).
"""

from __future__ import annotations

import json
import re
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from app.checkpoints.limits import ReadLimits
from app.errors import LimitExceeded, TooLarge, UnreadableCheckpoint, UnsafeCheckpoint

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
_SHARD = re.compile(r"^(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)$")
# A file name as save_pretrained and tokenizers write them: no folders, nothing hidden, printable.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class FolderFile:
    """One file of the folder: its name as the user's folder has it and where its bytes are now."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class PretrainedFolder:
    """What a folder holds, with weights files in the order their index names them."""

    weights_format: Literal["safetensors", "torch"]
    weights: tuple[FolderFile, ...]
    config: dict[str, Any] | None = None
    config_file: FolderFile | None = None
    index: FolderFile | None = None
    extras: tuple[FolderFile, ...] = ()
    # Weights files not used because another form of the same weights was sent (safetensors wins, as in
    # from_pretrained); named so the answer can say so.
    ignored: tuple[str, ...] = field(default=())


def is_folder_archive(path: Path) -> bool:
    """True for a tar, or for a zip that is not torch.save's own zip (no ``*/data.pkl`` record).

    Tar first: a tar holding a .bin (itself a zip) ends with that zip's directory, which zipfile finds.
    """
    if _is_tar(path):
        return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    return False


def _is_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, mode="r:"):
            return True
    except (tarfile.TarError, OSError):
        return False


def unpack_archive(archive: Path, dest: Path, *, limits: ReadLimits) -> list[FolderFile]:
    """Extract a tar or zip of a folder into ``dest`` (an empty directory); refuse anything but plain files.

    On an error what was written stays in ``dest``: the caller owns and removes that directory.
    """
    if _is_tar(archive):
        members = _tar_members(archive)
    elif zipfile.is_zipfile(archive):
        members = _zip_members(archive)
    else:
        raise UnreadableCheckpoint("The body is neither a checkpoint nor a tar or zip of a model folder.")
    files: list[FolderFile] = []
    seen: set[str] = set()
    budget = limits.max_unpacked_bytes
    with members as entries:
        entries_list = list(entries)
        names = _flat_names([entry.name for entry in entries_list])
        if len(entries_list) > limits.max_extra_files + limits.max_weight_files + 2:
            raise LimitExceeded(
                f"The archive holds {len(entries_list)} files; a model folder has at most "
                f"{limits.max_extra_files} extra files besides its config and weights.",
                {"files": len(entries_list)},
            )
        for entry, name in zip(entries_list, names, strict=True):
            if name in seen:
                raise UnreadableCheckpoint(f"The archive holds '{name}' twice.", {"file": name})
            seen.add(name)
            cap = budget if _is_weights_name(name) else min(budget, limits.max_extra_file_bytes)
            target = dest / name
            with entry.open() as source, target.open("xb") as sink:
                size = _copy_bounded(source, sink, cap=cap, name=name, limits=limits)
            budget -= size
            files.append(FolderFile(name=name, path=target, size=size))
    return files


@dataclass(frozen=True)
class _Member:
    name: str
    opener: Any

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        handle = self.opener()
        try:
            yield handle
        finally:
            handle.close()


@contextmanager
def _zip_members(path: Path) -> Iterator[Iterable[_Member]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = []
            for info in archive.infolist():
                if info.is_dir():
                    continue
                mode = info.external_attr >> 16
                if mode and (mode & 0o170000) not in (0, 0o100000):  # symlinks and devices from Unix zips
                    raise UnsafeCheckpoint(
                        f"The archive member '{info.filename[:200]}' is not a regular file; "
                        "send the folder's files themselves (tar or zip without links).",
                        {"file": info.filename[:200]},
                    )
                members.append(_Member(info.filename, lambda info=info: archive.open(info)))
            yield members
    except zipfile.BadZipFile as exc:
        raise UnreadableCheckpoint(f"The zip archive is damaged: {exc}.") from None


@contextmanager
def _tar_members(path: Path) -> Iterator[Iterable[_Member]]:
    try:
        with tarfile.open(path, mode="r:") as archive:
            members = []
            for info in archive:
                if info.isdir():
                    continue
                if not info.isfile():
                    raise UnsafeCheckpoint(
                        f"The archive member '{info.name[:200]}' is a link or device, not a file; "
                        "send the folder's files themselves (tar -h follows links).",
                        {"file": info.name[:200]},
                    )
                members.append(_Member(info.name, lambda info=info: _tar_file(archive, info)))
            yield members
    except tarfile.TarError as exc:
        raise UnreadableCheckpoint(f"The tar archive is damaged: {exc}.") from None


def _tar_file(archive: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    handle = archive.extractfile(info)
    if handle is None:  # pragma: no cover - regular files always have a reader
        raise UnreadableCheckpoint(f"The archive member '{info.name[:200]}' cannot be read.")
    return handle


def _flat_names(paths: Sequence[str]) -> list[str]:
    """The file names of a flat folder: members at the top or all inside one top-level folder."""
    parts = []
    for raw in paths:
        if raw.startswith("/") or "\\" in raw or "\x00" in raw:
            raise UnsafeCheckpoint(
                f"The archive member '{raw[:200]}' has an absolute or Windows path.", {"file": raw[:200]}
            )
        pieces = [piece for piece in raw.split("/") if piece not in ("", ".")]
        if ".." in pieces:
            raise UnsafeCheckpoint(
                f"The archive member '{raw[:200]}' climbs out of the folder.", {"file": raw[:200]}
            )
        parts.append(pieces)
    tops = {pieces[0] for pieces in parts if len(pieces) == 2}
    names = []
    for raw, pieces in zip(paths, parts, strict=True):
        if len(pieces) == 1 and not tops:
            name = pieces[0]
        elif len(pieces) == 2 and len(tops) == 1:
            name = pieces[1]
        else:
            raise UnreadableCheckpoint(
                f"The archive member '{raw[:200]}' is in a subfolder; send the model folder's files at the "
                "top of the archive or inside one folder, as `tar cf model.tar my-model/` writes them.",
                {"file": raw[:200]},
            )
        names.append(check_file_name(name))
    return names


def check_file_name(name: str) -> str:
    """A folder file's name as sent (multipart file name or archive member); refuse anything path-like."""
    if not _FILE_NAME.fullmatch(name):
        raise UnreadableCheckpoint(
            f"The file name '{name[:200]}' is not a model folder file name (letters, digits, '._+-', "
            "no folders, not hidden).",
            {"file": name[:200]},
        )
    return name


def _copy_bounded(source: IO[bytes], sink: IO[bytes], *, cap: int, name: str, limits: ReadLimits) -> int:
    copied = 0
    while chunk := source.read(_COPY_CHUNK):
        copied += len(chunk)
        if copied > cap:
            raise _too_large(name, limits)
        sink.write(chunk)
    return copied


def _too_large(name: str, limits: ReadLimits) -> TooLarge:
    if _is_weights_name(name):
        return TooLarge(
            "The archive unpacks to more than the upload limit.",
            {"limit": limits.max_unpacked_bytes, "file": name},
        )
    return TooLarge(
        f"The extra file '{name}' is larger than {limits.max_extra_file_bytes} bytes "
        "(WEIGHTVAULT_MAX_EXTRA_FILE_BYTES); leave it out of the upload.",
        {"file": name, "limit": limits.max_extra_file_bytes},
    )


def _is_weights_name(name: str) -> bool:
    return name in (SAFETENSORS, TORCH_BIN) or bool(_SHARD.fullmatch(name))


def sort_folder(files: Sequence[FolderFile], *, limits: ReadLimits) -> PretrainedFolder:
    """Config, weights (one file, or every shard its index names, in index order) and bounded extras."""
    by_name = {file.name: file for file in files}
    if len(by_name) != len(files):
        raise UnreadableCheckpoint("The upload names the same file twice.")
    used: set[str] = set()
    config = _config(by_name.get(CONFIG), limits)
    if config is not None:
        used.add(CONFIG)
    safetensors = _weights(by_name, SAFETENSORS, SAFETENSORS_INDEX, ".safetensors", limits)
    torch_bin = _weights(by_name, TORCH_BIN, TORCH_BIN_INDEX, ".bin", limits)
    if safetensors is None and torch_bin is None:
        raise UnreadableCheckpoint(
            "The folder holds no weights: send model.safetensors (or its shards with "
            "model.safetensors.index.json) or pytorch_model.bin (or its shards with its index).",
            {"files": sorted(by_name)[:64]},
        )
    chosen, fmt, other = (
        (safetensors, "safetensors", torch_bin) if safetensors is not None else (torch_bin, "torch", None)
    )
    assert chosen is not None
    weights, index = chosen
    used.update(file.name for file in weights)
    ignored: list[str] = []
    if index is not None:
        used.add(index.name)
    if other is not None:
        other_weights, other_index = other
        ignored = [file.name for file in other_weights] + ([other_index.name] if other_index else [])
        used.update(ignored)
    extras = tuple(file for name, file in sorted(by_name.items()) if name not in used)
    for extra in extras:
        if _SHARD.fullmatch(extra.name) or extra.name in (SAFETENSORS_INDEX, TORCH_BIN_INDEX):
            raise UnreadableCheckpoint(
                f"'{extra.name}' is not named by the folder's weights index; send the index that names every "
                "shard, and only those shards.",
                {"file": extra.name},
            )
        if extra.size > limits.max_extra_file_bytes:
            raise _too_large(extra.name, limits)
    if len(extras) > limits.max_extra_files:
        raise LimitExceeded(
            f"The folder holds {len(extras)} extra files besides config and weights; at most "
            f"{limits.max_extra_files} are kept with a version.",
            {"extras": len(extras), "limit": limits.max_extra_files},
        )
    return PretrainedFolder(
        weights_format=fmt,  # type: ignore[arg-type]
        weights=tuple(weights),
        config=config,
        config_file=by_name.get(CONFIG) if config is not None else None,
        index=index,
        extras=extras,
        ignored=tuple(sorted(ignored)),
    )


def _config(file: FolderFile | None, limits: ReadLimits) -> dict[str, Any] | None:
    if file is None:
        return None
    if file.size > limits.max_extra_file_bytes:
        raise _too_large(file.name, limits)
    try:
        config = json.loads(file.path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableCheckpoint(f"config.json is not JSON: {exc}.", {"file": CONFIG}) from None
    if not isinstance(config, dict):
        raise UnreadableCheckpoint("config.json must hold a JSON object.", {"file": CONFIG})
    return config


def _weights(
    by_name: dict[str, FolderFile], single: str, index_name: str, suffix: str, limits: ReadLimits
) -> tuple[list[FolderFile], FolderFile | None] | None:
    index = by_name.get(index_name)
    if index is None:
        return ([by_name[single]], None) if single in by_name else None
    if single in by_name:
        raise UnreadableCheckpoint(
            f"The folder holds both {single} and {index_name}; send one form of the weights.",
            {"files": [single, index_name]},
        )
    if index.size > limits.max_extra_file_bytes:
        raise _too_large(index.name, limits)
    try:
        weight_map = json.loads(index.path.read_bytes())["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UnreadableCheckpoint(
            f"{index_name} is not a weights index (a JSON object with a 'weight_map').", {"file": index_name}
        ) from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UnreadableCheckpoint(f"{index_name}'s weight_map must map tensor names to file names.")
    shards = sorted(set(weight_map.values()))
    if len(shards) > limits.max_weight_files:
        raise LimitExceeded(
            f"{index_name} names {len(shards)} shards; at most {limits.max_weight_files} are read.",
            {"shards": len(shards), "limit": limits.max_weight_files},
        )
    missing = [shard for shard in shards if shard not in by_name]
    wrong = [shard for shard in shards if not shard.endswith(suffix) or not _FILE_NAME.fullmatch(shard)]
    if wrong:
        raise UnreadableCheckpoint(
            f"{index_name} names files that are not {suffix} shards: {', '.join(wrong[:5])}.",
            {"files": wrong[:64]},
        )
    if missing:
        raise UnreadableCheckpoint(
            f"{index_name} names shards that were not sent: {', '.join(missing[:5])}; send every shard.",
            {"missing": missing[:64]},
        )
    return [by_name[shard] for shard in shards], index
