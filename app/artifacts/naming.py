"""Which artifact kinds and formats exist, and the file names downloads get."""

from __future__ import annotations

from typing import Literal, Protocol

from app.errors import ArtifactNotFound, InvalidFormat

# How an artifact's bytes are served: the file itself, or (ONNX past protobuf's 2 GB limit) a zip of the
# model and its external data.
Packaging = Literal["file", "zip"]
PACKAGINGS: tuple[Packaging, ...] = ("file", "zip")


class DownloadUrl(Protocol):
    """Builds an artifact's download URL; routers make one from the request (``url_for``)."""

    def __call__(self, *, model: str, version: int, kind: str, fmt: str) -> str: ...


# kind -> formats, the first being the default
FORMATS: dict[str, tuple[str, ...]] = {
    "full": ("pt",),
    "weights": ("safetensors", "pt"),
    "onnx": ("onnx",),
    # A model folder as its library writes it (transformers: from_pretrained reads it unzipped).
    "hf": ("zip",),
}


def resolve_format(kind: str, fmt: str | None) -> str:
    formats = FORMATS.get(kind)
    if formats is None:
        raise ArtifactNotFound(
            f"There is no artifact kind '{kind[:64]}'; kinds are {', '.join(FORMATS)}.",
            {"kinds": list(FORMATS)},
        )
    if fmt is None:
        return formats[0]
    if fmt not in formats:
        raise InvalidFormat(
            f"'{fmt[:64]}' is not a format of '{kind}' artifacts; use one of {', '.join(formats)}.",
            {"kind": kind, "formats": list(formats)},
        )
    return fmt


def download_filename(model: str, version: int, kind: str, fmt: str, packaging: Packaging) -> str:
    suffix = ".zip" if packaging == "zip" else ""
    if kind == "onnx":
        return f"{model}-v{version}.onnx{suffix}"
    return f"{model}-v{version}-{kind}.{fmt}{suffix}"


def media_type(packaging: Packaging, fmt: str = "") -> str:
    return "application/zip" if packaging == "zip" or fmt == "zip" else "application/octet-stream"
