"""How an artifact's bytes are stored: a whole file (the blob named by its sha256) or a recipe.

A recipe-backed artifact's row names the blob holding its recipe (``recipe_sha256``); the recipe composes
the download from tensor blobs and small literal pieces (``app.storage.composed``), and the artifact's
``tensors`` rows name those blobs so gc and deletes know what is in use without parsing recipes. Rows
written before recipes existed are whole files and are read as they always were.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Literal as TypingLiteral

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from app.artifacts.models import Artifact, ArtifactTensor
from app.storage.blobstore import BlobStore
from app.storage.composed import Recipe

Storage = TypingLiteral["file", "recipe"]
FILE: Storage = "file"
RECIPE: Storage = "recipe"
# Recipes are immutable (named by the sha256 of their JSON): parsed once per process, a few kept.
_RECIPE_CACHE_SIZE = 64


class StoredArtifactMissing(RuntimeError):
    """A row's recipe is not on disk (fsck reports this as damage)."""


def is_recipe(artifact: Artifact) -> bool:
    if artifact.storage not in (FILE, RECIPE):
        raise ValueError(f"artifact {artifact.id} has an unknown storage {artifact.storage!r}")
    return artifact.storage == RECIPE


def recipe_of(*, store: BlobStore, artifact: Artifact) -> Recipe:
    """The parsed recipe of a recipe-backed artifact."""
    if artifact.recipe_sha256 is None:
        raise ValueError(f"artifact {artifact.id} is stored as a recipe but names none")
    return load_recipe(store.root, artifact.recipe_sha256)


@functools.lru_cache(maxsize=_RECIPE_CACHE_SIZE)
def load_recipe(root: Path, sha256: str) -> Recipe:
    path = BlobStore(root).path_for(sha256)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoredArtifactMissing(f"the recipe blob {sha256} is not on disk") from None
    return Recipe.from_json(data)


def blob_names(*, session: Session, artifacts: Iterable[Artifact]) -> set[str]:
    """Every blob the given artifacts use: their files, or their recipes and the tensors these read."""
    names: set[str] = set()
    composed: list[int] = []
    for artifact in artifacts:
        if is_recipe(artifact):
            assert artifact.recipe_sha256 is not None
            names.add(artifact.recipe_sha256)
            composed.append(artifact.id)
        else:
            names.add(artifact.sha256)
    if composed:
        names.update(
            session.scalars(select(ArtifactTensor.sha256).where(ArtifactTensor.artifact_id.in_(composed)))
        )
    return names


def referenced_names(*, session: Session) -> set[str]:
    """Every blob some row uses (gc keeps these). A recipe-backed artifact's own sha256 names no blob,
    but keeping a blob that happens to have it is harmless, and the query stays one index scan each."""
    files = select(Artifact.sha256)
    recipes = select(Artifact.recipe_sha256).where(Artifact.recipe_sha256.is_not(None))
    tensors = select(ArtifactTensor.sha256)
    return {name for name in session.scalars(union(files, recipes, tensors)) if name is not None}


def is_referenced(*, session: Session, sha256: str) -> bool:
    for column in (Artifact.sha256, Artifact.recipe_sha256, ArtifactTensor.sha256):
        if session.scalar(select(column).where(column == sha256).limit(1)) is not None:
            return True
    return False
