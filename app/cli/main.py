"""`weightvault`: run the server and its workers, and administer them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app import __version__
from app.settings import Settings, default_api_workers, get_settings

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("weightvault")
cli = typer.Typer(help="weightvault: a model-artifact store for PyTorch.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens (shown once, stored as a hash).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(token_cli, name="token")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (WEIGHTVAULT_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (WEIGHTVAULT_PORT, 8000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="API processes (WEIGHTVAULT_API_WORKERS; default one per core, at most 8)."),
    ] = None,
    conversion_workers: Annotated[
        int | None,
        typer.Option(
            help="Conversion worker processes to supervise (WEIGHTVAULT_CONVERSION_WORKERS, 1); 0 for none."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API; migrates first and supervises conversion workers unless told not to."""
    import uvicorn

    from app.api.http_protocol import WeightvaultHttpProtocol
    from app.db.migrate import upgrade

    settings = get_settings()
    from app.architectures.registry import PluginNotFound, import_plugin

    for module_name in settings.architecture_modules:
        try:
            import_plugin(module_name)
        except PluginNotFound as exc:
            typer.echo(f"weightvault serve: cannot start: {exc}", err=True)
            raise typer.Exit(1) from None
    bind_host = host or settings.host
    bind_port = port or settings.port
    api_processes = workers or settings.api_workers or default_api_workers()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Migrate once here, so several API processes (and the workers) do not race to do it.
    upgrade(settings.effective_database_url)
    os.environ["WEIGHTVAULT_MIGRATE_ON_START"] = "false"
    if settings.auth is None:
        # Anyone who can reach a non-loopback address could otherwise write and delete models.
        os.environ["WEIGHTVAULT_AUTH"] = "on" if not _is_loopback(bind_host) else "off"
    if api_processes > 1:
        # uvicorn's API processes must not outlive serve (a kill -9 would leave them holding their staging
        # locks and the port): each asks the kernel to kill it with its parent (app.main).
        os.environ["WEIGHTVAULT_SERVE_PID"] = str(os.getpid())
        _prepare_multiprocess_metrics(settings.data_dir)
    count = settings.conversion_workers if conversion_workers is None else conversion_workers
    os.environ["WEIGHTVAULT_EXPECTED_CONVERSION_WORKERS"] = str(count)
    _log_start(settings, bind_host, bind_port, api_processes, count)
    # The app (in this process when there is one API process) must read the settings decided above.
    get_settings.cache_clear()
    supervisor = None
    if count > 0:
        # Exports run in their own processes: they can take minutes and GBs, and may crash.
        from app.jobs.supervisor import die_with_parent

        # uvicorn re-raises SIGTERM after its shutdown, so the `finally` below may not run: the kernel
        # then ends the supervisor with this process.
        supervisor = subprocess.Popen(
            [sys.executable, "-P", "-m", "app", "worker", "--processes", str(count)],
            preexec_fn=die_with_parent,
        )
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=api_processes,
            log_config=None,  # keep the handlers configure_logging installed
            access_log=False,  # our middleware logs each request with its request id
            loop="uvloop",
            # httptools with a header deadline and contract error bodies; the --workers processes
            # receive the class with the config.
            http=WeightvaultHttpProtocol,
            timeout_graceful_shutdown=30,
        )
    finally:
        if supervisor is not None:
            supervisor.terminate()
            try:
                supervisor.wait(timeout=20)
            except subprocess.TimeoutExpired:
                supervisor.kill()


@cli.command()
def worker(
    processes: Annotated[int, typer.Option(help="Worker processes to run and restart when they die.")] = 1,
    single: Annotated[bool, typer.Option(hidden=True, help="Run one worker in this process.")] = False,
    once: Annotated[bool, typer.Option(hidden=True, help="Run at most one job, then exit.")] = False,
) -> None:
    """Run conversion jobs from the shared database (several machines may run workers against one)."""
    from app.jobs.preflight import wait_until_usable

    settings = get_settings()
    reason = wait_until_usable(settings)
    if reason is not None:
        typer.echo(f"weightvault worker: cannot start: {reason}", err=True)
        raise typer.Exit(1)
    if not single and not once:
        from app.jobs.supervisor import supervise

        raise typer.Exit(supervise(processes, settings.data_dir))
    from app.jobs.worker import Worker
    from app.runtime import open_runtime

    runtime = open_runtime(settings, migrate=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        job_worker = Worker(runtime)
        job_worker.warm_up()
        if once:
            job_worker.run_once()
        else:
            job_worker.run_forever(stop)
    finally:
        runtime.close()


def _log_start(settings: Settings, host: str, port: int, api_processes: int, workers: int) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(settings.effective_database_url).render_as_string(hide_password=True)
    auth = os.environ.get("WEIGHTVAULT_AUTH", settings.auth or "off")
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "weightvault %s listening on http://%s:%d (data dir %s, database %s, auth %s, "
        "%d API process(es), %d conversion worker(s))",
        __version__,
        shown,
        port,
        settings.data_dir.resolve(),
        database,
        auth,
        api_processes,
        workers,
    )


def _prepare_multiprocess_metrics(data_dir: Path) -> None:
    """Several API processes share their counters through files (prometheus-client multiprocess mode)."""
    import shutil

    directory = data_dir / "metrics" / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _runtime() -> Runtime:
    from app.runtime import open_runtime

    return open_runtime(get_settings(), migrate=True)


@token_cli.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    name: Annotated[str | None, typer.Option(help="A note on who or what uses it.")] = None,
) -> None:
    """Create a token; it is printed once, alone on the last line."""
    from app.auth.service import SCOPES, create_token

    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {', '.join(SCOPES)}", param_hint="--scope")
    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            token, text = create_token(session=session, scope=scope, name=name)
        typer.echo(
            f"created token {token.public_id} with scope {scope}; store it now, it is not shown again:",
            err=True,
        )
        typer.echo(text)
    finally:
        runtime.close()


@token_cli.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from app.auth.service import list_tokens

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            for token in list_tokens(session=session):
                state = f"revoked {token.revoked_at.isoformat()}" if token.revoked_at else "active"
                typer.echo(
                    f"{token.public_id}\t{token.scope}\t{state}\t{token.created_at.isoformat()}\t{token.name or ''}"
                )
    finally:
        runtime.close()


@token_cli.command("revoke")
def token_revoke(public_id: Annotated[str, typer.Argument(help="The id shown by 'token list'.")]) -> None:
    """Revoke a token; requests with it get 401 from then on."""
    from app.auth.service import revoke_token

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            if not revoke_token(session=session, public_id=public_id):
                typer.echo(f"no active token {public_id}", err=True)
                raise typer.Exit(1)
        typer.echo(f"revoked {public_id}")
    finally:
        runtime.close()


@cli.command()
def fsck(
    quick: Annotated[bool, typer.Option(help="Skip re-hashing blob contents.")] = False,
) -> None:
    """Check every stored file against its sha256 and every row against its file; exit 1 on a problem
    (unreferenced files are listed, not problems: `gc` removes them)."""
    from app.maintenance.service import fsck as run_fsck

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            report = run_fsck(session=session, store=runtime.store, rehash=not quick)
    finally:
        runtime.close()
    for note in report.notes:
        typer.echo(f"note: {note}")
    for path in report.unreferenced_blobs:
        typer.echo(f"note: unreferenced blob: {path}")
    if report.unreferenced_blobs:
        # Deletes leave their blobs to gc, which keeps them for the grace period: not damage.
        typer.echo(
            f"note: {len(report.unreferenced_blobs)} unreferenced blob(s), {report.unreferenced_bytes} bytes; "
            "`weightvault gc` removes them once they are older than WEIGHTVAULT_GC_GRACE_SECONDS"
        )
    for problem in report.problems:
        typer.echo(f"problem: {problem}")
    typer.echo(
        f"checked {report.checked_rows} artifact rows and {report.checked_blobs} blobs: "
        + ("clean" if report.clean else f"{len(report.problems)} problem(s)")
    )
    raise typer.Exit(0 if report.clean else 1)


@cli.command()
def gc(
    grace_seconds: Annotated[
        float | None,
        typer.Option(
            help="Keep unreferenced blobs touched this recently (default WEIGHTVAULT_GC_GRACE_SECONDS)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be removed.")] = False,
) -> None:
    """Remove stored files that no version references any more (after deletes), and the bytes of
    resumable uploads past their expiry."""
    from app.maintenance.service import gc as run_gc
    from app.uploads.service import remove_expired

    runtime = _runtime()
    grace = runtime.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
    expired = 0
    try:
        with runtime.sessions() as session:
            report = run_gc(session=session, store=runtime.store, grace_seconds=grace, dry_run=dry_run)
            if not dry_run:
                expired = remove_expired(session=session, data_dir=runtime.settings.data_dir)
    finally:
        runtime.close()
    verb = "would remove" if dry_run else "removed"
    for name in report.removed:
        typer.echo(f"{verb} {name}")
    typer.echo(
        f"{verb} {len(report.removed)} blob(s), {report.freed_bytes} bytes; "
        f"kept {len(report.kept_recent)} recent unreferenced blob(s) (grace {grace:g} s)"
    )
    if expired:
        typer.echo(f"freed {expired} expired resumable upload(s)")


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply Alembic migrations to the configured database."""
    from app.db.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


def register(root: typer.Typer) -> None:
    """The ``weightvault.cli`` plugin: add the server's commands to the client's ``weightvault`` command."""
    from pydantic import ValidationError

    from app.ops.logs import configure_logging

    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
    except ValidationError:
        # A broken server .env must not stop client commands (push, pull ...); `serve` reports it itself.
        configure_logging()
    root.registered_commands.extend(cli.registered_commands)
    root.registered_groups.extend(cli.registered_groups)


def main() -> None:
    """``python -m app``: the server's commands alone (how serve starts its workers)."""
    root = typer.Typer(help="weightvault server commands.", no_args_is_help=True)
    register(root)
    root()
