"""Fill a weightvault database fast with bulk inserts: models, versions with metadata, their artifacts.

The rows copy the shape of a real version (``template``: one stored version's columns and artifacts), so
reads cost what they would in production; the artifacts point at the template's blobs (nothing is
downloaded in the read benchmarks). Runs against the schema the server migrated, beside a running server.

    python -m benchmarks.fill URL --models 10000 --versions 100000
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select, update

from app.artifacts.models import Artifact, ArtifactTensor
from app.db.base import utcnow
from app.models.models import RegisteredModel
from app.versions.models import Version

ARCHITECTURES = ["simple-linear", "mlp", "cnn", "transformer-encoder"]
CHUNK = 5000


def _template(engine: Engine) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first stored version's columns and its artifacts' (a real upload's shape)."""
    with engine.connect() as conn:
        version = conn.execute(select(Version.__table__).order_by(Version.id).limit(1)).mappings().one()
        artifacts = conn.execute(
            select(Artifact.__table__).where(Artifact.version_id == version["id"]).order_by(Artifact.id)
        ).mappings()
        found = [dict(a) for a in artifacts]
        # A recipe-backed artifact's tensor blobs: each copy gets the same rows (fsck checks them).
        for artifact in found:
            artifact["_tensors"] = list(
                conn.scalars(
                    select(ArtifactTensor.sha256).where(ArtifactTensor.artifact_id == artifact["id"])
                )
            )
        return dict(version), found


def _next_id(engine: Engine, column: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.max(column), 0))) or 0) + 1


def _insert(engine: Engine, table: Any, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            conn.execute(insert(table), rows[start : start + CHUNK])


def fill(
    url: str,
    *,
    models: int,
    versions: int,
    prefix: str = "bulk",
    extra_versions: dict[str, int] | None = None,
) -> None:
    """Add ``models`` models named ``{prefix}-{architecture}-{n}`` with ``versions`` versions between them,
    plus ``extra_versions[name]`` more versions of existing models; every version with user metadata."""
    engine = create_engine(url)
    try:
        version, artifacts = _template(engine)
        rng = random.Random(0)
        model_id = _next_id(engine, RegisteredModel.id)
        model_rows: list[dict[str, Any]] = []
        owners: list[tuple[int, int]] = []  # (model id, versions)
        per_model, remainder = divmod(versions, max(1, models))
        now = utcnow()
        for n in range(models):
            count = per_model + (1 if n < remainder else 0)
            architecture = ARCHITECTURES[n % len(ARCHITECTURES)]
            model_rows.append(
                {
                    "id": model_id + n,
                    "name": f"{prefix}-{architecture}-{n:06d}",
                    "architecture": architecture,
                    "config": {},
                    "description": f"bulk model {n}",
                    "metadata": {"team": f"team-{n % 37}", "task": "classification"},
                    "created_at": now,
                    "last_version": count,
                }
            )
            owners.append((model_id + n, count))
        _insert(engine, RegisteredModel.__table__, model_rows)
        with engine.connect() as conn:
            for name, count in (extra_versions or {}).items():
                row = conn.execute(
                    select(RegisteredModel.id, RegisteredModel.last_version).where(
                        RegisteredModel.name == name
                    )
                ).one()
                owners.append((row.id, -count))  # negative: continue after last_version
        version_id = _next_id(engine, Version.id)
        artifact_id = _next_id(engine, Artifact.id)
        version_rows: list[dict[str, Any]] = []
        artifact_rows: list[dict[str, Any]] = []
        tensor_rows: list[dict[str, Any]] = []
        bumps: dict[int, int] = {}
        for owner, count in owners:
            first = 1
            if count < 0:
                with engine.connect() as conn:
                    last = conn.scalar(
                        select(RegisteredModel.last_version).where(RegisteredModel.id == owner)
                    )
                first, count = int(last or 0) + 1, -count
                bumps[owner] = first + count - 1
            for number in range(first, first + count):
                version_rows.append(
                    {
                        **{k: v for k, v in version.items() if k != "id"},
                        "id": version_id,
                        "model_id": owner,
                        "number": number,
                        "created_at": now,
                        "metadata": {"acc": round(rng.random(), 4), "epoch": number, "run": f"r{number}"},
                    }
                )
                for artifact in artifacts:
                    row = {k: v for k, v in artifact.items() if k != "_tensors"}
                    artifact_rows.append({**row, "id": artifact_id, "version_id": version_id})
                    tensor_rows.extend(
                        {"artifact_id": artifact_id, "sha256": t} for t in artifact["_tensors"]
                    )
                    artifact_id += 1
                version_id += 1
            if len(version_rows) >= 4 * CHUNK:
                _insert(engine, Version.__table__, version_rows)
                _insert(engine, Artifact.__table__, artifact_rows)
                _insert(engine, ArtifactTensor.__table__, tensor_rows)
                version_rows, artifact_rows, tensor_rows = [], [], []
        _insert(engine, Version.__table__, version_rows)
        _insert(engine, Artifact.__table__, artifact_rows)
        _insert(engine, ArtifactTensor.__table__, tensor_rows)
        with engine.begin() as conn:
            for owner, last in bumps.items():
                conn.execute(
                    update(RegisteredModel).where(RegisteredModel.id == owner).values(last_version=last)
                )
            if engine.dialect.name == "postgresql":
                for table in ("models", "versions", "artifacts"):
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                    )
                conn.exec_driver_sql("ANALYZE")
            else:
                conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=100_000)
    args = parser.parse_args()
    fill(args.url, models=args.models, versions=args.versions)


if __name__ == "__main__":
    main()
