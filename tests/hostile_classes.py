"""Hostile and edge-case files for ``tests/api/test_hostile_classes.py``, one family per class of defect.

Everything is written here by hand: pickle opcodes through a small crafting pickler, zip records through
torch's own zip writer (so member alignment is exactly what ``torch.save`` produces), the legacy container
byte by byte, safetensors headers as JSON. No real malware: a payload that would run code only ever tries
to create a marker file, as in ``tests/hostile.py``.

The building blocks:

- ``Blob``: a storage with its bytes; where it goes (a ``data/<key>`` record, the legacy key list) is
  decided per file, so a file can *declare* a storage without carrying its bytes.
- ``tensor_of(blob, size, stride)``: ``torch._utils._rebuild_tensor_v2`` over a blob, as ``torch.save``
  pickles a tensor.
- ``Call(func, *args)`` / ``NewObj(cls, *args)``: a REDUCE / NEWOBJ of any global with any arguments.
- ``Raw(opcodes)``: opcodes spliced in verbatim (deep nesting, protocol-4 tricks).
- ``zip_checkpoint`` / ``legacy_checkpoint``: the two torch containers around a crafted pickle.
"""

from __future__ import annotations

import _codecs
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from tests.hostile import Gadget

# ---------------------------------------------------------------------------------------------- weights


def seeded_state_dict(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A state_dict for the simple-linear architecture (nn.Linear(10, 1) as ``linear``), from randn."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(1, 10, generator=generator).to(dtype),
        "linear.bias": torch.randn(1, generator=generator).to(dtype),
    }


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.contiguous().view(torch.uint8).numpy().tobytes())


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (``torch.equal`` calls -0.0 and 0.0 equal and NaN unequal)."""
    return a.dtype == b.dtype and a.shape == b.shape and tensor_bytes(a) == tensor_bytes(b)


def optimizer_state(momentum: object) -> dict[str, Any]:
    """An SGD ``optimizer.state_dict()`` for SimpleModel whose momentum buffer for the weight is ``momentum``."""
    return {
        "state": {0: {"momentum_buffer": momentum}},
        "param_groups": [
            {
                "lr": 0.01,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": 0,
                "nesterov": False,
                "maximize": False,
                "foreach": None,
                "differentiable": False,
                "fused": None,
                "params": [0, 1],
            }
        ],
    }


# ------------------------------------------------------------------------------------ crafting pickles


@dataclass
class Blob:
    """A storage: its key, its bytes, and what the file declares about it."""

    key: str
    data: bytes
    numel: int | None = None  # declared in the persistent id; default: len(data) / element size
    location: str = "cpu"
    storage_type: Any = torch.FloatStorage
    element_size: int = 4
    record: bool = True  # zip: write data/<key>; legacy: list the key and write its bytes

    @property
    def declared_numel(self) -> int:
        return self.numel if self.numel is not None else len(self.data) // self.element_size


class _StorageRef:
    """Pickled as the blob's persistent id."""

    def __init__(self, blob: Blob) -> None:
        self.blob = blob


class Call:
    """Pickles as ``GLOBAL func`` + ``args`` + ``REDUCE``: the unpickler calls ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args


class NewObj:
    """Pickles as ``GLOBAL cls`` + ``args`` + ``NEWOBJ``: the unpickler calls ``cls.__new__(cls, *args)``."""

    def __init__(self, cls: Any, *args: Any) -> None:
        self.cls, self.args = cls, args


@dataclass(frozen=True)
class Raw:
    """Opcodes written verbatim where the object would go; they must push exactly one object."""

    opcodes: bytes


class _CraftPickler(pickle._Pickler):  # type: ignore[misc]  # the pure-Python pickler, to override save()
    def __init__(self, file: io.BytesIO, protocol: int, legacy: bool) -> None:
        super().__init__(file, protocol=protocol)
        self.legacy = legacy

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            blob = obj.blob
            pid = ("storage", blob.storage_type, blob.key, blob.location, blob.declared_numel)
            return (*pid, None) if self.legacy else pid
        return None

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, Raw):
            self.write(obj.opcodes)
        elif isinstance(obj, Call):
            self.save(obj.func)
            self.save(obj.args)
            self.write(pickle.REDUCE)
        elif isinstance(obj, NewObj):
            self.save(obj.cls)
            self.save(obj.args)
            self.write(pickle.NEWOBJ)
        else:
            super().save(obj, save_persistent_id)


def craft_pickle(obj: Any, *, protocol: int = 2, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    _CraftPickler(buffer, protocol, legacy).dump(obj)
    return buffer.getvalue()


def tensor_of(
    blob: Blob, size: tuple[int, ...], stride: tuple[int, ...] | None = None, offset: int = 0
) -> Call:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    if stride is None:
        contiguous: list[int] = []
        running = 1
        for dim in reversed(size):
            contiguous.insert(0, running)
            running *= dim
        stride = tuple(contiguous)
    return Call(
        torch._utils._rebuild_tensor_v2,
        _StorageRef(blob),
        offset,
        tuple(size),
        tuple(stride),
        False,
        Call(collections.OrderedDict),
    )


def zip_checkpoint(
    obj: Any,
    blobs: Iterable[Blob] = (),
    *,
    protocol: int = 2,
    extra_records: Iterable[tuple[str, bytes]] = (),
    pickle_suffix: bytes = b"",
) -> bytes:
    """A torch.save zip around ``obj``, written by torch's own writer (64-byte aligned records)."""
    data_pkl = craft_pickle(obj, protocol=protocol) + pickle_suffix
    buffer = io.BytesIO()
    with torch.serialization._open_zipfile_writer(buffer) as writer:
        records = [
            ("data.pkl", data_pkl),
            (".format_version", b"1"),
            (".storage_alignment", b"64"),
            ("byteorder", b"little"),
            *((f"data/{blob.key}", blob.data) for blob in blobs if blob.record),
            *extra_records,
        ]
        for name, data in records:
            writer.write_record(name, data, len(data))  # type: ignore[attr-defined]
    return buffer.getvalue()


_LEGACY_SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


def legacy_checkpoint(obj: Any, blobs: Iterable[Blob] = ()) -> bytes:
    """torch's pre-1.6 format: magic, protocol, sys_info, the pickle, the storage-key list, then each
    listed storage as ``<int64 numel><bytes>``. A blob with ``record=False`` is declared but not listed."""
    listed = [blob for blob in blobs if blob.record]
    out = io.BytesIO()
    for header in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION, _LEGACY_SYS_INFO):
        pickle.dump(header, out, protocol=2)
    out.write(craft_pickle(obj, legacy=True))
    pickle.dump([blob.key for blob in listed], out, protocol=2)
    for blob in listed:
        out.write(struct.pack("<q", len(blob.data) // blob.element_size))
        out.write(blob.data)
    return out.getvalue()


def container(kind: str, obj: Any, blobs: Iterable[Blob] = (), *, protocol: int = 2) -> bytes:
    if kind == "zip":
        return zip_checkpoint(obj, blobs, protocol=protocol)
    if kind == "legacy":
        return legacy_checkpoint(obj, blobs)
    raise ValueError(kind)


@dataclass
class Weights:
    """The simple-linear weights as crafted tensors over two blobs ("0" the weight, "1" the bias)."""

    state: dict[str, torch.Tensor]
    weight: Blob
    bias: Blob
    tensors: dict[str, Any] = field(default_factory=dict)

    @property
    def blobs(self) -> list[Blob]:
        return [self.weight, self.bias]


def crafted_weights(seed: int = 0) -> Weights:
    state = seeded_state_dict(seed)
    weight = Blob("0", tensor_bytes(state["linear.weight"]))
    bias = Blob("1", tensor_bytes(state["linear.bias"]))
    tensors = {"linear.weight": tensor_of(weight, (1, 10)), "linear.bias": tensor_of(bias, (1,))}
    return Weights(state, weight, bias, tensors)


def state_dict_obj(tensors: dict[str, Any]) -> collections.OrderedDict[str, Any]:
    """Pickled as torch.save pickles a state_dict: ``OrderedDict()`` by REDUCE, then SETITEMS."""
    return collections.OrderedDict(tensors)


def training_obj(tensors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model_state_dict": state_dict_obj(tensors), **extra}


def valid_crafted(kind: str, seed: int = 0) -> bytes:
    """The benign twin of every crafted file: the same machinery, nothing hostile. Must be accepted."""
    w = crafted_weights(seed)
    return container(kind, state_dict_obj(w.tensors), w.blobs)


# ----------------------------------------------------------- class 2: uninitialised memory as weights

# Allow-listed constructors that allocate without initialising (all run by plain torch.load).
UNINITIALISED: dict[str, Callable[[], Any]] = {
    "Tensor-reduce": lambda: Call(torch.Tensor, 1, 10),
    "FloatTensor-newobj": lambda: NewObj(torch.FloatTensor, 1, 10),
    "Tensor-newobj": lambda: NewObj(torch.Tensor, 1, 10),
    "FloatTensor-reduce": lambda: Call(torch.FloatTensor, 1, 10),
    "Tensor-size-reduce": lambda: Call(torch.Tensor, torch.Size((1, 10))),
    "Parameter-of-uninitialised": lambda: NewObj(torch.nn.Parameter, Call(torch.Tensor, 1, 10)),
}


def uninitialised_weight(kind: str, constructor: str) -> bytes:
    """``linear.weight`` built by an allocating constructor; the bias is real."""
    w = crafted_weights()
    tensors = {**w.tensors, "linear.weight": UNINITIALISED[constructor]()}
    return container(kind, state_dict_obj(tensors), [w.bias])


def uninitialised_optimizer_state(kind: str) -> bytes:
    """Valid weights; the optimizer's momentum buffer is ``torch.Tensor(1, 10)``: it would go into full.pt."""
    w = crafted_weights()
    obj = training_obj(w.tensors, optimizer_state_dict=optimizer_state(Call(torch.Tensor, 1, 10)), epoch=1)
    return container(kind, obj, w.blobs)


def legacy_omitted_storage_key(numel: int = 10) -> bytes:
    """Legacy: the pickle declares storage "0" (``numel`` floats) but the storage-key list leaves it out,
    so torch.load hands back the uninitialised allocation as ``linear.weight`` (a view of its first 10)."""
    w = crafted_weights()
    w.weight.numel = numel
    w.weight.record = False
    return legacy_checkpoint(state_dict_obj(w.tensors), w.blobs)


def zip_missing_record() -> bytes:
    """Zip: the pickle names storage "5", the archive has no data/5 (torch refuses this one itself)."""
    w = crafted_weights()
    ghost = Blob("5", b"", numel=10, record=False)
    tensors = {**w.tensors, "linear.weight": tensor_of(ghost, (1, 10))}
    return zip_checkpoint(state_dict_obj(tensors), w.blobs)


# -------------------------------------------------------------------------------- class 3: amplification


def legacy_declared_huge_storage() -> bytes:
    """A few hundred bytes declaring a 2**28-float (1 GiB) storage it never carries."""
    return legacy_omitted_storage_key(numel=2**28)


def bytearray_beside_weights(kind: str, size: int = 2**30) -> bytes:
    """``builtins.bytearray(size)`` by REDUCE as an extra entry of a training checkpoint."""
    w = crafted_weights()
    return container(kind, training_obj(w.tensors, extra=Call(bytearray, size), epoch=1), w.blobs)


def allocating_constructor_beside_weights(kind: str, numel: int = 2**26) -> bytes:
    """``torch.Tensor(numel)``: uninitialised server memory that full.pt would store."""
    w = crafted_weights()
    return container(kind, training_obj(w.tensors, extra=Call(torch.Tensor, numel), epoch=1), w.blobs)


def stride_zero_giant(kind: str, where: str) -> bytes:
    """A one-float storage seen as a 2**20 x 2**20 tensor with stride 0 (4 TiB once materialised)."""
    w = crafted_weights()
    tiny = Blob("2", tensor_bytes(torch.ones(1)))
    giant = tensor_of(tiny, (2**20, 2**20), (0, 0))
    if where == "extra":
        obj = training_obj(w.tensors, extra=giant, epoch=1)
    else:
        obj = training_obj(w.tensors, optimizer_state_dict=optimizer_state(giant), epoch=1)
    return container(kind, obj, [*w.blobs, tiny])


def safetensors_bytes(
    tensors: dict[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None
) -> bytes:
    return bytes(safetensors.torch.save(tensors or seeded_state_dict(), metadata=metadata))


def safetensors_many_metadata_entries(entries: int = 300_000) -> bytes:
    """Valid weights and ``entries`` distinct ``__metadata__`` entries (the outside test sent 3,000,000)."""
    return safetensors_bytes(metadata={f"k{i}": "" for i in range(entries)})


# -------------------------------------------------------------------------------------- class 4: CPU bombs


def distinct_code_points(count: int) -> str:
    return "".join(chr(0x100 + i) for i in range(count))


def codec_payloads(punycode_points: int = 16_000) -> dict[str, Call]:
    """``_codecs.encode`` with every codec but latin1 (the only one protocol-2 pickles use, for bytes)."""
    latin1 = Call(_codecs.encode, "x" * 1000, "latin1")
    return {
        "punycode": Call(_codecs.encode, distinct_code_points(punycode_points), "punycode"),
        "utf-7": Call(_codecs.encode, distinct_code_points(500), "utf-7"),
        "idna": Call(_codecs.encode, "b\u00fccher.example", "idna"),
        "rot13": Call(_codecs.encode, "abc", "rot13"),
        "unicode_escape": Call(_codecs.encode, distinct_code_points(500), "unicode_escape"),
        "zlib_codec": Call(_codecs.encode, latin1, "zlib_codec"),
        "bz2_codec": Call(_codecs.encode, latin1, "bz2_codec"),
        "base64_codec": Call(_codecs.encode, latin1, "base64_codec"),
        "hex_codec": Call(_codecs.encode, latin1, "hex_codec"),
        "uu_codec": Call(_codecs.encode, latin1, "uu_codec"),
        "quopri_codec": Call(_codecs.encode, latin1, "quopri_codec"),
    }


def codec_beside_weights(kind: str, codec: str, punycode_points: int = 16_000) -> bytes:
    w = crafted_weights()
    payload = codec_payloads(punycode_points)[codec]
    return container(kind, training_obj(w.tensors, extra=payload, epoch=1), w.blobs)


def latin1_bytes_beside_weights(kind: str) -> bytes:
    """What torch.save writes for a ``bytes`` value at protocol 2: ``_codecs.encode(<str>, 'latin1')``."""
    state = seeded_state_dict()
    buffer = io.BytesIO()
    obj = {"model_state_dict": state, "tokenizer": b"\x00\x01\xfe\xffbytes", "epoch": 2}
    torch.save(obj, buffer, _use_new_zipfile_serialization=kind == "zip")
    return buffer.getvalue()


# -------------------------------------------------------- class 5: files plain torch.load cannot read


def zip_declared_numel(numel: int, record_bytes: int = 4) -> bytes:
    """``linear.weight``'s persistent id declares ``numel`` floats over a ``record_bytes``-byte record."""
    w = crafted_weights()
    w.weight.numel = numel
    w.weight.data = w.weight.data[:record_bytes]
    return zip_checkpoint(state_dict_obj(w.tensors), w.blobs)


def storage_location(kind: str, location: str) -> bytes:
    w = crafted_weights()
    w.weight.location = location
    return container(kind, state_dict_obj(w.tensors), w.blobs)


def legacy_numel_mismatch() -> bytes:
    """Legacy: the pickle declares 10 floats, the storage section holds 1."""
    w = crafted_weights()
    w.weight.numel = 10
    w.weight.data = w.weight.data[:4]
    return legacy_checkpoint(state_dict_obj(w.tensors), w.blobs)


# ---------------------------------------------------------------------- class 6: smuggled bytes


def gadget_pickle(marker: Path) -> bytes:
    return pickle.dumps(Gadget(os.system, (f"touch {marker}",)), protocol=2)


def smuggle_token(marker: Path) -> bytes:
    """A short token unique to ``marker``, for the places too small for a whole gadget pickle."""
    return b"wv-smuggled-" + hashlib.sha256(str(marker).encode()).hexdigest()[:16].encode()


def torch_save_bytes(obj: Any, *, legacy: bool = False, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    return buffer.getvalue()


def zip_unreferenced_member(marker: Path, name: str = "data/9999") -> bytes:
    """A valid state_dict plus a member no persistent id names, holding an os.system pickle."""
    w = crafted_weights()
    return zip_checkpoint(state_dict_obj(w.tensors), w.blobs, extra_records=[(name, gadget_pickle(marker))])


def zip_long_member_name(marker: Path, digits: bool) -> bytes:
    """A member with a 65,000-character name (all digits: it still looks like data/<n>)."""
    tail = "0" * 64_990 if digits else "x" * 64_990
    return zip_unreferenced_member(marker, name=f"data/{tail}")


def zip_then_trailing(marker: Path, trailer: str) -> bytes:
    """A valid zip followed by bytes after its end-of-central-directory: a zip/pickle polyglot."""
    valid = torch_save_bytes(seeded_state_dict())
    if trailer == "legacy-pickle":
        tail = torch_save_bytes({"x": Gadget(os.system, (f"touch {marker}",))}, legacy=True)
    else:
        tail = gadget_pickle(marker)
    return valid + tail


def zip_comment_payload(marker: Path) -> bytes:
    """The gadget pickle as the zip's archive comment (legal zip; torch never reads it)."""
    valid = torch_save_bytes(seeded_state_dict())
    payload = gadget_pickle(marker)
    assert valid[-22:-18] == b"PK\x05\x06" and valid[-2:] == b"\0\0"
    return valid[:-2] + struct.pack("<H", len(payload)) + payload


def zip_padding_payload(marker: Path) -> bytes:
    """The token written into the 'FB' alignment padding of data/0's local header (torch skips it)."""
    data = bytearray(torch_save_bytes(seeded_state_dict()))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length
    assert data[start : start + 2] == b"FB"
    token = smuggle_token(marker)
    assert len(token) <= extra_length - 4, "the padding is too short for the token"
    data[start + 4 : start + 4 + len(token)] = token
    return bytes(data)


def nul_storage_key_token(marker: Path) -> str:
    return "0\x00" + smuggle_token(marker).decode()


def zip_nul_storage_key(marker: Path) -> bytes:
    """``linear.weight``'s storage key is "0\\x00<token>": torch's C reader looks up data/0 all the same."""
    w = crafted_weights()
    alias = Blob(nul_storage_key_token(marker), w.weight.data, numel=10, record=False)
    tensors = {**w.tensors, "linear.weight": tensor_of(alias, (1, 10))}
    return zip_checkpoint(state_dict_obj(tensors), w.blobs)


def storage_tail(kind: str, marker: Path) -> bytes:
    """``linear.weight`` is a view of the first 10 floats of a storage whose tail is the gadget pickle:
    torch.save of the loaded view would write the whole storage, tail and all."""
    w = crafted_weights()
    tail = gadget_pickle(marker)
    tail += b"\0" * (-len(tail) % 4)
    w.weight.data += tail
    return container(kind, state_dict_obj(w.tensors), w.blobs)


def zip_pickle_then_payload(marker: Path) -> bytes:
    """data.pkl is a valid pickle followed, after its STOP, by the gadget pickle (torch stops at STOP)."""
    w = crafted_weights()
    return zip_checkpoint(state_dict_obj(w.tensors), w.blobs, pickle_suffix=gadget_pickle(marker))


def legacy_then_trailing(marker: Path) -> bytes:
    """A valid legacy file followed by the gadget pickle (the legacy reader stops after the last storage)."""
    return torch_save_bytes(seeded_state_dict(), legacy=True) + gadget_pickle(marker)


def patch_member(archive: bytes, suffix: str, data: bytes) -> bytes:
    """Overwrite the member ending in ``suffix`` with ``data`` of the same length, CRCs kept consistent
    (local header, data descriptor and central directory)."""
    out = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        info = next(i for i in source.infolist() if i.filename.endswith(suffix))
    assert len(data) == info.file_size
    name_length, extra_length = struct.unpack("<HH", out[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    out[start : start + len(data)] = data
    crc = struct.pack("<I", zlib.crc32(data))
    out[info.header_offset + 14 : info.header_offset + 18] = crc
    end = start + len(data)
    if out[end : end + 4] == b"PK\x07\x08":
        out[end + 4 : end + 8] = crc
    position = out.find(b"PK\x01\x02")
    while position != -1:
        length = struct.unpack("<H", out[position + 28 : position + 30])[0]
        if bytes(out[position + 46 : position + 46 + length]) == info.filename.encode():
            out[position + 16 : position + 20] = crc
            break
        position = out.find(b"PK\x01\x02", position + 4)
    return bytes(out)


def zip_serialization_id_payload(marker: Path) -> bytes:
    """The token in ``.data/serialization_id`` (a record torch.load never reads), CRCs fixed up."""
    valid = torch_save_bytes(seeded_state_dict())
    with zipfile.ZipFile(io.BytesIO(valid)) as archive:
        original = archive.read(next(n for n in archive.namelist() if n.endswith("serialization_id")))
    token = smuggle_token(marker)
    return patch_member(valid, ".data/serialization_id", token + original[len(token) :])


# ----------------------------------------------------------------- class 7: crafted input, once a 500


def set_zip_flag(
    archive: bytes, suffix: str, flag: int, *, local: bool = True, central: bool = True
) -> bytes:
    """OR ``flag`` into the general-purpose bits of the member ending in ``suffix``."""
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        info = next(i for i in source.infolist() if i.filename.endswith(suffix))
    if local:
        offset = info.header_offset + 6
        data[offset : offset + 2] = struct.pack(
            "<H", struct.unpack("<H", data[offset : offset + 2])[0] | flag
        )
    if central:
        position = data.find(b"PK\x01\x02")
        while position != -1:
            name_length = struct.unpack("<H", data[position + 28 : position + 30])[0]
            if bytes(data[position + 46 : position + 46 + name_length]) == info.filename.encode():
                offset = position + 8
                bits = struct.unpack("<H", data[offset : offset + 2])[0] | flag
                data[offset : offset + 2] = struct.pack("<H", bits)
                break
            position = data.find(b"PK\x01\x02", position + 4)
    return bytes(data)


def zip_encrypted_flag(member: str) -> bytes:
    return set_zip_flag(torch_save_bytes(seeded_state_dict()), member, 0x0001)


def nested_tensor_weight() -> bytes:
    """A real nested tensor (``torch._utils._rebuild_nested_tensor``) as ``linear.weight``, in a zip.
    (torch.save's legacy format writes nested tensors torch.load itself cannot read back.)"""
    state: dict[str, torch.Tensor] = seeded_state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state["linear.weight"] = torch.nested.nested_tensor([torch.ones(10)])
    return torch_save_bytes(state)


def nested_lists(depth: int) -> Raw:
    """[[[...]]] ``depth`` deep: EMPTY_LIST x depth, then APPEND x (depth - 1), no recursion to build it."""
    return Raw(pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1))


def nested_dicts(depth: int) -> Raw:
    """{"a": {"a": ...}} ``depth`` deep."""
    key = pickle.BINUNICODE + struct.pack("<I", 1) + b"a"
    return Raw(pickle.EMPTY_DICT + (key + pickle.EMPTY_DICT) * (depth - 1) + pickle.SETITEM * (depth - 1))


def deep_nesting_beside_weights(kind: str, shape: str, depth: int) -> bytes:
    w = crafted_weights()
    nested = nested_lists(depth) if shape == "lists" else nested_dicts(depth)
    return container(kind, training_obj(w.tensors, extra=nested, epoch=1), w.blobs)


def giant_empty_shape_beside_weights(kind: str) -> bytes:
    """A tensor of shape [0, 2**62, 2**62] (no elements; its strides overflow int64)."""
    w = crafted_weights()
    empty = Blob("2", b"")
    odd = tensor_of(empty, (0, 2**62, 2**62), (2**62, 2**62, 1))
    return container(kind, training_obj(w.tensors, extra=odd, epoch=1), [*w.blobs, empty])


def raw_safetensors(header: object, data: bytes, *, pad_to: int = 8) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % pad_to)
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors_with_extra_entry(name: str, entry: dict[str, Any], extra_data: bytes = b"") -> bytes:
    """The seeded weights plus one more header entry placed after them."""
    state = seeded_state_dict()
    weight, bias = tensor_bytes(state["linear.weight"]), tensor_bytes(state["linear.bias"])
    end = len(weight) + len(bias)
    header = {
        "linear.weight": {"dtype": "F32", "shape": [1, 10], "data_offsets": [0, len(weight)]},
        "linear.bias": {"dtype": "F32", "shape": [1], "data_offsets": [len(weight), end]},
        name: {**entry, "data_offsets": [end, end + len(extra_data)]},
    }
    return raw_safetensors(header, weight + bias + extra_data)


def safetensors_giant_empty_shape() -> bytes:
    return safetensors_with_extra_entry("extra", {"dtype": "F32", "shape": [0, 2**62, 2**62]})


def safetensors_nested_brackets(depth: int = 200_000) -> bytes:
    """A header whose only value is ``depth`` nested JSON arrays."""
    raw = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def safetensors_nested_metadata(depth: int = 200_000) -> bytes:
    """Valid tensors; ``__metadata__`` is ``depth`` nested JSON objects."""
    state = seeded_state_dict()
    weight, bias = tensor_bytes(state["linear.weight"]), tensor_bytes(state["linear.bias"])
    header = (
        b'{"linear.weight":{"dtype":"F32","shape":[1,10],"data_offsets":[0,40]},'
        b'"linear.bias":{"dtype":"F32","shape":[1],"data_offsets":[40,44]},"__metadata__":'
        + b'{"a":' * depth
        + b'""'
        + b"}" * depth
        + b"}"
    )
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + weight + bias


# ----------------------------------------------------------------- class 8: strings a database rejects


def lone_surrogate_training(kind: str, where: str) -> bytes:
    """A training checkpoint holding the lone surrogate "\\ud800" (pickle writes it with surrogatepass)."""
    state = seeded_state_dict()
    optimizer = optimizer_state(torch.zeros(1, 10))
    obj: dict[str, Any] = {"model_state_dict": state, "optimizer_state_dict": optimizer, "epoch": 1}
    if where == "optimizer_name":
        obj["optimizer_name"] = "\ud800"
    elif where == "extra-key":
        obj["\udcff-key"] = 1
    elif where == "state-dict-key":
        obj["model_state_dict"] = {**state, "\ud800": torch.zeros(1)}
    return torch_save_bytes(obj, legacy=kind == "legacy")


def safetensors_surrogate_metadata() -> bytes:
    """``__metadata__`` holding the JSON escape \\ud800 (valid JSON, not valid UTF-8 once decoded)."""
    state = seeded_state_dict()
    weight, bias = tensor_bytes(state["linear.weight"]), tensor_bytes(state["linear.bias"])
    header = {
        "__metadata__": {"note": "\ud800"},
        "linear.bias": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "linear.weight": {"dtype": "F32", "shape": [1, 10], "data_offsets": [4, 44]},
    }
    return raw_safetensors(header, bias + weight)


# ------------------------------------------------------------------- pickle protocols 4 and 5


def _short_unicode(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def stack_global_from_memo(module: str, name: str, args: tuple[str, ...]) -> Raw:
    """``module.name(*args)`` where STACK_GLOBAL's two strings come back from the memo (BINGET), not
    from the opcodes just before it: a scanner that looks at the previous two strings misses it."""
    far = 1_000_000  # memo slots the surrounding pickle never reaches
    ops = _short_unicode(module) + pickle.LONG_BINPUT + struct.pack("<I", far) + pickle.POP
    ops += _short_unicode(name) + pickle.LONG_BINPUT + struct.pack("<I", far + 1) + pickle.POP
    ops += _short_unicode("decoy") + _short_unicode("names")
    ops += pickle.POP + pickle.POP
    ops += pickle.LONG_BINGET + struct.pack("<I", far) + pickle.LONG_BINGET + struct.pack("<I", far + 1)
    ops += pickle.STACK_GLOBAL + pickle.MARK + b"".join(_short_unicode(a) for a in args) + pickle.TUPLE
    ops += pickle.REDUCE
    return Raw(ops)


def protocol4_with(payload: Any, protocol: int = 4) -> bytes:
    """A protocol-4/5 zip training checkpoint with ``payload`` as an extra entry beside valid weights."""
    w = crafted_weights()
    return zip_checkpoint(training_obj(w.tensors, extra=payload, epoch=1), w.blobs, protocol=protocol)


def protocol4_cases(marker: Path) -> dict[str, bytes]:
    w = crafted_weights()
    huge = struct.pack("<Q", 2**40)
    return {
        "p4-os.system-stack-global": protocol4_with(Call(os.system, f"touch {marker}")),
        "p4-os.system-stack-global-from-memo": protocol4_with(
            stack_global_from_memo("posix", "system", (f"touch {marker}",))
        ),
        "p5-os.system-stack-global-from-memo": protocol4_with(
            stack_global_from_memo("os", "system", (f"touch {marker}",)), protocol=5
        ),
        "p4-torch.save-to-marker": protocol4_with(Call(torch.save, "x", str(marker))),
        "p2-torch.save-to-marker": zip_checkpoint(
            training_obj(w.tensors, extra=Call(torch.save, "x", str(marker)), epoch=1), w.blobs
        ),
        "p4-Tensor-reduce-weight": zip_checkpoint(
            state_dict_obj({**w.tensors, "linear.weight": Call(torch.Tensor, 1, 10)}), [w.bias], protocol=4
        ),
        "p4-Tensor-newobj-ex-weight": zip_checkpoint(
            state_dict_obj(
                {
                    **w.tensors,
                    "linear.weight": Raw(
                        _short_unicode("torch")
                        + _short_unicode("Tensor")
                        + pickle.STACK_GLOBAL
                        + pickle.BININT1
                        + b"\x01"
                        + pickle.BININT1
                        + b"\x0a"
                        + pickle.TUPLE2
                        + pickle.EMPTY_DICT
                        + pickle.NEWOBJ_EX
                    ),
                }
            ),
            [w.bias],
            protocol=4,
        ),
        "p5-next-buffer": protocol4_with(Raw(pickle.NEXT_BUFFER), protocol=5),
        "p5-bytearray8-2**40": protocol4_with(Raw(pickle.BYTEARRAY8 + huge + b"x" * 16), protocol=5),
        "p4-binbytes8-2**40": protocol4_with(Raw(pickle.BINBYTES8 + huge + b"x" * 16)),
        "p4-binunicode8-2**40": protocol4_with(Raw(pickle.BINUNICODE8 + huge + b"x" * 16)),
        "p4-long4-2**31": protocol4_with(Raw(pickle.LONG4 + struct.pack("<i", 2**31 - 1) + b"\x01" * 16)),
        "p4-memo-get-missing": protocol4_with(Raw(pickle.LONG_BINGET + struct.pack("<I", 2_000_000))),
        "p4-frame-2**62": _with_frame_length(protocol4_with(1), 2**62),
    }


def _with_frame_length(pickled_zip: bytes, length: int) -> bytes:
    """Rewrite the first FRAME of data.pkl to declare ``length`` bytes (the archive keeps its size)."""
    with zipfile.ZipFile(io.BytesIO(pickled_zip)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data.pkl"))
        original = archive.read(info)
    assert original[2:3] == pickle.FRAME
    edited = original[:3] + struct.pack("<Q", length) + original[11:]
    data = bytearray(pickled_zip)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    data[start : start + len(edited)] = edited
    return bytes(data)  # the CRC no longer matches either: a reader must refuse before allocating
