"""Composed downloads of every layout the service accepts: the .pt and .safetensors files a user gets
are assembled from stored tensor blobs plus small pieces, and read back exactly."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file
from torch import nn

from app.checkpoints.compose import StorageBlobs, compose_safetensors, compose_torch
from app.checkpoints.compose_load import load_composed_safetensors, load_composed_torch
from app.checkpoints.layout import normalise
from app.checkpoints.limits import ReadLimits
from app.checkpoints.reader import read_checkpoint
from app.checkpoints.validate import Blueprint, complete_tied
from app.checkpoints.writer import canonical_weights, own_storages, write_full, write_safetensors, write_torch
from app.storage.composed import (
    BlobRange,
    Literal,
    Recipe,
    RecipeError,
    iter_chunks,
    open_composed,
    write_composed,
)
from app.storage.tensorblobs import TensorBlob, TensorBlobs


@dataclass
class Layout:
    """What a user uploads, normalised: weights (with their tied groups) and the training entries."""

    weights: dict[str, torch.Tensor]
    tied_groups: list[list[str]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def full(self) -> dict[str, Any]:
        return {"model_state_dict": self.weights, **self.training}


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


def _trained(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 12)).pow(2).mean().backward()
        optimizer.step()


def plain() -> Layout:
    return Layout(weights=dict(_mlp().state_dict()))


def tied() -> Layout:
    torch.manual_seed(1)
    model = TiedLM()
    return Layout(weights=dict(model.state_dict()), tied_groups=[["embed.weight", "head.weight"]])


def half() -> Layout:
    return Layout(weights=dict(_mlp().half().state_dict()))


def bfloat16() -> Layout:
    return Layout(weights=dict(_mlp().to(torch.bfloat16).state_dict()))


def views() -> Layout:
    """A fused projection saved as views into one storage, one of them transposed."""
    torch.manual_seed(2)
    fused = torch.randn(3 * 20 + 30)
    return Layout(
        weights={
            "q.weight": fused[0:20].view(4, 5),
            "k.weight": fused[20:40].view(4, 5),
            "v.weight": fused[40:60].view(5, 4).t(),
            "o.weight": fused[60:].view(6, 5),
        }
    )


def adam_checkpoint() -> Layout:
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)
    _trained(model, optimizer)
    return Layout(
        weights=dict(model.state_dict()),
        training={"optimizer_state_dict": optimizer.state_dict(), "epoch": 3, "loss": 0.25, "step": 10},
    )


def sgd_checkpoint() -> Layout:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    _trained(model, optimizer)
    return Layout(
        weights=dict(model.state_dict()),
        training={"optimizer_state_dict": optimizer.state_dict(), "epoch": 1, "best_acc": 0.5},
    )


def lightning() -> Layout:
    model = _mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    _trained(model, optimizer)
    return Layout(
        weights={f"model.{key}": value for key, value in model.state_dict().items()},
        training={
            "epoch": 4,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [{"last_epoch": 4, "_step_count": 5, "base_lrs": [3e-4], "_last_lr": [3e-4]}],
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.1)}},
            "hparams_name": "kwargs",
            "hyper_parameters": {"hidden": 32, "lr": 3e-4, "betas": (0.9, 0.999)},
        },
    )


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "plain": plain,
    "tied": tied,
    "fp16": half,
    "bf16": bfloat16,
    "views": views,
    "adam": adam_checkpoint,
    "sgd_momentum": sgd_checkpoint,
    "lightning": lightning,
}


@pytest.fixture
def blobs(tmp_path: Path) -> TensorBlobs:
    return TensorBlobs(tmp_path / "tensors")


def _composed_bytes(recipe: Recipe, blobs: TensorBlobs) -> bytes:
    return b"".join(iter_chunks(recipe, blobs))


def _torch_save(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _raw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def _assert_same(loaded: Any, original: Any) -> None:
    """Same structure; every tensor the same dtype, shape and bytes (so NaN == NaN, -0.0 != 0.0)."""
    if isinstance(original, torch.Tensor):
        assert isinstance(loaded, torch.Tensor)
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        assert torch.equal(_raw(loaded), _raw(original))
    elif isinstance(original, Mapping):
        assert isinstance(loaded, Mapping) and list(loaded) == list(original)
        for key in original:
            _assert_same(loaded[key], original[key])
    elif isinstance(original, list | tuple):
        assert type(loaded) is type(original) and len(loaded) == len(original)
        for item, expected in zip(loaded, original, strict=True):
            _assert_same(item, expected)
    else:
        assert loaded == original


def _assert_ties_kept(weights: Mapping[str, torch.Tensor], layout: Layout) -> None:
    for group in layout.tied_groups:
        pointers = {weights[name].untyped_storage().data_ptr() for name in group}
        assert len(pointers) == 1, f"{group} no longer share one storage"


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["weights", "full"])
def test_composed_pt_is_what_torch_save_writes_and_loads_back_exactly(
    name: str, kind: str, blobs: TensorBlobs, tmp_path: Path
) -> None:
    layout = LAYOUTS[name]()
    obj = layout.weights if kind == "weights" else layout.full()
    recipe = compose_torch(obj, blobs=blobs)
    composed = _composed_bytes(recipe, blobs)

    assert composed == _torch_save(obj)  # byte for byte
    assert recipe.size == len(composed) and recipe.sha256 == hashlib.sha256(composed).hexdigest()

    with open_composed(recipe, blobs) as handle:  # streamed through the reader, no file written
        streamed = torch.load(handle, map_location="cpu", weights_only=True)
    path = tmp_path / f"{kind}.pt"
    write_composed(recipe, blobs, path)
    mapped = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for loaded in (streamed, mapped):
        _assert_same(loaded, obj)
        _assert_ties_kept(loaded if kind == "weights" else loaded["model_state_dict"], layout)

    with zipfile.ZipFile(io.BytesIO(composed)) as archive:
        assert archive.testzip() is None  # every member's CRC32 is right
        headers = [info.header_offset for info in archive.infolist()]
    for offset in headers:  # every member's data starts on torch's 64-byte boundary
        name_length, extra_length = struct.unpack("<HH", composed[offset + 26 : offset + 30])
        assert (offset + 30 + name_length + extra_length) % 64 == 0


def test_composed_files_equal_what_the_writer_writes_today(tmp_path: Path, blobs: TensorBlobs) -> None:
    layout = adam_checkpoint()
    write_full(tmp_path / "full.pt", layout.weights, layout.training)
    write_torch(tmp_path / "weights.pt", layout.weights)
    full = compose_torch(layout.full(), blobs=blobs)
    weights = compose_torch(layout.weights, blobs=blobs)
    assert _composed_bytes(full, blobs) == (tmp_path / "full.pt").read_bytes()
    assert _composed_bytes(weights, blobs) == (tmp_path / "weights.pt").read_bytes()


def _sorted(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors files keep tensors in dtype-then-name order, not the state_dict's."""
    return dict(sorted(tensors.items()))


def _safetensors_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_composed_safetensors_reads_exactly_like_the_writers_file(
    name: str, blobs: TensorBlobs, tmp_path: Path
) -> None:
    layout = LAYOUTS[name]()
    recipe = compose_safetensors(layout.weights, blobs=blobs, tied_groups=layout.tied_groups)
    composed = _composed_bytes(recipe, blobs)
    reference = tmp_path / "reference.safetensors"
    plan = Blueprint(expected=dict(layout.weights), tied_groups=layout.tied_groups)
    write_safetensors(reference, layout.weights, plan)

    if not layout.tied_groups:
        assert composed == reference.read_bytes()  # byte for byte
    else:
        # safetensors writes its metadata in a per-process random order (a Rust HashMap); ours is fixed.
        assert _safetensors_parts(composed) == _safetensors_parts(reference.read_bytes())

    removed = {name for group in layout.tied_groups for name in group[1:]}
    kept = {key: value for key, value in layout.weights.items() if key not in removed}
    _assert_same(_sorted(safetensors_load(composed)), _sorted(kept))
    path = tmp_path / "composed.safetensors"
    write_composed(recipe, blobs, path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        assert metadata == {
            "format": "pt",
            **{name: group[0] for group in layout.tied_groups for name in group[1:]},
        }
        for key, value in kept.items():
            _assert_same(handle.get_tensor(key), value)
        header_end = 8 + struct.unpack("<Q", composed[:8])[0]
    assert header_end % 8 == 0


@pytest.mark.parametrize("name", ["tied", "adam", "views"])
def test_composing_twice_gives_the_same_bytes_and_recipe(name: str, blobs: TensorBlobs) -> None:
    layout = LAYOUTS[name]()
    for compose in (
        lambda: compose_torch(layout.full(), blobs=blobs),
        lambda: compose_safetensors(layout.weights, blobs=blobs, tied_groups=layout.tied_groups),
    ):
        first, second = compose(), compose()
        assert first == second and first.to_json() == second.to_json()
        assert _composed_bytes(first, blobs) == _composed_bytes(second, blobs)
        assert Recipe.from_json(first.to_json()) == first


def _blob_count(blobs: TensorBlobs) -> int:
    return sum(1 for _ in blobs)


def test_each_distinct_tensor_is_stored_once_across_formats(blobs: TensorBlobs) -> None:
    layout = tied()
    weights_pt = compose_torch(layout.weights, blobs=blobs)
    # embed.weight and head.weight are one storage: one blob; the layer norm's two tensors: two more
    assert _blob_count(blobs) == 3
    stored = sum(path.stat().st_size for path in blobs)
    assert stored == sum(
        t.untyped_storage().nbytes() for k, t in layout.weights.items() if k != "head.weight"
    )
    compose_safetensors(layout.weights, blobs=blobs, tied_groups=layout.tied_groups)
    assert _blob_count(blobs) == 3  # the safetensors file is the same blobs in another order
    # the pickle and zip records, all that is not tensor bytes: ~1 KiB, and a few hundred bytes a tensor
    assert weights_pt.literal_bytes < 1024 + 384 * len(layout.weights)


def test_a_training_checkpoint_of_stored_weights_adds_only_its_optimizer_state(blobs: TensorBlobs) -> None:
    layout = adam_checkpoint()
    compose_torch(layout.weights, blobs=blobs)
    before = {path.name for path in blobs}
    full = compose_torch(layout.full(), blobs=blobs)
    added = {path.name for path in blobs} - before
    state = layout.training["optimizer_state_dict"]["state"]
    optimizer_tensors = [t for entry in state.values() for t in entry.values() if isinstance(t, torch.Tensor)]
    distinct = {hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in optimizer_tensors}
    assert added == distinct  # exp_avg, exp_avg_sq and the step counters; no weight again
    tensor_bytes = sum(path.stat().st_size for path in blobs)
    assert full.size - full.literal_bytes <= tensor_bytes + sum(
        t.untyped_storage().nbytes() for t in layout.weights.values()
    )
    assert full.literal_bytes < 8192


def test_equal_bytes_under_different_names_are_one_blob(blobs: TensorBlobs) -> None:
    weights = {"a.bias": torch.zeros(64), "b.bias": torch.zeros(64), "c.weight": torch.ones(64)}
    recipe = compose_torch(weights, blobs=blobs)
    assert _blob_count(blobs) == 2
    with open_composed(recipe, blobs) as handle:
        loaded = torch.load(handle, weights_only=True)
    _assert_same(loaded, weights)
    # torch keeps them apart (two storages): only the bytes at rest are shared
    assert loaded["a.bias"].untyped_storage().data_ptr() != loaded["b.bias"].untyped_storage().data_ptr()


def test_fp16_copy_of_the_same_values_is_a_different_tensor(blobs: TensorBlobs) -> None:
    torch.manual_seed(3)
    weights = {"w": torch.randn(8, 8), "b": torch.randn(8)}
    compose_torch(weights, blobs=blobs)
    compose_torch({key: value.half() for key, value in weights.items()}, blobs=blobs)
    compose_torch({key: value.clone() for key, value in weights.items()}, blobs=blobs)
    assert _blob_count(blobs) == 4  # the fp16 pair is new; the identical clone is not


def test_tensor_bytes_that_look_like_a_zip_descriptor_still_match_torch(blobs: TensorBlobs) -> None:
    """torch folds such bytes into its serialization id; the composed id must fold them too."""
    head = torch.frombuffer(bytearray(b"PK\x07\x08\x01\x02\x03\x04" + bytes(24)), dtype=torch.uint8)
    weights = {"w": head.clone(), "v": torch.arange(6, dtype=torch.float32)}
    assert _composed_bytes(compose_torch(weights, blobs=blobs), blobs) == _torch_save(weights)


def test_empty_and_scalar_tensors(blobs: TensorBlobs) -> None:
    weights = {"empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5), "flag": torch.tensor([True, False])}
    assert _composed_bytes(compose_torch(weights, blobs=blobs), blobs) == _torch_save(weights)
    assert sorted(path.stat().st_size for path in blobs) == [2, 4]  # nothing stored for the empty one
    recipe = compose_safetensors(weights, blobs=blobs)
    _assert_same(_sorted(safetensors_load(_composed_bytes(recipe, blobs))), _sorted(weights))


def test_a_view_shared_with_an_untied_key_gets_its_own_bytes_in_safetensors(blobs: TensorBlobs) -> None:
    base = torch.arange(8, dtype=torch.float32)
    weights = {"a": base, "b": base[:4]}
    recipe = compose_safetensors(weights, blobs=blobs)
    assert _blob_count(blobs) == 1  # still one blob at rest
    _assert_same(_sorted(safetensors_load(_composed_bytes(recipe, blobs))), {"a": base, "b": base[:4]})


def test_safetensors_refuses_a_dtype_it_has_no_name_for(blobs: TensorBlobs) -> None:
    with pytest.raises(ValueError, match="safetensors cannot hold"):
        compose_safetensors({"q": torch.zeros(2, dtype=torch.complex128)}, blobs=blobs)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_composed_download_can_be_uploaded_again(name: str, blobs: TensorBlobs, tmp_path: Path) -> None:
    """Our own strict reader (the one uploads go through) accepts every composed file as it is."""
    layout = LAYOUTS[name]()
    full, safetensors_file = tmp_path / "full.pt", tmp_path / "weights.safetensors"
    write_composed(compose_torch(layout.full(), blobs=blobs), blobs, full)
    write_composed(
        compose_safetensors(layout.weights, blobs=blobs, tied_groups=layout.tied_groups),
        blobs,
        safetensors_file,
    )
    _assert_same(read_checkpoint(full, limits=ReadLimits()).content, layout.full())
    removed = {name for group in layout.tied_groups for name in group[1:]}
    kept = {key: value for key, value in layout.weights.items() if key not in removed}
    _assert_same(_sorted(read_checkpoint(safetensors_file, limits=ReadLimits()).content), _sorted(kept))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_composed_pt_loads_with_storages_mapped_from_the_blobs(name: str, blobs: TensorBlobs) -> None:
    """The proof's loader: torch's weights-only unpickler, each storage a map of its blob, no file."""
    layout = LAYOUTS[name]()
    for obj in (layout.weights, layout.full()):
        loaded = load_composed_torch(compose_torch(obj, blobs=blobs), blobs)
        _assert_same(loaded, obj)
        weights = loaded if obj is layout.weights else loaded["model_state_dict"]
        _assert_ties_kept(weights, layout)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_composed_safetensors_loads_with_tensors_mapped_from_the_blobs(
    name: str, blobs: TensorBlobs, tmp_path: Path
) -> None:
    layout = LAYOUTS[name]()
    recipe = compose_safetensors(layout.weights, blobs=blobs, tied_groups=layout.tied_groups)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tensors, metadata = load_composed_safetensors(recipe, blobs, scratch=scratch)
    removed = {name: group[0] for group in layout.tied_groups for name in group[1:]}
    assert metadata == {"format": "pt", **removed}
    _assert_same(_sorted(tensors), _sorted({k: v for k, v in layout.weights.items() if k not in removed}))
    assert list(scratch.iterdir()) == []  # the header probe is gone
    blob_files = {str(path) for path in blobs}
    for tensor in tensors.values():
        if tensor.numel():
            assert _mapped_files(tensor.data_ptr()) <= blob_files


def test_a_safetensors_header_the_library_refuses_is_refused(blobs: TensorBlobs, tmp_path: Path) -> None:
    recipe = compose_safetensors({"w": torch.arange(4, dtype=torch.float32)}, blobs=blobs)
    header = recipe.pieces[0]
    assert isinstance(header, Literal)
    lying = Literal(header.data.replace(b'"shape":[4]', b'"shape":[5]'))
    with pytest.raises(RecipeError, match="header is invalid"):
        load_composed_safetensors(Recipe.build((lying, *recipe.pieces[1:]), blobs), blobs, scratch=tmp_path)


def _mapped_files(pointer: int) -> set[str]:
    """The files whose mapping in this process holds the address ``pointer``."""
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(bound, 16) for bound in fields[0].split("-"))
        if low <= pointer < high and len(fields) == 6:
            found.add(fields[5])
    return found


def test_mapped_storages_are_the_blob_files_not_copies(blobs: TensorBlobs) -> None:
    layout = views()
    recipe = compose_torch(layout.weights, blobs=blobs)
    loaded = load_composed_torch(recipe, blobs)
    (blob,) = list(blobs)
    for tensor in loaded.values():
        assert _mapped_files(tensor.data_ptr()) == {str(blob)}
    assert len({tensor.untyped_storage().data_ptr() for tensor in loaded.values()}) == 1


def test_a_storage_that_is_not_one_blob_range_is_refused(blobs: TensorBlobs) -> None:
    recipe = compose_torch({"w": torch.arange(32, dtype=torch.float32)}, blobs=blobs)
    inlined = tuple(
        Literal(blobs.path_for(p.sha256).read_bytes()) if isinstance(p, BlobRange) else p
        for p in recipe.pieces
    )
    with pytest.raises(RecipeError, match="not one range of one tensor blob"):
        load_composed_torch(Recipe.build(inlined, blobs), blobs)


@pytest.mark.parametrize(
    ("name", "upload_format"),
    [(name, "pt") for name in ("plain", "tied", "bf16", "adam", "sgd_momentum")]
    + [(name, "safetensors") for name in ("plain", "tied", "bf16")],
)
def test_the_ingest_path_stores_each_tensor_once_and_serves_todays_files(
    name: str, upload_format: str, blobs: TensorBlobs, tmp_path: Path
) -> None:
    """Read an upload as ingest does (tensors are views on its memory map), give each tensor its own
    storage as ingest does, compose the three downloads: the blobs hold each distinct tensor once, and
    each download is what ingest writes today."""
    layout = LAYOUTS[name]()
    upload = tmp_path / "upload"
    if upload_format == "pt":
        torch.save(layout.full() if layout.training else layout.weights, upload)
    else:
        save_file({k: v.contiguous() for k, v in layout.weights.items() if k != "head.weight"}, str(upload))
    plan = Blueprint(expected=dict(layout.weights), tied_groups=layout.tied_groups)
    normal = normalise(read_checkpoint(upload, limits=ReadLimits()).content, plan.keys)
    canonical = own_storages(canonical_weights(complete_tied(normal.state_dict, plan), plan))
    training = own_storages(normal.training_state)

    counting = _CountingSink(blobs)
    storages = StorageBlobs(counting)  # one per ingest: each storage is hashed once for all three files
    full = compose_torch({"model_state_dict": canonical, **training}, blobs=storages)
    weights_pt = compose_torch(canonical, blobs=storages)
    weights_st = compose_safetensors(canonical, blobs=storages, tied_groups=plan.tied_groups)

    write_full(tmp_path / "full.pt", canonical, training)
    write_torch(tmp_path / "weights.pt", canonical)
    write_safetensors(tmp_path / "weights.safetensors", canonical, plan)
    assert _composed_bytes(full, blobs) == (tmp_path / "full.pt").read_bytes()
    assert _composed_bytes(weights_pt, blobs) == (tmp_path / "weights.pt").read_bytes()
    assert _safetensors_parts(_composed_bytes(weights_st, blobs)) == _safetensors_parts(
        (tmp_path / "weights.safetensors").read_bytes()
    )

    everything = [t for t in _tensors(layout.full()) if t.numel()]
    distinct = {hashlib.sha256(_raw(t).numpy().tobytes()).hexdigest(): t.nbytes for t in everything}
    at_rest = sum(path.stat().st_size for path in blobs)
    assert at_rest == sum(distinct.values())  # each distinct tensor once, nothing else
    assert counting.added == len({id(t) for t in _tensors({"m": canonical, **training})})
    # three downloads hold the weights; the store holds them once
    assert weights_pt.blob_shas() == weights_st.blob_shas() <= full.blob_shas()


class _CountingSink:
    """A tensor store that counts how often bytes were handed to it (each time they are hashed)."""

    def __init__(self, inner: TensorBlobs) -> None:
        self.inner, self.added = inner, 0

    def add(self, data: memoryview) -> TensorBlob:
        self.added += 1
        return self.inner.add(data)

    def path_for(self, sha256: str) -> Path:
        return self.inner.path_for(sha256)

    def finish(self) -> None:
        self.inner.finish()


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for item in value.values() for t in _tensors(item)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []
