"""Logging: JSON lines when not on a terminal, a request id on every line of a request."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({})))


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        return True


_ENCODER = json.JSONEncoder(default=str)  # json.dumps(..., default=str) builds one per call


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # (whole second, its ISO text): an access line per request, a few hundred per second.
        self._second: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``, its rounding included."""
        second = int(created)
        micros = round((created - second) * 1_000_000)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if self._second[0] != second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            self._second = (second, text[:-6])  # without "+00:00"
        return f"{self._second[1]}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and value is not None and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={v}" for k in ("request_id", "job_id") if (v := getattr(record, k, None)))
        return f"{line} [{context}]" if context else line


QUIET_LOGGERS = (
    "alembic",
    "uvicorn.error",
    "onnx_ir",
    "onnxscript",
    "torch._dynamo",
    "torch.export",
)


def configure_logging(level: str = "INFO", json_lines: bool | None = None) -> None:
    """Route every logger (uvicorn's included) through one handler on stderr."""
    use_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter() if use_json else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # RequestContextMiddleware logs every request with its id. uvicorn's own access line (off in `serve`,
    # but back on in each API process of `--workers N`, which call this after uvicorn configured them)
    # would log each request twice: a fifth of a fast read's time.
    logging.getLogger("uvicorn.access").disabled = True
    # Libraries' start-up chatter (alembic's plugin list, uvicorn's lifecycle lines, the ONNX exporter's
    # passes) says nothing an operator acts on; serve logs its own summary instead. Warnings still show.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
