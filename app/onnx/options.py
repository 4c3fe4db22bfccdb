"""Conversion options, with defaults filled in so equal requests compare equal."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_OPSET = 20
MIN_OPSET = 14
MAX_OPSET = 23
CHECK_BATCH_SIZES = (1, 7)


class OnnxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int = Field(default=DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET)
    dynamic_batch: bool = True
    atol: float = Field(default=1e-4, ge=0.0, le=1e6)
    rtol: float = Field(default=1e-3, ge=0.0, le=1e6)

    @field_validator("atol", "rtol")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @classmethod
    def effective(cls, given: OnnxOptionsIn | None) -> OnnxOptions:
        provided = given.model_dump(exclude_none=True) if given else {}
        return cls(**provided)

    def batch_sizes(self) -> tuple[int, ...]:
        return CHECK_BATCH_SIZES if self.dynamic_batch else (1,)


class OnnxOptionsIn(BaseModel):
    """The request body: every field optional."""

    model_config = ConfigDict(extra="forbid")

    opset: int | None = Field(default=None, ge=MIN_OPSET, le=MAX_OPSET)
    dynamic_batch: bool | None = None
    atol: float | None = Field(default=None, ge=0.0, le=1e6, allow_inf_nan=False)
    rtol: float | None = Field(default=None, ge=0.0, le=1e6, allow_inf_nan=False)
