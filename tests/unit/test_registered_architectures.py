"""Registered architectures without HTTP: the registry built from a record, the ingest child building it
from the record it is sent (it has no database), and the transformers library module on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.architectures.libraries import architecture_of
from app.architectures.registry import ArchitectureRegistry, load_registry
from app.architectures.spec import InputSpec, Registration
from app.checkpoints.limits import ReadLimits
from app.checkpoints.pool import IngestPool, ProcessLimits
from app.errors import ArchitectureNotFound

LINEAR = Registration(
    id="0" * 32,
    name="lin",
    library="torch",
    description="nn.Linear(4, 2)",
    config=None,
    factory="nn.Linear",
    kwargs={"in_features": 4, "out_features": 2},
    inputs=[InputSpec("x", ("batch", 4)).to_data()],
    parameters=10,
)


class _One:
    def __init__(self, registration: Registration) -> None:
        self.registration = registration

    def find(self, name: str) -> Registration | None:
        return self.registration if name == self.registration.name else None

    def all(self) -> list[Registration]:
        return [self.registration]


def test_one_registry_for_code_and_registrations() -> None:
    registry = load_registry(registrations=_One(LINEAR))
    assert [a.name for a in registry.all()] == ["cnn", "lin", "mlp", "simple-linear", "transformer-encoder"]
    arch = registry.get("lin")
    assert (arch.source, arch.library, arch.parameters) == ("registered", "torch", 10)
    assert registry.get("lin") is arch  # built once per registration id
    assert registry.get("mlp").source == "builtin" and registry.is_code("mlp") and not registry.is_code("lin")
    module = arch.build(arch.effective_config({}))
    assert isinstance(module, torch.nn.Linear)
    assert arch.example_inputs({})[0].shape == (2, 4)


def test_without_a_source_only_a_given_record_is_found() -> None:
    registry = ArchitectureRegistry([])
    with pytest.raises(ArchitectureNotFound):
        registry.get("lin")
    assert registry.get("lin", registration=LINEAR).name == "lin"


def test_the_ingest_child_builds_a_registered_architecture_from_the_record(tmp_path: Path) -> None:
    upload = tmp_path / "lin.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), upload)
    workdir = tmp_path / "work"
    workdir.mkdir()
    pool = IngestPool(size=1, architecture_modules=[], limits=ProcessLimits())
    try:
        result = pool.ingest(
            upload=upload,
            architecture=architecture_of(LINEAR),
            config={},
            workdir=workdir,
            limits=ReadLimits(),
        )
    finally:
        pool.close()
    assert result.validation["status"] == "passed"


def test_transformers_inputs_and_positional_forward() -> None:
    pytest.importorskip("transformers")
    from app.architectures.libraries.transformers import TransformersLibrary
    from tests.fixtures.hf import tiny_config, tiny_model

    config = tiny_config("GPT2LMHeadModel")
    registration = Registration(
        id="1" * 32,
        name="gpt",
        library="transformers",
        description="",
        config=config,
        factory=None,
        kwargs=None,
        inputs=[],
        parameters=0,
    )
    library = TransformersLibrary()
    library.check(registration)
    with torch.device("meta"):
        module = library.build(registration, [])
    specs = library.derive_inputs(registration, module)
    assert specs is not None and [s.name for s in specs] == ["input_ids", "attention_mask"]
    assert specs[0].high == 99 and specs[0].example_dims == {"sequence": 8}
    positional = library.build(registration, [s.name for s in specs])
    positional.load_state_dict(tiny_model(config).state_dict())
    ids, mask = (spec.example(2, torch.Generator().manual_seed(0)) for spec in specs)
    assert bool((mask == 1).all())
    with torch.inference_mode():
        out = positional.eval()(ids, mask)
    assert list(out.keys()) == ["logits"]  # no KV cache
    assert type(positional).__name__ == "GPT2LMHeadModel"
