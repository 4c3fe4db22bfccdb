"""The ingest pool on its own: the same answers as an in-process ingest, refusals with their details, and
a crash that costs only the upload whose child crashed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.architectures.registry import load_registry
from app.checkpoints.limits import ReadLimits
from app.checkpoints.pool import IngestPool, InProcessIngester, ProcessLimits
from app.errors import ArchitectureMismatch, IngestCrashed, WeightvaultError
from tests.checkpoints import SimpleModel

ARCH = load_registry().get("simple-linear")
CONFIG = ARCH.effective_config({})


@pytest.fixture
def pool() -> Iterator[IngestPool]:
    made = IngestPool(size=2, architecture_modules=[], limits=ProcessLimits())
    yield made
    made.close()


def _stage(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def test_the_pool_answers_what_an_in_process_ingest_answers(pool: IngestPool, tmp_path: Path) -> None:
    upload = tmp_path / "m.pt"
    torch.save(SimpleModel().state_dict(), upload)
    kwargs = {"upload": upload, "architecture": ARCH, "config": CONFIG, "limits": ReadLimits()}
    isolated = pool.ingest(workdir=_stage(tmp_path, "a"), **kwargs)  # type: ignore[arg-type]
    local = InProcessIngester().ingest(workdir=_stage(tmp_path, "b"), **kwargs)  # type: ignore[arg-type]
    assert [(a.kind, a.format, a.sha256, a.size) for a in isolated.artifacts] == [
        (a.kind, a.format, a.sha256, a.size) for a in local.artifacts
    ]
    assert all(a.path.parent == tmp_path / "a" and a.path.is_file() for a in isolated.artifacts)
    assert (isolated.format, isolated.layout, isolated.training) == (
        local.format,
        local.layout,
        local.training,
    )


def test_a_refusal_keeps_its_class_and_details(pool: IngestPool, tmp_path: Path) -> None:
    upload = tmp_path / "wrong.pt"
    torch.save({"linear.weight": torch.zeros(3, 10)}, upload)
    with pytest.raises(ArchitectureMismatch) as caught:
        pool.ingest(
            upload=upload,
            architecture=ARCH,
            config=CONFIG,
            workdir=_stage(tmp_path, "w"),
            limits=ReadLimits(),
        )
    assert caught.value.details["missing_keys"] == ["linear.bias"]


def test_a_crash_fails_only_the_upload_whose_child_crashed(pool: IngestPool, tmp_path: Path) -> None:
    pool.fault_hook = "tests.fixtures.ingest_faults:segfault_if_named_crash"
    outcomes: dict[str, object] = {}

    def run(name: str) -> None:
        upload = tmp_path / f"{name}.pt"
        torch.save(SimpleModel().state_dict(), upload)
        try:
            outcomes[name] = pool.ingest(
                upload=upload,
                architecture=ARCH,
                config=CONFIG,
                workdir=_stage(tmp_path, name),
                limits=ReadLimits(),
            )
        except WeightvaultError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("crash", "fine-1", "fine-2", "fine-3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert isinstance(outcomes["crash"], IngestCrashed)
    assert outcomes["crash"].details == {"signal": "SIGSEGV"}
    assert all(not isinstance(outcomes[name], Exception) for name in ("fine-1", "fine-2", "fine-3"))
