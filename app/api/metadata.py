"""User metadata and descriptions sent in JSON bodies: what may be stored and echoed back exactly."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from app.errors import InvalidMetadata

MAX_DESCRIPTION_CHARS = 10_000
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def check_metadata(value: object, *, limit: int) -> dict[str, Any]:
    """``value`` if it is a JSON object of at most ``limit`` bytes (compact UTF-8) holding strict JSON.

    The same rules as an upload's ``metadata`` parameter: no NaN or Infinity, no lone surrogates, not nested
    too deeply; raises ``InvalidMetadata``.
    """
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
        raise InvalidMetadata(
            f'metadata must be a JSON object (send {{}} to clear it), not {kind}, e.g. {{"tags": ["baseline"]}}.'
        )
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode())
    except (ValueError, UnicodeError, RecursionError):
        raise InvalidMetadata(
            "metadata must be strict JSON: no NaN or Infinity, valid UTF-8 (no lone surrogates), "
            "not nested too deeply."
        ) from None
    if size > limit:
        raise InvalidMetadata(
            f"metadata is {size} bytes as compact JSON; the limit is {limit} (WEIGHTVAULT_MAX_METADATA_BYTES).",
            {"limit": limit, "size": size},
        )
    return value


def _storable_text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded for any database.
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Description = Annotated[
    str | None,
    Field(max_length=MAX_DESCRIPTION_CHARS, description="Free text (in an edit, null clears it)."),
    AfterValidator(_storable_text),
]

# Any JSON value on the way in, so that a non-object answers ``invalid_metadata`` (checked by the service,
# which knows the size limit) rather than a generic validation error; documented as the object it must be.
MetadataIn = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": True,
            "description": "User metadata: a JSON object (tags, metrics, notes), at most "
            "WEIGHTVAULT_MAX_METADATA_BYTES as compact JSON.",
        }
    ),
]


class EditBody(BaseModel):
    """A PATCH body: fields left out stay as they are; ``metadata`` replaces the stored object whole."""

    model_config = ConfigDict(extra="forbid")

    description: Description = None
    metadata: MetadataIn = Field(
        default=None,
        description="Replaces the stored metadata as a whole (no merge); {} clears it.",
        examples=[{"tags": ["baseline"], "metrics": {"acc": 0.98}}],
    )

    def changes(self, *, max_metadata_bytes: int) -> dict[str, Any]:
        """The row attributes to set (``description``, ``user_metadata``), checked; raises ``InvalidMetadata``."""
        found: dict[str, Any] = {}
        if "description" in self.model_fields_set:
            found["description"] = self.description
        if "metadata" in self.model_fields_set:
            found["user_metadata"] = check_metadata(self.metadata, limit=max_metadata_bytes)
        return found
