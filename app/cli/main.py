"""`weightvault`: run the server and its workers, and administer them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

from app.settings import get_settings

cli = typer.Typer(help="weightvault: a model-artifact store for PyTorch.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
    conversion_workers: Annotated[
        int | None,
        typer.Option(
            help="Conversion worker processes to supervise (default WEIGHTVAULT_CONVERSION_WORKERS, 1); 0 for none."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the HTTP API; migrates first and supervises conversion workers unless told not to."""
    import uvicorn

    from app.db.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Migrate once here, so several API processes (and the workers) do not race to do it.
    upgrade(settings.effective_database_url)
    os.environ["WEIGHTVAULT_MIGRATE_ON_START"] = "false"
    count = settings.conversion_workers if conversion_workers is None else conversion_workers
    supervisor = None
    if count > 0:
        # Exports run in their own processes: they can take minutes and GBs, and may crash.
        supervisor = subprocess.Popen([sys.executable, "-m", "app", "worker", "--processes", str(count)])
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            loop="uvloop",
            http="httptools",
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
    if not single and not once:
        from app.jobs.supervisor import supervise

        raise typer.Exit(supervise(processes))
    from app.jobs.worker import Worker
    from app.runtime import open_runtime

    runtime = open_runtime(get_settings(), migrate=False)
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


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply Alembic migrations to the configured database."""
    from app.db.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli()
