"""Which artifact kinds and formats exist, and the file names downloads get."""

from __future__ import annotations

from app.errors import ArtifactNotFound, InvalidFormat

# kind -> formats, the first being the default
FORMATS: dict[str, tuple[str, ...]] = {
    "full": ("pt",),
    "weights": ("safetensors", "pt"),
    "onnx": ("onnx",),
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


def download_filename(model: str, version: int, kind: str, fmt: str, packaging: str | None = None) -> str:
    if kind == "onnx":
        # Past protobuf's 2 GB limit the model and its external data travel together as one zip.
        return f"{model}-v{version}.onnx.zip" if packaging == "zip" else f"{model}-v{version}.onnx"
    return f"{model}-v{version}-{kind}.{fmt}"
