"""How the client commands print models, versions, pulls and jobs for people (``--json`` prints the raw JSON)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from weightvault import Job, Model, Pulled, Version

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def console() -> Console:
    """stdout; when it is not a terminal, wide enough that tables never wrap (one row, one line)."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


def print_all(*renderables: Any) -> None:
    """Print tables to stdout without the padding rich leaves at the end of each line."""
    import typer

    out = console()
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    typer.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def size(count: int | None) -> str:
    from rich.filesize import decimal

    return "-" if count is None else decimal(count)


def when(timestamp: str | None) -> str:
    """``2026-01-02T03:04:05.678+00:00`` as ``2026-01-02 03:04:05``."""
    return "-" if not timestamp else timestamp.replace("T", " ")[:19]


def compact(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(*columns: str, wrap: tuple[str, ...] = ()) -> Table:
    """A borderless table; only the ``wrap`` columns may wrap on a narrow terminal, the others never do."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(
            column, no_wrap=column not in wrap, overflow="fold" if column in wrap else "ellipsis"
        )
    return table


def models_table(models: list[Model]) -> Table:
    table = _table(
        "MODEL",
        "ARCHITECTURE",
        "LATEST",
        "ALIASES",
        "CREATED",
        "DESCRIPTION",
        wrap=("ALIASES", "DESCRIPTION"),
    )
    for model in models:
        aliases = ", ".join(f"{name}={number}" for name, number in sorted(model.aliases.items()))
        latest = str(model.latest_version) if model.latest_version is not None else "-"
        table.add_row(
            model.name,
            model.architecture,
            latest,
            aliases or "-",
            when(model.created_at),
            model.description or "",
        )
    return table


def versions_table(model: Model, versions: list[Version]) -> Table:
    by_version: dict[int, list[str]] = {}
    for alias, number in model.aliases.items():
        by_version.setdefault(number, []).append(alias)
    table = _table(
        "VERSION",
        "CREATED",
        "SIZE",
        "LAYOUT",
        "EPOCH",
        "ALIASES",
        "ARTIFACTS",
        "METADATA",
        wrap=("ALIASES", "METADATA"),
    )
    for version in versions:
        kinds = sorted({artifact.kind for artifact in version.artifacts})
        table.add_row(
            str(version.version),
            when(version.created_at),
            size(version.source.get("size")),
            str(version.source.get("layout", "-")),
            str(version.epoch) if version.epoch is not None else "-",
            ", ".join(sorted(by_version.get(version.version, []))) or "-",
            " ".join(kinds),
            compact(version.metadata, 40),
        )
    return table


def model_details(model: Model) -> Table:
    table = _table("", "value", wrap=("value",))
    table.show_header = False
    rows = {
        "model": model.name,
        "architecture": model.architecture,
        "config": compact(model.config, 200),
        "description": model.description or "-",
        "created": when(model.created_at),
        "latest version": str(model.latest_version) if model.latest_version is not None else "-",
        "aliases": ", ".join(f"{a}={n}" for a, n in sorted(model.aliases.items())) or "-",
    }
    for name, value in rows.items():
        table.add_row(name, value)
    return table


def version_details(version: Version, aliases: list[str]) -> tuple[Table, Table]:
    source, training = version.source, version.training
    summary = _table("", "value", wrap=("value",))
    summary.show_header = False
    rows = {
        "version": f"{version.model}:{version.version}",
        "created": when(version.created_at),
        "aliases": ", ".join(sorted(aliases)) or "-",
        "source": f"{source.get('filename') or '-'}, {size(source.get('size'))}, "
        f"{source.get('format', '-')}, {source.get('layout', '-')}",
        "source sha256": str(source.get("sha256", "-")),
        "training": ", ".join(
            f"{k} {'-' if training.get(k) is None else training.get(k)}"
            for k in ("epoch", "step", "optimizer")
        ),
        "metadata": compact(version.metadata, 200),
    }
    for name, value in rows.items():
        summary.add_row(name, value)
    artifacts = _table("KIND", "FORMAT", "SIZE", "SHA256", "FILE", wrap=("FILE",))
    for artifact in version.artifacts:
        artifacts.add_row(
            artifact.kind, artifact.format, size(artifact.size), artifact.sha256, artifact.filename or ""
        )
    return summary, artifacts


def pulled_line(pulled: Pulled) -> str:
    if pulled.from_cache:
        how = "from the cache, nothing transferred"
    elif pulled.resumed_from:
        how = f"resumed at {size(pulled.resumed_from)}"
    else:
        how = "downloaded"
    return f"{pulled.path} ({size(pulled.size)}, sha256 {pulled.sha256[:12]}, {how})"


def pushed_line(version: Version) -> str:
    source = version.source
    epoch = f", epoch {version.epoch}" if version.epoch is not None else ""
    return (
        f"pushed {version.model}:{version.version} ({size(source.get('size'))}, "
        f"{source.get('layout', '?')}{epoch}, sha256 {str(source.get('sha256', ''))[:12]})"
    )


def job_line(job: Job) -> str:
    where = f"{job.model}:{job.version}" if job.model else "?"
    line = f"onnx job {job.id} for {where}: {job.status}"
    if job.error:
        line += f" ({job.error.get('code')}: {job.error.get('message')})"
    if job.report and job.status == "succeeded":
        report = job.report
        line += f" (opset {report.get('opset')}, max abs diff {report.get('max_abs_diff')})"
        # What a deployer needs to feed the file: names, dtypes, symbolic dimensions, the shapes tried.
        for label in ("inputs", "outputs"):
            if report.get(label):
                line += f"\n  {label + ':':<9}" + ", ".join(_graph_value(v) for v in report[label])
        if report.get("checked"):
            tried = "; ".join(
                ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in check.items())
                for check in report["checked"]
            )
            line += f"\n  checked: {tried} (onnxruntime against PyTorch)"
    return line


def _graph_value(value: dict[str, Any]) -> str:
    shape = ", ".join("?" if dim is None else str(dim) for dim in value.get("shape") or [])
    return f"{value.get('name')} {value.get('dtype') or '?'} [{shape}]"
