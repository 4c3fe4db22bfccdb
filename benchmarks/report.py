"""Turn a run's results into the targets table (ratios from the same run), the measurements table and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.data import size_key, size_label
from benchmarks.results import Results

MiB = 1024**2


@dataclass(frozen=True)
class Target:
    workload: str
    what: str
    value: list[str]  # metric keys summed for the measured side
    baseline: list[str]  # metric keys summed for the baseline (empty: compare the value to ``limit``)
    op: str  # "<=" or ">="
    limit: float
    applies: bool = True  # False: shown for information (e.g. the 100 MiB size has no target)
    invert: bool = False  # ratio is baseline / value (e.g. "N x faster", "N x the rate")

    def evaluate(self, results: Results) -> tuple[float | None, float | None, float | None, str]:
        value = _sum(results, self.value)
        base = _sum(results, self.baseline) if self.baseline else None
        if value is None or (self.baseline and base is None):
            return value, base, None, "n/a"
        if self.baseline:
            assert base is not None
            ratio = (base / value if self.invert else value / base) if (value and base) else None
        else:
            ratio = value
        if ratio is None:
            return value, base, None, "n/a"
        met = ratio <= self.limit if self.op == "<=" else ratio >= self.limit
        if not self.applies:
            return value, base, ratio, "info"
        return value, base, ratio, "met" if met else "MISSED"


def _sum(results: Results, keys: Sequence[str]) -> float | None:
    values = [results.median(key) for key in keys]
    if not values or any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def targets(
    sizes: Sequence[int], download_size: int, archs: Sequence[str], clients: Sequence[int]
) -> list[Target]:
    found: list[Target] = []
    for size in sizes:
        k, label = size_key(size), size_label(size)
        big = size >= 1024**3
        found += [
            Target(
                f"upload {label}",
                "raw upload+ingest / floor (raw PUT sha256+fsync + in-process safetensors.save_file)",
                [f"upload/{k}/service_raw/seconds"],
                [f"upload/{k}/floor_put/seconds", f"upload/{k}/inproc_safetensors/seconds"],
                "<=",
                1.1,  # issue 13, item 4
                applies=big,
            ),
            Target(
                f"upload {label}",
                "multipart / raw",
                [f"upload/{k}/service_multipart/seconds"],
                [f"upload/{k}/service_raw/seconds"],
                "<=",
                1.3,
            ),
            Target(
                f"upload {label}",
                "server RssAnon growth during raw upload (MiB)",
                [f"upload/{k}/service_raw/anon_growth_mib"],
                [],
                "<=",
                256,
                applies=big,
            ),
            Target(
                f"upload {label}",
                "server RssAnon growth during multipart upload (MiB)",
                [f"upload/{k}/service_multipart/anon_growth_mib"],
                [],
                "<=",
                256,
                applies=big,
            ),
        ]
    dk, dlabel = size_key(download_size), size_label(download_size)
    for kind, fmt in (("full", "pt"), ("weights", "safetensors"), ("weights", "pt"), ("hf", "zip")):
        found.append(
            Target(
                f"download {dlabel}",
                f"weightvault GET {kind}.{fmt} (composed) / nginx sendfile GET of a file of its size",
                [f"download/{dk}/{kind}_{fmt}/service/seconds"],
                [f"download/{dk}/{kind}_{fmt}/nginx/seconds"],
                "<=",
                1.0,
            )
        )
    found.append(
        Target(
            f"pull {dlabel}",
            "weightvault pull -o (CLI, empty cache) / curl -o (>= 0.8x curl's speed)",
            [f"pull/{dk}/cli/seconds"],
            [f"pull/{dk}/curl/seconds"],
            "<=",
            1.25,
        )
    )
    found.append(
        Target(
            f"pull {dlabel}",
            "Client.pull(output=) call alone / curl -o",
            [f"pull/{dk}/client/seconds"],
            [f"pull/{dk}/curl/seconds"],
            "<=",
            1.25,
        )
    )
    for arch in archs:
        found.append(
            Target(
                f"onnx {arch}",
                "service submit->succeeded / fresh python -c export+check",
                [f"onnx/{arch}/service/seconds"],
                [f"onnx/{arch}/script/seconds"],
                "<=",
                1.0,
            )
        )
    found += [
        Target(
            f"vs MLflow {dlabel}",
            "weightvault raw upload+ingest / MLflow bare artifact PUT",
            [f"upload/{dk}/service_raw/seconds"],
            [f"mlflow/{dk}/put/seconds"],
            "<=",
            1.0,
        ),
        Target(
            f"vs MLflow {dlabel}",
            "MLflow artifact GET / weightvault GET (x faster)",
            [f"download/{dk}/weights_safetensors/service/seconds"],
            [f"mlflow/{dk}/get/seconds"],
            ">=",
            10.0,
            invert=True,
        ),
    ]
    for c in clients:
        found.append(
            Target(
                f"vs MLflow, {c} client{'s' if c > 1 else ''}",
                "metadata req/s: weightvault (SQLite) / MLflow (SQLite)",
                [f"metadata/sqlite/c{c}/rps"],
                [f"mlflow/metadata/c{c}/rps"],
                ">=",
                10.0,  # issue 14
            )
        )
    return found + _read_targets(clients)


def _read_targets(clients: Sequence[int]) -> list[Target]:
    """Issue 14: each metadata read alone against the floor, PostgreSQL against SQLite, processes."""
    found: list[Target] = []
    reads = ["model", "version", "page50"]
    for scope, names in (("", reads), ("filled/", [*reads, "page50_newest", "search"])):
        for name in names:
            for c in clients:
                read = f"{scope}{name}, {c} client{'s' if c > 1 else ''}"
                found.append(
                    Target(
                        f"metadata {read}",
                        "req/s: weightvault (SQLite) / floor (Starlette + one sqlite3 SELECT)",
                        [f"metadata/sqlite/{scope}{name}/c{c}/rps"],
                        [f"metadata/floor/c{c}/rps"],
                        ">=",
                        0.5,
                    )
                )
                found.append(
                    Target(
                        f"metadata {read}",
                        "req/s: weightvault PostgreSQL / weightvault SQLite",
                        [f"metadata/postgresql/{scope}{name}/c{c}/rps"],
                        [f"metadata/sqlite/{scope}{name}/c{c}/rps"],
                        ">=",
                        0.7,
                    )
                )
    top = max(clients)
    for name in reads:
        found.append(
            Target(
                f"metadata {name}, {top} clients",
                "p99 latency, SQLite (ms)",
                [f"metadata/sqlite/{name}/c{top}/p99_ms"],
                [],
                "<=",
                25.0,
            )
        )
    found.append(
        Target(
            f"metadata model, {top} clients",
            "req/s: serve --workers 2 / --workers 1 (SQLite)",
            [f"metadata/sqlite/workers2/model/c{top}/rps"],
            [f"metadata/sqlite/workers1/model/c{top}/rps"],
            ">=",
            1.2,
        )
    )
    return found


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "MiB" or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def targets_table(results: Results, wanted: Sequence[Target]) -> list[str]:
    lines = [
        "| workload | comparison | weightvault | baseline | ratio | target | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for target in wanted:
        value, base, ratio, verdict = target.evaluate(results)
        if verdict == "n/a":
            continue  # a side of it did not run
        if target.baseline:
            unit = "req/s" if "req/s" in target.what else "s"
            ratio_text, limit = f"{ratio:.2f}x", f"{target.op} {target.limit:g}x"
        else:
            unit = "ms" if target.what.endswith("(ms)") else "MiB"
            ratio_text, limit = "—", f"{target.op} {target.limit:g} {unit}"
        if not target.applies:
            limit += " (applies at 1 GiB, 4 GiB)"
        lines.append(
            f"| {target.workload} | {target.what} | {_fmt(value, unit)} | {_fmt(base, unit)} | "
            f"{ratio_text} | {limit} | {verdict} |"
        )
    return lines


def measurements_table(results: Results) -> list[str]:
    lines = ["| measurement | median | min | max | n |", "|---|---:|---:|---:|---:|"]
    for metric in results.metrics.values():
        if not metric.samples:
            continue
        lines.append(
            f"| {metric.label} | {_fmt(metric.median, metric.unit)} | {_fmt(min(metric.samples), metric.unit)} | "
            f"{_fmt(max(metric.samples), metric.unit)} | {len(metric.samples)} |"
        )
    return lines


READ_ROWS = [
    ("model", "model"),
    ("version", "version 1"),
    ("page50", "page of 50"),
    ("filled/model", "filled: model"),
    ("filled/version", "filled: version 1"),
    ("filled/page50", "filled: page of 50"),
    ("filled/page50_newest", "filled: page of 50, newest first"),
    ("filled/search", "filled: `?q=mlp-0001&architecture=mlp`"),
]


def _ratio(value: float | None, base: float | None) -> str:
    return f" ({value / base:.2f}x)" if value and base else ""


def reads_table(results: Results) -> list[str]:
    """Issue 14's table: each read against the floor, PostgreSQL against SQLite, and processes."""
    clients = sorted(
        {int(k.split("/c")[1].split("/")[0]) for k in results.metrics if k.startswith("metadata/floor/c")}
    )
    if not clients or not any(k.startswith("metadata/sqlite/model/") for k in results.metrics):
        return []
    lines = [
        "| read | clients | floor req/s | SQLite req/s (x floor) | SQLite p99 | SQLite CPU/request "
        "| PostgreSQL req/s (x SQLite) | PostgreSQL p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in READ_ROWS:
        for c in clients:
            floor = results.median(f"metadata/floor/c{c}/rps")
            lite = results.median(f"metadata/sqlite/{key}/c{c}/rps")
            if lite is None:
                continue
            pg = results.median(f"metadata/postgresql/{key}/c{c}/rps")
            lines.append(
                f"| {label} | {c} | {_fmt(floor)} | {_fmt(lite)}{_ratio(lite, floor)} "
                f"| {_fmt(results.median(f'metadata/sqlite/{key}/c{c}/p99_ms'), 'ms')} "
                f"| {_fmt(results.median(f'metadata/sqlite/{key}/c{c}/cpu_ms'), 'ms')} "
                f"| {_fmt(pg)}{_ratio(pg, lite)} "
                f"| {_fmt(results.median(f'metadata/postgresql/{key}/c{c}/p99_ms'), 'ms')} |"
            )
    top = max(clients)
    processes = sorted(
        int(k.split("/")[2].removeprefix("workers"))
        for k in results.metrics
        if k.startswith("metadata/sqlite/workers") and k.endswith(f"/c{top}/rps")
    )
    if processes:
        one = results.median(f"metadata/sqlite/workers1/model/c{top}/rps")
        cells = []
        for n in processes:
            rate = results.median(f"metadata/sqlite/workers{n}/model/c{top}/rps")
            cells.append(f"{n}: {_fmt(rate)} req/s{_ratio(rate, one) if n != 1 else ''}")
        lines += ["", f"Model read at {top} clients, SQLite, by API processes: " + "; ".join(cells) + "."]
    return lines


def render(results: Results, wanted: Sequence[Target]) -> str:
    parts = ["### Targets (ratios of medians from this run)", "", *targets_table(results, wanted), ""]
    reads = reads_table(results)
    if reads:
        parts += ["### Metadata reads (issue 14)", "", *reads, ""]
    parts += ["### Measurements (medians over repeats)", "", *measurements_table(results), ""]
    if results.notes:
        parts += ["### Notes", "", *[f"- {n}" for n in results.notes], ""]
    if results.errors:
        parts += ["### Errors", "", *[f"- {e}" for e in results.errors], ""]
    return "\n".join(parts)


def write_json(results: Results, wanted: Sequence[Target], path: Path) -> None:
    rows: list[dict[str, Any]] = []
    for target in wanted:
        value, base, ratio, verdict = target.evaluate(results)
        rows.append(
            {
                **target.__dict__,
                "measured": value,
                "baseline_measured": base,
                "ratio": ratio,
                "verdict": verdict,
            }
        )
    payload = {
        "context": results.context,
        "targets": rows,
        "metrics": {key: metric.as_json() for key, metric in results.metrics.items()},
        "notes": results.notes,
        "errors": results.errors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
