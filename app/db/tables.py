"""Import every table so ``Base.metadata`` is complete (Alembic and tests use this)."""

from app.architectures.models import RegisteredArchitecture
from app.artifacts.models import Artifact, ArtifactTensor
from app.auth.models import ApiToken
from app.db.base import Base
from app.jobs.models import Job
from app.models.models import Alias, RegisteredModel
from app.uploads.models import UploadSession
from app.versions.models import Version

__all__ = [
    "Alias",
    "ApiToken",
    "Artifact",
    "ArtifactTensor",
    "Base",
    "Job",
    "RegisteredArchitecture",
    "RegisteredModel",
    "UploadSession",
    "Version",
]
