"""Client-side commands against a server at --url ($WEIGHTVAULT_URL): push, pull, ls, show, convert, alias.

Exit codes, for scripts:
    0  done
    1  the server refused the request (4xx: invalid, not found, conflict, unauthorized ...) or failed (5xx),
       or a download did not match its checksum
    2  usage error (unknown option, bad ref, missing file, bad JSON in --config/--metadata)
    3  cannot connect to the server
    4  the ONNX conversion failed, or did not finish within --timeout

Wire them into a Typer app with ``register(cli)``; ``python -m weightvault.commands`` runs them alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from weightvault import (
    ApiError,
    Client,
    ConnectionFailed,
    ConversionFailed,
    InvalidRef,
    WeightvaultError,
    advice,
    parse_ref,
    render,
)
from weightvault.checksums import Verify
from weightvault.refs import check_name
from weightvault.transport import DEFAULT_URL

EXIT_REFUSED = 1
EXIT_CONNECT = 3
EXIT_CONVERSION = 4
EXIT_CODES = (
    "Exit codes: 0 done; 1 refused by the server (4xx, e.g. not found) or a server error, or a download that "
    "failed its checksum; 2 usage error; 3 cannot connect; 4 conversion failed or timed out."
)


class Verification(StrEnum):
    crc32 = "crc32"
    sha256 = "sha256"


class Kind(StrEnum):
    weights = "weights"
    full = "full"
    onnx = "onnx"
    hf = "hf"


class Format(StrEnum):
    safetensors = "safetensors"
    pt = "pt"
    onnx = "onnx"
    # the model folder (kind hf), unpacked
    hf = "hf"


UrlOption = Annotated[
    str, typer.Option("--url", envvar="WEIGHTVAULT_URL", help="Server URL.", show_default=True)
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="WEIGHTVAULT_TOKEN", help="Bearer token.", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, for scripts.")]
VerifyOption = Annotated[
    Verification,
    typer.Option(
        help="Check the download against the server's CRC-32 (fast) or its sha256 (about 1 s of CPU "
        "per GiB). sha256 is also used when the server sends no CRC."
    ),
]


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object, e.g. '{\"acc\": 0.98}'", param_hint=option)
    return value


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@contextmanager
def _session(
    url: str, token: str | None, as_json: bool, command: str = "", verify: Verify = "crc32"
) -> Iterator[Client]:
    """A Client; the client's errors become messages in the CLI's words and the documented exit codes."""
    # `weightvault` configures INFO logging for the server; one line per HTTP request is noise here.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with Client(url, token=token, verify=verify) as client:
            try:
                yield client
            except ApiError as exc:
                _fail(exc, as_json, _advice(client, exc, command))
    except InvalidRef as exc:
        raise typer.BadParameter(exc.message) from None
    except WeightvaultError as exc:
        _fail(exc, as_json)


def _advice(client: Client, error: ApiError, command: str) -> str:
    return f"{_explain(client, error, command)} ({error.status} {error.code})"


def _explain(client: Client, error: ApiError, command: str) -> str:
    return advice.explain(
        error,
        models=lambda: [model.name for model in client.list_models()],
        architectures=lambda: [str(arch.get("name")) for arch in client.list_architectures()],
        command=command,
    )


def _fail(exc: WeightvaultError, as_json: bool, message: str | None = None) -> None:
    if isinstance(exc, ConversionFailed):
        status, code = EXIT_CONVERSION, exc.code
    elif isinstance(exc, ConnectionFailed):
        status, code = EXIT_CONNECT, "connection_failed"
    elif isinstance(exc, ApiError):
        status, code = EXIT_REFUSED, exc.code
    else:
        status, code = EXIT_REFUSED, type(exc).__name__.lower()
    if as_json:
        details = exc.details if isinstance(exc, ApiError) else {}
        _print_json({"error": {"code": code, "message": exc.message, "details": details}})
    typer.echo(f"error: {message or exc}", err=True)
    raise typer.Exit(status)


def push(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            readable=True,
            help="Checkpoint file (torch.save or safetensors), or a save_pretrained folder.",
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    create: Annotated[bool, typer.Option(help="Create the model first if it does not exist.")] = False,
    architecture: Annotated[
        str | None,
        typer.Option(
            help="Architecture for --create (e.g. mlp); for a folder, registered from its config.json "
            "when missing (default: the model's name)."
        ),
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Architecture options for --create, a JSON object.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Model description for --create.")] = None,
    metadata: Annotated[
        str | None, typer.Option(help="Version metadata, a JSON object: '{\"acc\": 0.98}'.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Then point this alias at the new version.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a checkpoint as the model's next version."""
    if create and architecture is None and not (file / "config.json").is_file():
        hint = f"{file} has no config.json to register it from; " if file.is_dir() else ""
        raise typer.BadParameter(f"{hint}--create needs --architecture", param_hint="--architecture")
    options = _json_object(config, "--config")
    user_metadata = _json_object(metadata, "--metadata")
    with _session(url, token, as_json, "push") as client:
        version = client.push(
            check_name(model),
            file,
            metadata=user_metadata,
            create=create,
            architecture=architecture,
            config=options,
            description=description,
        )
        if alias is not None:
            client.set_alias(model, alias, version.version)
    if as_json:
        _print_json(version.raw)
    else:
        typer.echo(render.pushed_line(version) + (f", {alias} -> {version.version}" if alias else ""))


def pull(
    ref: Annotated[str, typer.Argument(help="mnist, mnist:3, mnist:latest or mnist@production.")],
    kind: Annotated[Kind, typer.Option(help="Which artifact.")] = Kind.weights,
    format: Annotated[
        Format | None,
        typer.Option(
            help="weights: safetensors (default) or pt; hf: the model folder, unpacked (from_pretrained "
            "reads it).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File or folder (default: the server's file name here)."),
    ] = None,
    verify: VerifyOption = Verification.crc32,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download an artifact; a second pull of the same one comes from the local cache."""
    with _session(url, token, as_json, verify=verify.value) as client:
        if kind == Kind.hf or format == Format.hf:
            pulled = client.pull_folder(ref, output=output)
        else:
            pulled = client.pull(
                ref, kind=kind.value, format=format.value if format else None, output=output or Path.cwd()
            )
    if as_json:
        _print_json(
            {
                "path": str(pulled.path),
                "sha256": pulled.sha256,
                "size": pulled.size,
                "filename": pulled.filename,
                "from_cache": pulled.from_cache,
                "resumed_from": pulled.resumed_from,
                "transferred": pulled.transferred,
                "verified_by": pulled.verified_by,
            }
        )
    else:
        typer.echo(render.pulled_line(pulled))


def ls(
    model: Annotated[str | None, typer.Argument(help="List this model's versions (else all models).")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List models, or one model's versions."""
    with _session(url, token, as_json) as client:
        if model is None:
            models = client.list_models()
            if as_json:
                _print_json([m.raw for m in models])
            else:
                render.print_all(render.models_table(models))
            return
        found = client.get_model(model)
        versions = client.list_versions(model)
    if as_json:
        _print_json([v.raw for v in versions])
    else:
        render.print_all(render.versions_table(found, versions))


def show(
    ref: Annotated[str, typer.Argument(help="A model (mnist) or a version (mnist:3, mnist@production).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a model, or one version with its artifacts."""
    with _session(url, token, as_json) as client:
        target = parse_ref(ref)
        if ":" not in ref and "@" not in ref:
            found = client.get_model(target.model)
            if as_json:
                _print_json(found.raw)
            else:
                render.print_all(render.model_details(found))
            return
        version = client.get_version(target)
        aliases = [a for a, n in client.get_model(target.model).aliases.items() if n == version.version]
    if as_json:
        _print_json(version.raw)
        return
    summary, artifacts = render.version_details(version, aliases)
    render.print_all(summary, "", artifacts)


def convert(
    ref: Annotated[str, typer.Argument(help="mnist, mnist:3 or mnist@production.")],
    wait: Annotated[bool, typer.Option(help="Wait until the conversion finished.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Then download the ONNX file here (implies --wait).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait at most (default: no limit).")
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the server's).")] = None,
    dynamic_batch: Annotated[bool, typer.Option(help="Allow any batch size in the exported graph.")] = True,
    atol: Annotated[float | None, typer.Option(help="Absolute tolerance of the onnxruntime check.")] = None,
    rtol: Annotated[float | None, typer.Option(help="Relative tolerance of the onnxruntime check.")] = None,
    verify: VerifyOption = Verification.crc32,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Convert a version to ONNX (checked against PyTorch with onnxruntime on the server)."""
    path = None
    with _session(url, token, as_json, verify=verify.value) as client:
        job = client.convert(ref, opset=opset, dynamic_batch=dynamic_batch, atol=atol, rtol=rtol)
        if wait or output is not None:
            job = client.wait(job, timeout=timeout)
        if output is not None and job.version is not None:
            path = client.pull_onnx(f"{job.model}:{job.version}", output=output)
    if as_json:
        _print_json({**job.raw, "path": str(path) if path else None})
        return
    typer.echo(render.job_line(job))
    if path is not None:
        typer.echo(f"saved {path}")


def alias_set(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias name (e.g. production).")],
    version: Annotated[str, typer.Argument(help="Version number (or latest, or another alias).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Point an alias at a version."""
    with _session(url, token, as_json) as client:
        found = client.set_alias(model, alias, version)
    if as_json:
        _print_json(found.raw)
    else:
        typer.echo(f"{model}@{alias} -> {model}:{found.aliases.get(alias)}")


def alias_rm(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove an alias (the version stays)."""
    with _session(url, token, as_json) as client:
        client.delete_alias(model, alias)
    if as_json:
        _print_json({"model": model, "alias": alias, "deleted": True})
    else:
        typer.echo(f"removed {model}@{alias}")


COMMAND_NAMES = ("push", "pull", "ls", "show", "convert", "alias")


def register(cli: typer.Typer) -> None:
    """Add push, pull, ls, show, convert and ``alias set|rm`` to ``cli``."""
    for command in (push, pull, ls, show, convert):
        cli.command(epilog=EXIT_CODES)(command)
    aliases = typer.Typer(
        help="Aliases: names such as production that point at a version.", no_args_is_help=True
    )
    aliases.command("set", epilog=EXIT_CODES)(alias_set)
    aliases.command("rm", epilog=EXIT_CODES)(alias_rm)
    cli.add_typer(aliases, name="alias")
