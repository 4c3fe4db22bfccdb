"""Can a conversion worker run here? Checked before it starts, so it fails at once with a clear message
instead of looping on errors while jobs stay queued."""

from __future__ import annotations

import contextlib
import logging
import os
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10

log = logging.getLogger("weightvault.worker")


def wait_until_usable(settings: Settings) -> str | None:
    """``problem`` again each second for ``worker_start_timeout_seconds`` (a database or an API that
    migrates it may be starting alongside); None once usable, else the last reason."""
    deadline = time.monotonic() + settings.worker_start_timeout_seconds
    reason = problem(settings)
    if reason is not None and time.monotonic() < deadline:
        log.warning("waiting up to %.0f s: %s", settings.worker_start_timeout_seconds, reason)
    while reason is not None and time.monotonic() < deadline:
        time.sleep(1.0)
        reason = problem(settings)
    return reason


def problem(settings: Settings) -> str | None:
    """None when the database answers and has the jobs table and the data dir is writable; else why not."""
    url = make_url(settings.effective_database_url)
    shown = url.render_as_string(hide_password=True)
    connect_args: dict[str, object] = (
        {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if url.get_backend_name() == "postgresql" else {}
    )
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                conn.execute(text("SELECT 1 FROM jobs LIMIT 1"))
            except Exception:
                return (
                    f"the database {shown} has no jobs table; run 'weightvault db upgrade' "
                    "(or start 'weightvault serve' once) against it first"
                )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return f"cannot reach the database {shown} ({reason}); check WEIGHTVAULT_DATABASE_URL"
    finally:
        engine.dispose()
    data_dir = settings.data_dir
    with contextlib.suppress(OSError):
        data_dir.mkdir(parents=True, exist_ok=True)
    if not data_dir.is_dir() or not os.access(data_dir, os.W_OK | os.X_OK):
        return f"the data dir {data_dir.resolve()} is missing or not writable; check WEIGHTVAULT_DATA_DIR"
    return None
