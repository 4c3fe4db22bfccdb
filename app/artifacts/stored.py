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


def bytes_at_rest(*, session: Session, store: BlobStore) -> tuple[int, int]:
    """``(bytes, blobs)`` the rows keep on disk: whole-file artifacts, recipes and the tensor blobs these
    read, each distinct blob once (what storage costs, not the sizes downloads are served at).

    A whole file's size is its row's; recipe and tensor blob sizes are read from the store (a blob that
    is missing counts nothing: fsck reports it).
    """
    files = dict(
        session.execute(
            select(Artifact.sha256, Artifact.size).where(Artifact.storage == FILE).distinct()
        ).all()
    )
    recipes = select(Artifact.recipe_sha256).where(Artifact.recipe_sha256.is_not(None))
    tensors = select(ArtifactTensor.sha256)
    composed = {name for name in session.scalars(union(recipes, tensors)) if name is not None}
    composed.difference_update(files)
    total = sum(files.values()) + sum(_blob_size(store.root, name) for name in composed)
    return total, len(files) + len(composed)


# Blobs are immutable (named by their content): a size once read never changes, so a scrape stats only
# the blobs it has not seen. Bounded so a huge store cannot grow it without end.
_SIZES: dict[tuple[Path, str], int] = {}
_SIZES_MAX = 1_000_000


def _blob_size(root: Path, sha256: str) -> int:
    key = (root, sha256)
    size = _SIZES.get(key)
    if size is None:
        try:
            size = BlobStore(root).path_for(sha256).stat().st_size
        except FileNotFoundError:
            return 0
        if len(_SIZES) >= _SIZES_MAX:
            _SIZES.clear()
        _SIZES[key] = size
    return size
