"""The tus protocol's refusals, in the contract's error shape with tus's status codes."""

from __future__ import annotations

from app.errors import BadRequest, Conflict, NotFound, WeightvaultError


class UploadNotFound(NotFound):
    code = "upload_not_found"


class UploadExpired(WeightvaultError):
    status = 410
    code = "upload_expired"


class OffsetMismatch(Conflict):
    code = "offset_mismatch"


class UploadBusy(WeightvaultError):
    status = 423
    code = "upload_busy"


class UploadFinished(Conflict):
    code = "upload_finished"


class ChecksumMismatch(WeightvaultError):
    status = 460  # tus checksum extension
    code = "checksum_mismatch"


class UnsupportedTusVersion(WeightvaultError):
    status = 412
    code = "unsupported_tus_version"


class WrongContentType(WeightvaultError):
    status = 415
    code = "unsupported_media_type"


class TooManyUploads(WeightvaultError):
    status = 429
    code = "too_many_uploads"


class InvalidUploadRequest(BadRequest):
    status = 400
    code = "invalid_upload_request"
