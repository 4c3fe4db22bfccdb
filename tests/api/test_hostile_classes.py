"""The outside test's classes of defect, through HTTP, in every container that can carry them.

1. legitimate safetensors files of every header alignment are stored bit for bit;
2. uninitialised memory never becomes weights (or optimizer state);
3. what the server allocates or stores is bounded by a small factor of what was sent;
4. no codec but latin1 runs from a pickle (CPU bombs);
5. nothing is served that plain ``torch.load(f, weights_only=True)`` cannot read;
6. bytes no weight uses (extra members, trailers, padding, storage tails) are never served back;
7. crafted input is a 422 with a reason, never a 500;
8. a string the database cannot hold never breaks the version list.

Plus: pickle protocols 4 and 5 are read (and their hostile opcodes refused), latin1 bytes still work, and
every artifact of an accepted upload loads with plain torch.load / safetensors.

The files come from ``tests/hostile_classes.py``; ``test_builders_make_what_they_describe`` checks, without
the server, that each one really is what its name says (plain torch.load behaves as the issue describes).
"""

from __future__ import annotations

import _codecs
import io
import json
import os
import pickle
import pickletools
import re
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import safetensors.torch
import torch
from fastapi.testclient import TestClient

from app.architectures.builtin import SimpleModel as RegisteredSimpleModel
from app.main import create_app
from app.settings import Settings
from tests import hostile_classes as H
from tests.checkpoints import trained_simple_model
from tests.conftest import TEST_ARCHITECTURES, create_model, isolated_database, stored_files, version_count

KINDS = ("zip", "legacy")
CHECKPOINT_REFUSALS = ("unsafe_checkpoint", "unreadable_checkpoint", "limit_exceeded")
UNINITIALISED_REFUSALS = ("unsafe_checkpoint", "unreadable_checkpoint")
SIZE_REFUSALS = (*CHECKPOINT_REFUSALS, "too_large")
ARTIFACTS = {
    "full.pt": ("full", None),
    "weights.safetensors": ("weights", None),
    "weights.pt": ("weights", "pt"),
}
# Kept small here; the builders default to the outside test's sizes (2**30 bytes, 16,000 code points).
BYTEARRAY_BYTES = 2**26
PUNYCODE_POINTS = 2_000


# ---------------------------------------------------------------------------------------------- helpers


def post_checkpoint(client: TestClient, body: bytes, *, multipart: bool = False) -> httpx.Response:
    if multipart:
        return client.post("/v1/models/demo/versions", files={"file": ("model.pt", body)})
    return client.post(
        "/v1/models/demo/versions",
        content=body,
        headers={"Content-Type": "application/octet-stream", "X-Filename": "model.pt"},
    )


def assert_actionable(message: object) -> None:
    """A few words a person can act on: no traceback, no C format string, no generic fault."""
    assert isinstance(message, str), message
    assert 20 <= len(message) <= 1000, message
    assert len(message.split()) >= 4, message
    assert "Traceback" not in message and not re.search(r"%l?[ds]", message), message
    assert "failed to handle the request" not in message, message


def assert_error_body(response: httpx.Response, codes: tuple[str, ...]) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(error), error
    assert error["code"] in codes, error
    assert_actionable(error["message"])
    return error


@dataclass
class Upload:
    """A response plus what the server held before it, to tell what the upload left behind."""

    client: TestClient
    data_dir: Path
    marker: Path
    before_files: set[str]
    before_versions: int
    response: httpx.Response

    def assert_refused(self, codes: tuple[str, ...], statuses: tuple[int, ...] = (422,)) -> dict[str, Any]:
        response = self.response
        assert response.status_code in statuses, f"{response.status_code}: {response.text[:600]}"
        error = assert_error_body(response, codes)
        self.assert_nothing_ran()
        assert stored_files(self.data_dir) == self.before_files, "a refused upload left files behind"
        assert version_count(self.client, "demo") == self.before_versions
        return error

    def assert_nothing_ran(self) -> None:
        assert not self.marker.exists(), "code from the upload ran"


def send(client: TestClient, data_dir: Path, marker: Path, body: bytes, *, multipart: bool = False) -> Upload:
    before_files = stored_files(data_dir)
    before_versions = version_count(client, "demo")
    response = post_checkpoint(client, body, multipart=multipart)
    return Upload(client, data_dir, marker, before_files, before_versions, response)


def download_all(client: TestClient, version: int) -> dict[str, bytes]:
    served = {}
    for name, (kind, fmt) in ARTIFACTS.items():
        params = {"format": fmt} if fmt else {}
        response = client.get(f"/v1/models/demo/versions/{version}/artifacts/{kind}", params=params)
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:300]}"
        served[name] = response.content
    return served


def plain_load(data: bytes, what: str = "the download") -> Any:
    """What a user runs on a download: no map_location, no extra safe globals, warnings are errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise AssertionError(f"plain torch.load(weights_only=True) cannot read {what}: {exc}") from None


def load_served(served: dict[str, bytes]) -> dict[str, Any]:
    """Every artifact through the plain readers; the three weight sets must agree bit for bit."""
    full = plain_load(served["full.pt"], "full.pt")
    weights_pt = plain_load(served["weights.pt"], "weights.pt")
    weights_st = safetensors.torch.load(served["weights.safetensors"])
    assert isinstance(full, dict) and isinstance(weights_pt, dict), (type(full), type(weights_pt))
    model_state = full["model_state_dict"]
    assert list(weights_pt) == list(model_state) == ["linear.weight", "linear.bias"]
    assert set(weights_st) == set(weights_pt)
    for key, value in weights_pt.items():
        assert value.device.type == "cpu" and not value.is_meta, key
        assert H.same_bits(value, model_state[key]), key
        assert H.same_bits(value, weights_st[key]), key
    return {"full": full, "weights": weights_pt}


def assert_served_loads_plainly(
    client: TestClient, version: int, expected: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    loaded = load_served(download_all(client, version))
    if expected is not None:
        for key, value in expected.items():
            assert H.same_bits(loaded["weights"][key], value), key
    return loaded


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """One server for the ~100 refusal cases (a fresh database each costs more than the case itself).
    Each case compares files and versions with what was there just before it, so an earlier case that
    was wrongly accepted cannot hide a later one."""
    root = tmp_path_factory.mktemp("hostile-classes")
    with isolated_database(root) as url:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=root / "data",
            database_url=url,
            architecture_modules=[TEST_ARCHITECTURES],
        )
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            create_model(client)
            yield client, root / "data"


@pytest.fixture
def demo(client: TestClient) -> TestClient:
    create_model(client)
    return client


# ------------------------------------------------------------- 1. reference safetensors, every alignment


def _reference_safetensors(seed: int, pad: int, dtype: torch.dtype) -> tuple[bytes, dict[str, torch.Tensor]]:
    state = H.seeded_state_dict(seed, dtype)
    return H.safetensors_bytes(state, {"pad": "x" * pad}), state


def _data_offset(body: bytes) -> int:
    return 8 + int(struct.unpack("<Q", body[:8])[0])


@pytest.mark.parametrize(
    ("dtype", "pads"),
    [
        pytest.param(torch.float32, range(64), id="float32-pads-0..63"),
        pytest.param(torch.float16, range(0, 64, 8), id="float16-every-alignment"),
        pytest.param(torch.bfloat16, range(0, 64, 8), id="bfloat16-every-alignment"),
    ],
)
def test_reference_safetensors_of_every_header_alignment_round_trip(
    demo: TestClient, dtype: torch.dtype, pads: range
) -> None:
    """``safetensors.torch.save(sd, metadata={"pad": ...})``: the data section starts at every multiple of
    8 modulo 64. Each upload is a 201 and both weight downloads hold the uploaded tensors bit for bit."""
    offsets = set()
    failures = []
    for pad in pads:
        body, state = _reference_safetensors(seed=pad, pad=pad, dtype=dtype)
        offsets.add(_data_offset(body) % 64)
        response = post_checkpoint(demo, body)
        if response.status_code != 201:
            failures.append(f"pad {pad} (data at {_data_offset(body)}): {response.status_code}")
            continue
        version = response.json()["version"]
        st = demo.get(f"/v1/models/demo/versions/{version}/artifacts/weights")
        pt = demo.get(f"/v1/models/demo/versions/{version}/artifacts/weights", params={"format": "pt"})
        from_st, from_pt = safetensors.torch.load(st.content), plain_load(pt.content)
        for key, value in state.items():
            if not (H.same_bits(from_st[key], value) and H.same_bits(from_pt[key], value)):
                failures.append(f"pad {pad}: {key} differs in a download")
    assert offsets == set(range(0, 64, 8)), sorted(offsets)
    assert not failures, failures


def test_reference_safetensors_as_multipart(demo: TestClient) -> None:
    body, state = _reference_safetensors(seed=7, pad=1, dtype=torch.float32)
    assert _data_offset(body) % 16 == 8
    response = post_checkpoint(demo, body, multipart=True)
    assert response.status_code == 201, response.text
    assert_served_loads_plainly(demo, 1, state)


# ------------------------------------------------------------------------------- refusals, by class


@dataclass(frozen=True)
class Refusal:
    build: Callable[[Path], bytes]
    codes: tuple[str, ...] = CHECKPOINT_REFUSALS
    statuses: tuple[int, ...] = (422,)


def _refusals() -> dict[str, Refusal]:
    cases: dict[str, Refusal] = {}

    def add(name: str, build: Callable[[Path], bytes], **kwargs: Any) -> None:
        assert name not in cases, name
        cases[name] = Refusal(build, **kwargs)

    uninit = {"codes": UNINITIALISED_REFUSALS}
    amplify = {"codes": SIZE_REFUSALS, "statuses": (413, 422)}
    for kind in KINDS:
        # 2. uninitialised memory
        for constructor in H.UNINITIALISED:
            add(
                f"uninit-{kind}-{constructor}",
                lambda m, k=kind, c=constructor: H.uninitialised_weight(k, c),
                **uninit,
            )
        add(
            f"uninit-{kind}-optimizer-momentum",
            lambda m, k=kind: H.uninitialised_optimizer_state(k),
            **uninit,
        )
        # 3. amplification
        add(
            f"amplify-{kind}-bytearray-2**26",
            lambda m, k=kind: H.bytearray_beside_weights(k, BYTEARRAY_BYTES),
            **amplify,
        )
        add(
            f"amplify-{kind}-Tensor-2**26-floats",
            lambda m, k=kind: H.allocating_constructor_beside_weights(k),
            **amplify,
        )
        for where in ("extra", "optimizer"):
            add(
                f"amplify-{kind}-stride0-4TiB-{where}",
                lambda m, k=kind, w=where: H.stride_zero_giant(k, w),
                **amplify,
            )
        # 5. storage locations plain torch.load cannot restore
        for location in ("xla:0", "../../tmp", "meta", ""):
            add(
                f"served-{kind}-location-{location or 'empty'}",
                lambda m, k=kind, loc=location: H.storage_location(k, loc),
            )
        # 7. once a 500
        for shape, depth in (("lists", 50_000), ("dicts", 30_000)):
            add(
                f"crafted-{kind}-{depth}-nested-{shape}",
                lambda m, k=kind, s=shape, d=depth: H.deep_nesting_beside_weights(k, s, d),
            )
    add("uninit-legacy-omitted-storage-key", lambda m: H.legacy_omitted_storage_key(), **uninit)
    add("uninit-zip-missing-record", lambda m: H.zip_missing_record(), **uninit)
    add("amplify-legacy-declares-2**28-floats", lambda m: H.legacy_declared_huge_storage(), **amplify)
    add(
        "amplify-st-300000-metadata-entries",
        lambda m: H.safetensors_many_metadata_entries(300_000),
        codes=SIZE_REFUSALS,
        statuses=(413, 422),
    )
    # 4. codecs other than latin1, with the payloads the reference codecs accept
    for codec in H.codec_payloads(punycode_points=1):
        add(f"cpu-zip-codec-{codec}", lambda m, c=codec: H.codec_beside_weights("zip", c, PUNYCODE_POINTS))
    for codec in ("punycode", "utf-7", "zlib_codec"):
        add(
            f"cpu-legacy-codec-{codec}",
            lambda m, c=codec: H.codec_beside_weights("legacy", c, PUNYCODE_POINTS),
        )
    # 5. declared sizes the record does not hold
    add("served-zip-numel-10-over-4-byte-record", lambda m: H.zip_declared_numel(10, 4))
    add("served-zip-numel-2**62+1", lambda m: H.zip_declared_numel(2**62 + 1, 40))
    add("served-zip-numel-2**28-over-40-byte-record", lambda m: H.zip_declared_numel(2**28, 40))
    add("served-legacy-numel-10-over-1", lambda m: H.legacy_numel_mismatch())
    # 7. once a 500
    add("crafted-zip-encrypted-flag-data.pkl", lambda m: H.zip_encrypted_flag("data.pkl"))
    add("crafted-zip-encrypted-flag-data-0", lambda m: H.zip_encrypted_flag("data/0"))
    add("crafted-zip-nested-tensor-weight", lambda m: H.nested_tensor_weight())
    add("crafted-st-shape-0-2**62-2**62", lambda m: H.safetensors_giant_empty_shape())
    add("crafted-st-200000-nested-brackets", lambda m: H.safetensors_nested_brackets(200_000))
    add("crafted-st-200000-nested-metadata-objects", lambda m: H.safetensors_nested_metadata(200_000))
    # protocols 4 and 5: what a new opcode reader must still refuse
    for name in H.protocol4_cases(Path("/nonexistent")):
        add(f"pickle-{name}", lambda m, n=name: H.protocol4_cases(m)[n])
    return cases


REFUSALS = _refusals()
MULTIPART = [
    "uninit-legacy-omitted-storage-key",
    "uninit-zip-FloatTensor-newobj",
    "amplify-zip-bytearray-2**26",
    "amplify-st-300000-metadata-entries",
    "cpu-legacy-codec-punycode",
    "served-zip-numel-10-over-4-byte-record",
    "served-zip-location-xla:0",
    "crafted-zip-encrypted-flag-data.pkl",
    "crafted-st-200000-nested-brackets",
    "pickle-p4-os.system-stack-global-from-memo",
]


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_with_a_reason_and_nothing_left(
    shared_vault: tuple[TestClient, Path], marker: Path, name: str
) -> None:
    client, data_dir = shared_vault
    case = REFUSALS[name]
    upload = send(client, data_dir, marker, case.build(marker))
    upload.assert_refused(case.codes, case.statuses)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_through_the_resumable_endpoint_too(
    shared_vault: tuple[TestClient, Path], marker: Path, name: str
) -> None:
    """The tus entry point ends in the same ingest: the same refusal, recorded as the upload's outcome,
    and nothing of it stays (its received part is gone with it)."""
    client, data_dir = shared_vault
    case = REFUSALS[name]
    body = case.build(marker)
    before_files, before_versions = stored_files(data_dir), version_count(client, "demo")
    tus = {"Tus-Resumable": "1.0.0"}
    created = client.post("/v1/models/demo/uploads", headers={**tus, "Upload-Length": str(len(body))})
    if created.status_code == 413:  # declared too large: refused before a byte is sent
        assert "too_large" in case.codes
        return
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    sent = client.patch(
        location,
        content=body,
        headers={**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
    )
    assert sent.status_code in (204, 413), sent.text
    if sent.status_code == 204:
        outcome = client.get(location).json()
        assert outcome["state"] == "failed" and outcome["version"] is None, outcome
        assert outcome["error"]["code"] in case.codes, outcome["error"]
        assert_actionable(outcome["error"]["message"])
    else:
        assert client.delete(location, headers=tus).status_code == 204
    assert not marker.exists(), "code from the upload ran"
    assert stored_files(data_dir) == before_files, "a refused resumable upload left files behind"
    assert version_count(client, "demo") == before_versions


@pytest.mark.parametrize("name", MULTIPART)
def test_refused_as_multipart_too(shared_vault: tuple[TestClient, Path], marker: Path, name: str) -> None:
    client, data_dir = shared_vault
    case = REFUSALS[name]
    upload = send(client, data_dir, marker, case.build(marker), multipart=True)
    upload.assert_refused(case.codes, case.statuses)


def test_the_gadget_is_named_when_a_protocol_4_pickle_hides_it(
    demo: TestClient, data_dir: Path, marker: Path
) -> None:
    upload = send(demo, data_dir, marker, H.protocol4_cases(marker)["p4-os.system-stack-global"])
    error = upload.assert_refused(("unsafe_checkpoint",))
    assert "system" in error["message"], error


# --------------------------------------------------------- refused, or accepted and served clean


@dataclass(frozen=True)
class Either:
    """Refusal is fine; so is acceptance if every artifact loads plainly, holds the seeded weights and
    none of the smuggled bytes."""

    build: Callable[[Path], tuple[bytes, bytes | None]]  # the file, and the bytes it must not get served


def _plain(build: Callable[[], bytes]) -> Callable[[Path], tuple[bytes, bytes | None]]:
    return lambda marker: (build(), None)


def _with_marker_command(build: Callable[[Path], bytes]) -> Callable[[Path], tuple[bytes, bytes | None]]:
    return lambda marker: (build(marker), f"touch {marker}".encode())


def _with_token(build: Callable[[Path], bytes]) -> Callable[[Path], tuple[bytes, bytes | None]]:
    return lambda marker: (build(marker), H.smuggle_token(marker))


EITHER: dict[str, Either] = {
    # 5. a real GPU checkpoint: fine to accept, but then served files must load on this CPU-only machine
    "served-zip-location-cuda:0": Either(_plain(lambda: H.storage_location("zip", "cuda:0"))),
    "served-legacy-location-cuda:0": Either(_plain(lambda: H.storage_location("legacy", "cuda:0"))),
    # 6. bytes torch never reads
    "smuggle-zip-unreferenced-member-data-9999": Either(_with_marker_command(H.zip_unreferenced_member)),
    "smuggle-zip-65000-digit-member-name": Either(
        _with_marker_command(lambda m: H.zip_long_member_name(m, digits=True))
    ),
    "smuggle-zip-65000-letter-member-name": Either(
        _with_marker_command(lambda m: H.zip_long_member_name(m, digits=False))
    ),
    "smuggle-zip-then-legacy-pickle": Either(
        _with_marker_command(lambda m: H.zip_then_trailing(m, "legacy-pickle"))
    ),
    "smuggle-zip-then-raw-pickle": Either(_with_marker_command(lambda m: H.zip_then_trailing(m, "pickle"))),
    "smuggle-zip-archive-comment": Either(_with_marker_command(H.zip_comment_payload)),
    "smuggle-zip-alignment-padding": Either(_with_token(H.zip_padding_payload)),
    "smuggle-zip-nul-in-storage-key": Either(_with_token(H.zip_nul_storage_key)),
    "smuggle-zip-serialization-id": Either(_with_token(H.zip_serialization_id_payload)),
    "smuggle-zip-after-pickle-stop": Either(_with_marker_command(H.zip_pickle_then_payload)),
    "smuggle-zip-storage-tail-beyond-view": Either(_with_marker_command(lambda m: H.storage_tail("zip", m))),
    "smuggle-legacy-storage-tail-beyond-view": Either(
        _with_marker_command(lambda m: H.storage_tail("legacy", m))
    ),
    "smuggle-legacy-then-raw-pickle": Either(_with_marker_command(H.legacy_then_trailing)),
    # 7. an empty tensor of absurd shape beside the weights
    "crafted-zip-shape-0-2**62-2**62-extra": Either(
        _plain(lambda: H.giant_empty_shape_beside_weights("zip"))
    ),
    "crafted-legacy-shape-0-2**62-2**62-extra": Either(
        _plain(lambda: H.giant_empty_shape_beside_weights("legacy"))
    ),
}


EITHER_MULTIPART = (
    "smuggle-zip-unreferenced-member-data-9999",
    "smuggle-zip-then-legacy-pickle",
    "smuggle-zip-alignment-padding",
)
EITHER_PARAMS = [pytest.param(name, False, id=name) for name in sorted(EITHER)] + [
    pytest.param(name, True, id=f"{name}-multipart") for name in EITHER_MULTIPART
]


@pytest.mark.parametrize(("name", "multipart"), EITHER_PARAMS)
def test_refused_or_served_clean(
    demo: TestClient, data_dir: Path, marker: Path, name: str, multipart: bool
) -> None:
    body, smuggled = EITHER[name].build(marker)
    if smuggled is not None:
        assert smuggled in body, "the builder must carry the smuggled bytes"
    upload = send(demo, data_dir, marker, body, multipart=multipart)
    if upload.response.status_code != 201:
        upload.assert_refused(CHECKPOINT_REFUSALS)
        return
    upload.assert_nothing_ran()
    version = upload.response.json()["version"]
    served = download_all(demo, version)
    if smuggled is not None:
        for artifact, content in served.items():
            assert smuggled not in content, (
                f"{artifact} re-serves bytes no weight uses (smuggled by the upload)"
            )
    loaded = load_served(served)
    for key, value in H.seeded_state_dict().items():  # every file here carries the seeded weights
        assert H.same_bits(loaded["weights"][key], value), key


# ------------------------------------------------------------------- 8. strings a database rejects


SURROGATES = {
    **{
        f"{kind}-{where}": (lambda k=kind, w=where: H.lone_surrogate_training(k, w))
        for kind in KINDS
        for where in ("optimizer_name", "extra-key", "state-dict-key")
    },
    "st-metadata-escape": H.safetensors_surrogate_metadata,
}


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_lone_surrogates_never_break_the_version_list(
    demo: TestClient, data_dir: Path, marker: Path, name: str
) -> None:
    upload = send(demo, data_dir, marker, SURROGATES[name]())
    status = upload.response.status_code
    assert status in (201, 422), f"{status}: {upload.response.text[:400]}"
    if status == 422:
        upload.assert_refused((*CHECKPOINT_REFUSALS, "architecture_mismatch"))
    listing = demo.get("/v1/models/demo/versions")
    assert listing.status_code == 200, listing.text[:300]
    items = json.loads(listing.content)["items"]
    assert len(items) == (1 if status == 201 else 0)
    assert demo.get("/v1/models/demo").status_code == 200
    assert demo.get("/v1/models").status_code == 200
    if status == 201:
        assert demo.get("/v1/models/demo/versions/1").status_code == 200
        assert_served_loads_plainly(demo, 1, H.seeded_state_dict())


# ----------------------------------------------------------------------------------- accepted files


def _training_checkpoint() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    model, optimizer = trained_simple_model(seed=4)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()}, state


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("content", ["state_dict", "training_checkpoint", "whole_module"])
def test_pickle_protocols_4_and_5_are_read(demo: TestClient, protocol: int, content: str) -> None:
    """torch.save(..., pickle_protocol=4 or 5) writes FRAME, MEMOIZE, SHORT_BINUNICODE and STACK_GLOBAL
    (and EMPTY_SET for a module), none of which torch's own weights_only reader accepts."""
    expected: dict[str, torch.Tensor]
    obj: Any
    if content == "state_dict":
        obj = expected = H.seeded_state_dict(seed=protocol)
    elif content == "training_checkpoint":
        obj, expected = _training_checkpoint()
    else:
        torch.manual_seed(protocol)
        obj = RegisteredSimpleModel()
        expected = {k: v.detach().clone() for k, v in obj.state_dict().items()}
    body = H.torch_save_bytes(obj, protocol=protocol)
    response = post_checkpoint(demo, body)
    assert response.status_code == 201, response.text[:500]
    loaded = assert_served_loads_plainly(demo, response.json()["version"], expected)
    if content == "training_checkpoint":
        full = loaded["full"]
        assert full["epoch"] == 7
        original = obj["optimizer_state_dict"]
        assert full["optimizer_state_dict"]["param_groups"] == original["param_groups"]
        for index, state in original["state"].items():
            served = full["optimizer_state_dict"]["state"][index]["momentum_buffer"]
            assert H.same_bits(served, state["momentum_buffer"])
        assert response.json()["training"]["optimizer"] == "SGD"


@pytest.mark.parametrize("kind", KINDS)
def test_latin1_bytes_the_way_torch_save_writes_them_are_still_accepted(demo: TestClient, kind: str) -> None:
    response = post_checkpoint(demo, H.latin1_bytes_beside_weights(kind))
    assert response.status_code == 201, response.text[:500]
    loaded = assert_served_loads_plainly(demo, 1, H.seeded_state_dict())
    assert loaded["full"]["tokenizer"] == b"\x00\x01\xfe\xffbytes"


ORDINARY: dict[str, Callable[[], tuple[bytes, dict[str, torch.Tensor]]]] = {
    "zip-state-dict": lambda: (H.torch_save_bytes(H.seeded_state_dict()), H.seeded_state_dict()),
    "zip-training-checkpoint": lambda: (
        H.torch_save_bytes(_training_checkpoint()[0]),
        _training_checkpoint()[1],
    ),
    "legacy-state-dict": lambda: (
        H.torch_save_bytes(H.seeded_state_dict(), legacy=True),
        H.seeded_state_dict(),
    ),
    "legacy-training-checkpoint": lambda: (
        H.torch_save_bytes(_training_checkpoint()[0], legacy=True),
        _training_checkpoint()[1],
    ),
    "safetensors": lambda: (H.safetensors_bytes(), H.seeded_state_dict()),
    "crafted-zip": lambda: (H.valid_crafted("zip"), H.seeded_state_dict()),
    "crafted-legacy": lambda: (H.valid_crafted("legacy"), H.seeded_state_dict()),
}


ORDINARY_PARAMS = [pytest.param(name, False, id=name) for name in sorted(ORDINARY)] + [
    pytest.param(name, True, id=f"{name}-multipart")
    for name in ("zip-state-dict", "legacy-training-checkpoint")
]


@pytest.mark.parametrize(("name", "multipart"), ORDINARY_PARAMS)
def test_every_served_artifact_of_an_ordinary_upload_loads_plainly(
    demo: TestClient, name: str, multipart: bool
) -> None:
    body, expected = ORDINARY[name]()
    response = post_checkpoint(demo, body, multipart=multipart)
    assert response.status_code == 201, response.text[:500]
    assert_served_loads_plainly(demo, 1, expected)


# ------------------------------------------------ the builders make what they describe (no server)


def _load(data: bytes, **kwargs: Any) -> Any:
    """torch.load from a real file (mmap needs one), warnings silenced (protocol 4 warns)."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "f.pt"
        path.write_bytes(data)
        return torch.load(path, weights_only=True, **kwargs)


def _data_pkl(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        return source.read(next(n for n in source.namelist() if n.endswith("/data.pkl")))


def _opcodes(pickled: bytes) -> list[tuple[str, Any]]:
    return [(op.name, arg) for op, arg, _ in pickletools.genops(pickled)]


def _legacy_sections(body: bytes) -> list[bytes]:
    """The legacy file's five pickles: magic, protocol, sys_info, the object, the storage-key list."""
    stream, sections = io.BytesIO(body), []
    for _ in range(5):
        start = stream.tell()
        for _op in pickletools.genops(stream):
            pass
        sections.append(body[start : stream.tell()])
    return sections


def _legacy_main_pickle(body: bytes) -> bytes:
    return _legacy_sections(body)[3]


def _legacy_storage_keys(body: bytes) -> list[str]:
    keys: list[str] = pickle.loads(_legacy_sections(body)[4])
    return keys


def _evaluate(value: Any) -> Any:
    """Run a crafted Call the way the unpickler would (only used on codec calls)."""
    if isinstance(value, H.Call):
        return value.func(*(_evaluate(a) for a in value.args))
    return value


class _Recorder(pickle.Unpickler):
    """Resolves nothing: records every global asked for; ``allow`` ones become a stub, others stop it."""

    def __init__(self, data: bytes, allow: set[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.asked: list[str] = []
        self.allow = allow

    def find_class(self, module: str, name: str) -> Any:
        self.asked.append(f"{module}.{name}")
        if f"{module}.{name}" not in self.allow:
            raise pickle.UnpicklingError(f"refused {module}.{name}")
        return dict if name == "OrderedDict" else _stub

    def persistent_load(self, pid: Any) -> Any:
        return None


def _stub(*args: Any, **kwargs: Any) -> None:
    return None


def _check_uninitialised() -> None:
    for kind in KINDS:
        for constructor in H.UNINITIALISED:
            weight = _load(H.uninitialised_weight(kind, constructor))["linear.weight"]
            assert weight.shape == (1, 10) and weight.dtype == torch.float32, (kind, constructor)
        momentum = _load(H.uninitialised_optimizer_state(kind))["optimizer_state_dict"]["state"][0]
        assert momentum["momentum_buffer"].shape == (1, 10)
    omitted = H.legacy_omitted_storage_key()
    assert _legacy_storage_keys(omitted) == ["1"]  # the pickle also declares "0"
    assert any(op == "BINPERSID" for op, _ in _opcodes(_legacy_main_pickle(omitted)))
    assert "'0'" in str(_opcodes(_legacy_main_pickle(omitted)))
    assert _load(omitted)["linear.weight"].shape == (1, 10)
    with pytest.raises(RuntimeError, match="data/5"):
        _load(H.zip_missing_record())


def _check_amplification() -> None:
    huge = H.legacy_declared_huge_storage()
    assert len(huge) < 500
    assert _load(huge)["linear.weight"].untyped_storage().nbytes() == 2**30  # 1 GiB, never written
    assert _load(H.bytearray_beside_weights("zip", 16))["extra"] == bytearray(16)
    assert _load(H.bytearray_beside_weights("legacy", 16))["extra"] == bytearray(16)
    assert _load(H.allocating_constructor_beside_weights("zip", 4))["extra"].shape == (4,)
    for kind in KINDS:
        giant = _load(H.stride_zero_giant(kind, "extra"))["extra"]
        assert giant.shape == (2**20, 2**20) and giant.stride() == (0, 0)
        assert giant.untyped_storage().nbytes() == 4
    many = H.safetensors_many_metadata_entries(1000)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(many)
        with safetensors.safe_open(str(path), framework="pt") as handle:
            assert len(handle.metadata()) == 1000  # the reference reader takes any number


def _check_codecs() -> None:
    for codec, call in H.codec_payloads(punycode_points=50).items():
        assert call.func is _codecs.encode and call.args[1] == codec
        expected = _evaluate(call)
        for kind in KINDS:
            assert _load(H.codec_beside_weights(kind, codec, 50))["extra"] == expected, (kind, codec)
    assert _load(H.latin1_bytes_beside_weights("zip"))["tokenizer"] == b"\x00\x01\xfe\xffbytes"
    assert ("GLOBAL", "_codecs encode") in _opcodes(_data_pkl(H.latin1_bytes_beside_weights("zip")))


def _check_unservable() -> None:
    for numel, record in ((10, 4), (2**62 + 1, 40), (2**28, 40)):
        body = H.zip_declared_numel(numel, record)
        with pytest.raises((RuntimeError, TypeError)):
            _load(body)  # plain torch.load refuses ...
        assert _load(body, mmap=True, map_location="cpu")["linear.weight"].shape == (
            1,
            10,
        )  # ... mmap does not
    with pytest.raises(RuntimeError, match="wrong byte size"):
        _load(H.legacy_numel_mismatch())
    for kind in KINDS:
        for location in ("xla:0", "../../tmp", "", "cuda:0"):
            body = H.storage_location(kind, location)
            with pytest.raises(RuntimeError):
                _load(body)
            assert _load(body, map_location="cpu")["linear.weight"].device.type == "cpu"
        assert _load(H.storage_location(kind, "meta"))["linear.weight"].is_meta


def _check_smuggling() -> None:
    marker = Path("/nonexistent/pwned")
    seeded = H.seeded_state_dict()
    command = f"touch {marker}".encode()
    for body in (
        H.zip_unreferenced_member(marker),
        H.zip_long_member_name(marker, digits=True),
        H.zip_then_trailing(marker, "legacy-pickle"),
        H.zip_then_trailing(marker, "pickle"),
        H.zip_comment_payload(marker),
    ):
        assert command in body
        assert H.same_bits(_load(body)["linear.weight"], seeded["linear.weight"])
    with zipfile.ZipFile(io.BytesIO(H.zip_unreferenced_member(marker))) as archive:
        assert "archive/data/9999" in archive.namelist()
    with zipfile.ZipFile(io.BytesIO(H.zip_long_member_name(marker, digits=True))) as archive:
        assert max(len(n) for n in archive.namelist()) > 65_000
    with zipfile.ZipFile(io.BytesIO(H.zip_comment_payload(marker))) as archive:
        assert archive.comment == H.gadget_pickle(marker)
    assert H.zip_then_trailing(marker, "pickle").endswith(H.gadget_pickle(marker))
    token = H.smuggle_token(marker)
    for body in (H.zip_padding_payload(marker), H.zip_nul_storage_key(marker)):
        assert token in body
        assert H.same_bits(_load(body)["linear.weight"], seeded["linear.weight"])
    with zipfile.ZipFile(io.BytesIO(H.zip_nul_storage_key(marker))) as archive:
        assert not any("\x00" in n for n in archive.namelist())  # torch's C reader cut the key at the NUL
    for body in (
        H.zip_pickle_then_payload(marker),
        H.storage_tail("zip", marker),
        H.storage_tail("legacy", marker),
        H.legacy_then_trailing(marker),
    ):
        assert command in body
        assert H.same_bits(_load(body)["linear.weight"], seeded["linear.weight"])
    for kind in KINDS:  # torch.save of the loaded view writes the whole storage, gadget included
        view = _load(H.storage_tail(kind, marker))["linear.weight"]
        assert view.untyped_storage().nbytes() > 40
        assert command in H.torch_save_bytes({"w": view})
    patched = H.zip_serialization_id_payload(marker)
    with zipfile.ZipFile(io.BytesIO(patched)) as archive:
        assert archive.testzip() is None  # every CRC still matches
        member = next(n for n in archive.namelist() if n.endswith("serialization_id"))
        assert archive.read(member).startswith(token)
    assert H.same_bits(_load(patched)["linear.bias"], seeded["linear.bias"])


def _check_crafted() -> None:
    for member in ("data.pkl", "data/0"):
        with zipfile.ZipFile(io.BytesIO(H.zip_encrypted_flag(member))) as archive:
            info = next(i for i in archive.infolist() if i.filename.endswith(member))
            assert info.flag_bits & 1
            with pytest.raises(RuntimeError, match="encrypted"):
                archive.read(info)
    assert _load(H.nested_tensor_weight())["linear.weight"].is_nested
    for kind in KINDS:
        for shape, depth in (("lists", 50_000), ("dicts", 30_000)):
            value = _load(H.deep_nesting_beside_weights(kind, shape, depth))["extra"]
            levels = 0
            while value:
                value = value[0] if shape == "lists" else value["a"]
                levels += 1
            assert levels == depth - 1, (kind, shape, levels)
    with pytest.raises(Exception, match="overflow"):
        safetensors.torch.load(H.safetensors_giant_empty_shape())
    for body in (H.safetensors_nested_brackets(), H.safetensors_nested_metadata()):
        with pytest.raises(RecursionError):
            json.loads(body[8 : 8 + struct.unpack("<Q", body[:8])[0]])


def _check_surrogates() -> None:
    for kind in KINDS:
        body = H.lone_surrogate_training(kind, "optimizer_name")
        assert "\ud800".encode("utf-8", "surrogatepass") in body
        assert _load(body)["optimizer_name"] == "\ud800"
    with pytest.raises(Exception, match="JSON"):
        safetensors.torch.load(H.safetensors_surrogate_metadata())


def _check_protocols() -> None:
    for protocol in (4, 5):
        body = H.torch_save_bytes(H.seeded_state_dict(), protocol=protocol)
        names = {name for name, _ in _opcodes(_data_pkl(body))}
        assert {"FRAME", "MEMOIZE", "SHORT_BINUNICODE", "STACK_GLOBAL"} <= names
        assert "GLOBAL" not in names and "BINPUT" not in names
        with pytest.raises(pickle.UnpicklingError, match="Unsupported operand 149"):
            _load(body)  # torch's weights_only reader stops at FRAME (opcode 149)
        assert H.same_bits(
            torch.load(io.BytesIO(body), weights_only=False)["linear.bias"],
            H.seeded_state_dict()["linear.bias"],
        )
        module = _data_pkl(H.torch_save_bytes(RegisteredSimpleModel(), protocol=protocol))
        assert {"EMPTY_SET", "NEWOBJ"} <= {name for name, _ in _opcodes(module)}
    marker = Path("/nonexistent/pwned")
    allow = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"}
    for name, target in (
        ("p4-os.system-stack-global", "posix.system"),
        ("p4-os.system-stack-global-from-memo", "posix.system"),
        ("p5-os.system-stack-global-from-memo", "os.system"),
        ("p4-torch.save-to-marker", "torch.serialization.save"),
        ("p2-torch.save-to-marker", "torch.serialization.save"),
    ):
        recorder = _Recorder(_data_pkl(H.protocol4_cases(marker)[name]), allow)
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            recorder.load()
        assert recorder.asked[-1] == target, (name, recorder.asked)
    hidden = _opcodes(_data_pkl(H.protocol4_cases(marker)["p4-os.system-stack-global-from-memo"]))
    at = next(
        i for i, (op, _) in enumerate(hidden) if op == "STACK_GLOBAL" and hidden[i - 1][0] == "LONG_BINGET"
    )
    assert hidden[at - 2][0] == "LONG_BINGET" and hidden[at - 3][0] == "POP"
    legacy_pickle = _data_pkl(H.uninitialised_weight("zip", "Tensor-newobj"))
    assert ("GLOBAL", "torch Tensor") in _opcodes(legacy_pickle)
    assert "NEWOBJ" in {op for op, _ in _opcodes(legacy_pickle)}


def _check_twins_and_alignment() -> None:
    for kind in KINDS:
        loaded = _load(H.valid_crafted(kind))
        for key, value in H.seeded_state_dict().items():
            assert H.same_bits(loaded[key], value)
    offsets = {_data_offset(_reference_safetensors(0, pad, torch.float32)[0]) % 64 for pad in range(64)}
    assert offsets == set(range(0, 64, 8))
    assert _data_offset(H.safetensors_bytes(H.seeded_state_dict(), {"pad": ""})) == 168  # the file


@pytest.mark.parametrize(
    "check",
    [
        _check_uninitialised,
        _check_amplification,
        _check_codecs,
        _check_unservable,
        _check_smuggling,
        _check_crafted,
        _check_surrogates,
        _check_protocols,
        _check_twins_and_alignment,
    ],
    ids=lambda check: check.__name__.removeprefix("_check_"),
)
def test_builders_make_what_they_describe(check: Callable[[], None]) -> None:
    check()


def test_no_builder_touches_the_marker(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for case in REFUSALS.values():
        case.build(marker)
    for either in EITHER.values():
        either.build(marker)
    assert not marker.exists()
    assert os.listdir(tmp_path) == []
