"""Register and delete architectures over HTTP; read registrations from the database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.names import check_name
from app.architectures.libraries import check_allowed
from app.architectures.models import RegisteredArchitecture
from app.architectures.probe import Probed, Recipe, declared_inputs
from app.architectures.registry import ArchitectureRegistry
from app.architectures.schemas import ArchitectureCreate
from app.architectures.spec import Architecture, Registration
from app.db.engine import begin_write, read_connection
from app.errors import (
    ArchitectureExists,
    ArchitectureInUse,
    ArchitectureNotFound,
    ArchitectureNotFoundInput,
    ArchitectureReadOnly,
    InvalidArchitecture,
)
from app.models.models import RegisteredModel

MAX_RECIPE_BYTES = 1024 * 1024
MAX_NESTING = 32
_SHOWN_MODELS = 100


class Prober(Protocol):
    """Runs ``probe.probe`` (the ingest pool: in a child process under limits)."""

    def probe(self, recipe: Recipe) -> Probed: ...


class DatabaseRegistrations:
    """The registry's source of registered architectures: one indexed read per lookup, no cache, so a
    registration or delete in any process is seen by the next lookup in every process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, name: str) -> Registration | None:
        table = RegisteredArchitecture.__table__
        with read_connection(self.engine) as conn:
            row = conn.execute(select(table).where(table.c.name == name)).mappings().first()
        return None if row is None else _record(row)

    def all(self) -> list[Registration]:
        table = RegisteredArchitecture.__table__
        with read_connection(self.engine) as conn:
            rows = conn.execute(select(table).order_by(table.c.name)).mappings().all()
        return [_record(row) for row in rows]


def _record(row: Any) -> Registration:
    return Registration(
        id=row["id"],
        name=row["name"],
        library=row["library"],
        description=row["description"],
        config=row["config"],
        factory=row["factory"],
        kwargs=row["kwargs"],
        inputs=list(row["inputs"]),
        parameters=int(row["parameters"]),
    )


def register_architecture(
    *,
    session: Session,
    registry: ArchitectureRegistry,
    prober: Prober,
    data: ArchitectureCreate,
    allowed_libraries: Sequence[str],
    max_parameters: int,
) -> Architecture:
    """Check the recipe, count its parameters on the meta device, fix its example inputs (in ``prober``'s
    child process, under its limits), then store it."""
    name = check_name(data.name, "architecture name")
    if registry.is_code(name):
        raise _exists(name)
    check_allowed(data.library, allowed_libraries)
    _check_size(data)
    probed = prober.probe(
        Recipe(
            library=data.library,
            config=data.config,
            factory=data.factory,
            kwargs=data.kwargs,
            inputs=declared_inputs(data.inputs),
            max_parameters=max_parameters,
        )
    )
    row = RegisteredArchitecture(
        id=uuid.uuid4().hex,
        name=name,
        library=data.library,
        description=data.description if data.description is not None else probed.description,
        config=data.config,
        factory=data.factory,
        kwargs=data.kwargs,
        inputs=probed.inputs,
        parameters=probed.parameters,
    )
    begin_write(session)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _exists(name) from None
    return registry.get(name, registration=row.record())


def delete_architecture(*, session: Session, registry: ArchitectureRegistry, name: str) -> None:
    """Remove a registration no model uses; built-in and plugin ones are code and stay."""
    if registry.is_code(name):
        source = registry.get(name).source
        raise ArchitectureReadOnly(
            f"'{name}' is a {source} architecture, defined by code on the server; only architectures "
            "registered over HTTP can be deleted.",
            {"architecture": name, "source": source},
        )
    begin_write(session)
    row = session.scalar(
        select(RegisteredArchitecture).where(RegisteredArchitecture.name == name).with_for_update()
    )
    if row is None:
        session.rollback()
        raise ArchitectureNotFound(
            f"No registered architecture named '{name[:200]}'.", {"architecture": name[:200]}
        )
    models = list(
        session.scalars(
            select(RegisteredModel.name)
            .where(RegisteredModel.architecture == name)
            .order_by(RegisteredModel.name)
            .limit(_SHOWN_MODELS)
        )
    )
    if models:
        session.rollback()
        raise ArchitectureInUse(
            f"{len(models)}{'+' if len(models) == _SHOWN_MODELS else ''} model(s) use '{name}' "
            f"(e.g. '{models[0]}'); delete them first.",
            {"architecture": name, "models": models},
        )
    session.delete(row)
    session.commit()


def hold_registration(*, session: Session, architecture: Architecture) -> None:
    """Inside a write transaction: keep a registered architecture from being deleted until it ends
    (a model is being created with it); ``ArchitectureNotFoundInput`` when it is already gone."""
    if architecture.source != "registered":
        return
    held = session.scalar(
        select(RegisteredArchitecture.id)
        .where(RegisteredArchitecture.name == architecture.name)
        .with_for_update(read=True)
    )
    if held is None:
        session.rollback()
        raise ArchitectureNotFoundInput(
            f"The architecture '{architecture.name}' was just deleted.", {"architecture": architecture.name}
        )


def _check_size(data: ArchitectureCreate) -> None:
    try:
        size = len(json.dumps({"config": data.config, "kwargs": data.kwargs}))
    except (RecursionError, ValueError):
        size = MAX_RECIPE_BYTES + 1
    if size > MAX_RECIPE_BYTES:
        raise InvalidArchitecture(
            f"config and kwargs may hold at most {MAX_RECIPE_BYTES} bytes of JSON, nested at most "
            f"{MAX_NESTING} levels.",
            {"limit_bytes": MAX_RECIPE_BYTES},
        )
    if _depth(data.config) > MAX_NESTING or _depth(data.kwargs) > MAX_NESTING:
        raise InvalidArchitecture(
            f"config and kwargs may be nested at most {MAX_NESTING} levels.", {"limit_depth": MAX_NESTING}
        )


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_NESTING:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _exists(name: str) -> ArchitectureExists:
    return ArchitectureExists(
        f"An architecture named '{name}' already exists; pick another name (GET /v1/architectures lists them).",
        {"architecture": name},
    )
