"""The CLI's management commands: rm, search, meta set, jobs, arch and cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from weightvault import render
from weightvault.cache import Cache, default_cache_dir
from weightvault.commands import (
    EXIT_CODES,
    JsonOption,
    TokenOption,
    UrlOption,
    _json_object,
    _print_json,
    _session,
)
from weightvault.refs import check_name, parse_ref
from weightvault.transport import DEFAULT_URL


def rm(
    target: Annotated[str, typer.Argument(help="A model (mnist) or one version (mnist:3, mnist@staging).")],
    force: Annotated[
        bool, typer.Option("--force", help="Delete a version even if aliases point at it (they go too).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete a whole model without asking.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a version, or a model with all its versions (admin scope)."""
    whole_model = ":" not in target and "@" not in target
    if whole_model and not yes and not typer.confirm(f"Delete the model {target!r} and all its versions?"):
        raise typer.Exit(1)
    with _session(url, token, as_json, "rm") as client:
        if whole_model:
            client.delete_model(check_name(target))
        else:
            client.delete_version(parse_ref(target), force=force)
    if as_json:
        _print_json({"deleted": target})
    else:
        typer.echo(f"deleted {target}")


def search(
    query: Annotated[str | None, typer.Argument(help="Part of a model name.")] = None,
    architecture: Annotated[str | None, typer.Option(help="Only models of this architecture.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find models by name and architecture."""
    with _session(url, token, as_json, "search") as client:
        models = client.list_models(q=query, architecture=architecture)
    if as_json:
        _print_json([model.raw for model in models])
    elif not models:
        typer.echo("no model matches; list them all with `weightvault ls`")
    else:
        render.print_all(render.models_table(models))


def meta_set(
    target: Annotated[str, typer.Argument(help="A model (mnist) or one version (mnist:3).")],
    description: Annotated[str | None, typer.Option(help="The new description.")] = None,
    metadata: Annotated[
        str | None, typer.Option(help="The new metadata, a JSON object (replaces the old one).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change the description and/or metadata of a model or a version."""
    if description is None and metadata is None:
        raise typer.BadParameter("give --description and/or --metadata", param_hint="--metadata")
    values = _json_object(metadata, "--metadata")
    with _session(url, token, as_json, "meta") as client:
        if ":" in target or "@" in target:
            raw = client.update_version(parse_ref(target), description=description, metadata=values).raw
        else:
            raw = client.update_model(check_name(target), description=description, metadata=values).raw
    if as_json:
        _print_json(raw)
    else:
        typer.echo(f"updated {target}")


def jobs_ls(
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded or failed.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List conversion jobs."""
    with _session(url, token, as_json, "jobs") as client:
        jobs = client.list_jobs(model=model, status=status)
    if as_json:
        _print_json([job.raw for job in jobs])
    else:
        for job in jobs:
            typer.echo(render.job_line(job))
        if not jobs:
            typer.echo("no jobs")


def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one conversion job."""
    with _session(url, token, as_json, "jobs") as client:
        job = client.get_job(job_id)
    if as_json:
        _print_json(job.raw)
    else:
        typer.echo(render.job_line(job))


def arch_ls(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """List the architectures models can use: built in, from plugins and registered."""
    with _session(url, token, as_json, "arch") as client:
        architectures = client.list_architectures()
    if as_json:
        _print_json(architectures)
    else:
        for arch in architectures:
            typer.echo(f"{arch.get('name')}  {_origin(arch)}  {_count(arch)}: {arch.get('description', '')}")


def _origin(arch: dict[str, Any]) -> str:
    source = str(arch.get("source", "builtin"))
    return f"{source} ({arch['library']})" if arch.get("library") else source


def _count(arch: dict[str, Any]) -> str:
    parameters = arch.get("parameters")
    return f"{parameters:,} parameters" if isinstance(parameters, int) else "? parameters"


def arch_add(
    name: Annotated[str, typer.Argument(help="The new architecture's name (lowercase, e.g. my-bert).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="transformers: a config.json, or the save_pretrained folder holding it.",
            show_default=False,
        ),
    ] = None,
    library: Annotated[
        str | None,
        typer.Option(
            help="The library (default: transformers; others as the server allows).", show_default=False
        ),
    ] = None,
    factory: Annotated[
        str | None,
        typer.Option(
            help="Other libraries: the model constructor, e.g. models.resnet18.", show_default=False
        ),
    ] = None,
    kwargs: Annotated[
        str | None, typer.Option(help="The constructor's arguments, a JSON object.", show_default=False)
    ] = None,
    inputs: Annotated[
        str | None,
        typer.Option(
            help='Example inputs, a JSON list: \'[{"name": "x", "shape": ["batch", 10], "dtype": "float32"}]\'.',
            show_default=False,
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it is.", show_default=False)] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an architecture: from a transformers config.json, or a factory of an allowed library."""
    if config is None and factory is None:
        raise typer.BadParameter(
            "give --config ./config.json (transformers) or --library NAME --factory NAME",
            param_hint="--config",
        )
    arguments = _json_object(kwargs, "--kwargs")
    with _session(url, token, as_json, "arch") as client:
        arch = client.register_architecture(
            check_name(name),
            library=library or "transformers",
            config=_config_file(config) if config is not None else None,
            factory=factory,
            kwargs=arguments,
            description=description,
            inputs=_json_list(inputs, "--inputs"),
        )
    if as_json:
        _print_json(arch)
    else:
        typer.echo(f"registered {arch.get('name')}: {_origin(arch)}, {_count(arch)}")
        _print_inputs(arch)


def _config_file(path: Path) -> dict[str, Any]:
    file = path / "config.json" if path.is_dir() else path
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="--config") from None
    except ValueError as exc:
        raise typer.BadParameter(f"{file} is not JSON: {exc}", param_hint="--config") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{file} must hold a JSON object", param_hint="--config")
    return value


def _json_list(text: str | None, option: str) -> list[dict[str, Any]] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise typer.BadParameter("must be a JSON list of objects", param_hint=option)
    return value


def _print_inputs(arch: dict[str, Any]) -> None:
    for spec in arch.get("inputs", []):
        typer.echo(f"input {spec.get('name')}: shape {spec.get('shape')} {spec.get('dtype')}")


def arch_rm(
    name: Annotated[str, typer.Argument(help="A registered architecture that no model uses.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a registered architecture (admin scope); built-in and plugin ones cannot be deleted."""
    with _session(url, token, as_json, "arch") as client:
        client.delete_architecture(check_name(name))
    if as_json:
        _print_json({"deleted": name})
    else:
        typer.echo(f"deleted architecture {name}")


def arch_show(
    name: Annotated[str, typer.Argument(help="The architecture's name.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an architecture: its options and inputs."""
    with _session(url, token, as_json, "arch") as client:
        arch: dict[str, Any] = client.get_architecture(name)
    if as_json:
        _print_json(arch)
    else:
        typer.echo(f"{arch.get('name')}: {arch.get('description', '')}")
        typer.echo(f"source: {_origin(arch)}, {_count(arch)}")
        registration = arch.get("registration") or {}
        if registration.get("factory"):
            typer.echo(f"factory: {registration['factory']} {json.dumps(registration.get('kwargs') or {})}")
        if registration.get("config"):
            typer.echo(f"class: {(registration['config'].get('architectures') or ['?'])[0]}")
        else:
            typer.echo(f"default config: {json.dumps(arch.get('default_config', {}))}")
        _print_inputs(arch)


CacheOption = Annotated[
    Path | None, typer.Option("--cache", envvar="WEIGHTVAULT_CACHE", help="Cache folder.", show_default=False)
]


def cache_ls(cache: CacheOption = None, as_json: JsonOption = False) -> None:
    """List the downloads kept in the local cache."""
    entries = Cache(cache or default_cache_dir()).entries()
    if as_json:
        _print_json([vars(entry) for entry in entries])
        return
    for entry in entries:
        state = "" if entry.complete else " (interrupted; resumed by the next pull)"
        typer.echo(f"{entry.sha256[:12]}  {render.size(entry.size):>10}  {time.ctime(entry.used)}{state}")
    total = sum(entry.size for entry in entries)
    typer.echo(f"{len(entries)} file(s), {render.size(total)} in {cache or default_cache_dir()}")


def cache_prune(
    older_than_days: Annotated[
        float, typer.Option("--older-than", help="Only files unused for this many days (0: all).")
    ] = 0.0,
    cache: CacheOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove downloads from the local cache (files written with pull -o stay where they are)."""
    removed = Cache(cache or default_cache_dir()).prune(unused_for_seconds=older_than_days * 86400)
    freed = sum(entry.size for entry in removed)
    if as_json:
        _print_json({"removed": len(removed), "bytes": freed})
    else:
        typer.echo(f"removed {len(removed)} file(s), freed {render.size(freed)}")


COMMAND_NAMES = ("rm", "search", "meta", "jobs", "arch", "cache")


def register(cli: typer.Typer) -> None:
    """Add rm, search, meta, jobs, arch and cache to ``cli``."""
    for command in (rm, search):
        cli.command(epilog=EXIT_CODES)(command)
    groups: list[tuple[str, str, list[tuple[str, Any]]]] = [
        ("meta", "Descriptions and metadata.", [("set", meta_set)]),
        ("jobs", "ONNX conversion jobs.", [("ls", jobs_ls), ("show", jobs_show)]),
        (
            "arch",
            "Architectures on the server: list, show, register and delete.",
            [("ls", arch_ls), ("show", arch_show), ("add", arch_add), ("rm", arch_rm)],
        ),
        ("cache", "The local download cache.", [("ls", cache_ls), ("prune", cache_prune)]),
    ]
    for name, help_text, commands in groups:
        group = typer.Typer(help=help_text, no_args_is_help=True)
        for command_name, command in commands:
            group.command(command_name, epilog=EXIT_CODES)(command)
        cli.add_typer(group, name=name)
