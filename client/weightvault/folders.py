"""Model folders (``save_pretrained``'s output): pushed as one tar made on the fly, pulled back unpacked.

The tar is read straight from the folder's files as it is sent (nothing is copied to disk), is the same
bytes every time (a retried or resumed push sends what the first attempt sent), and seeks like a file.
"""

from __future__ import annotations

import io
import json
import tarfile
from bisect import bisect_right
from pathlib import Path
from typing import Any

_BLOCK = 512


def folder_files(folder: Path) -> list[Path]:
    """The files sent: every regular, non-hidden file at the folder's top (save_pretrained writes no more)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder} holds no files to push.")
    return files


def folder_config(folder: Path) -> dict[str, Any] | None:
    """The folder's config.json, when it has one."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return config


class FolderTar(io.RawIOBase):
    """A read-only, seekable tar of a folder's files (USTAR/PAX headers, fixed owners and times)."""

    def __init__(self, folder: Path) -> None:
        self.name = f"{folder.resolve().name or 'model'}.tar"
        self._starts: list[int] = []
        self._pieces: list[bytes | tuple[Path, int]] = []
        offset = 0
        for path in folder_files(folder):
            size = path.stat().st_size
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            header = info.tobuf(format=tarfile.PAX_FORMAT)
            for piece, length in (
                (header, len(header)),
                ((path, size), size),
                (bytes(-size % _BLOCK), -size % _BLOCK),
            ):
                if length:
                    self._starts.append(offset)
                    self._pieces.append(piece)
                    offset += length
        self._starts.append(offset)
        self._pieces.append(bytes(2 * _BLOCK))  # the end-of-archive marker
        self.size = offset + 2 * _BLOCK
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._position < self.size:
            index = bisect_right(self._starts, self._position) - 1
            start, piece = self._starts[index], self._pieces[index]
            within = self._position - start
            want = len(view) - written
            if isinstance(piece, bytes):
                chunk = piece[within : within + want]
            else:
                path, size = piece
                with path.open("rb") as handle:
                    handle.seek(within)
                    chunk = handle.read(min(want, size - within))
                if not chunk:
                    raise OSError(f"{path} became shorter while it was being pushed.")
            view[written : written + len(chunk)] = chunk
            written += len(chunk)
            self._position += len(chunk)
        return written


def unpack_hf_zip(archive: Path, dest: Path) -> Path:
    """Unpack a pulled ``hf`` artifact into ``dest`` (created; files the zip names only, nothing outside)."""
    dest.mkdir(parents=True, exist_ok=True)
    import zipfile  # here, not at the top: every command would pay for it at start

    with zipfile.ZipFile(archive) as source:
        for info in source.infolist():
            name = info.filename
            if info.is_dir() or "/" in name or "\\" in name or name.startswith(".") or not name:
                raise ValueError(f"The hf artifact holds an unexpected entry '{name[:100]}'.")
            with source.open(info) as src, (dest / name).open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    return dest
