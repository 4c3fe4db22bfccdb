"""What a run measured: named metrics with their samples (one per repeat) and notes; medians on demand."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metric:
    key: str  # "upload/1G/service_raw/seconds"
    label: str  # what a reader sees in the table
    unit: str  # "s", "MiB", "req/s", "ms"
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "samples": self.samples,
            "median": self.median if self.samples else None,
            "min": min(self.samples) if self.samples else None,
            "max": max(self.samples) if self.samples else None,
        }


class Results:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.context: dict[str, Any] = {}

    def add(self, key: str, value: float, *, unit: str, label: str) -> None:
        metric = self.metrics.setdefault(key, Metric(key=key, label=label, unit=unit))
        metric.samples.append(float(value))

    def median(self, key: str) -> float | None:
        metric = self.metrics.get(key)
        return metric.median if metric and metric.samples else None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)
