# syntax=docker/dockerfile:1
# weightvault: CPU PyTorch, non-root, data dir as a volume, migrations applied by `serve` before it listens.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU build of torch from PyTorch's CPU index, pinned as constraints.txt pins it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md constraints.txt alembic.ini ./
COPY alembic ./alembic
COPY app ./app
# The client distribution the server depends on (pyproject: weightvault-client @ {root:uri}/client).
COPY client ./client
RUN pip install -c constraints.txt '.[transformers]'

FROM python:3.11-slim AS runtime
# procps: pgrep for the worker's health check
RUN apt-get update && apt-get install -y --no-install-recommends procps && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/weightvault weightvault \
 && mkdir -p /var/lib/weightvault && chown weightvault /var/lib/weightvault
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WEIGHTVAULT_DATA_DIR=/var/lib/weightvault \
    WEIGHTVAULT_HOST=0.0.0.0 \
    WEIGHTVAULT_PORT=8000 \
    WEIGHTVAULT_API_WORKERS=2 \
    WEIGHTVAULT_LOG_JSON=true
USER weightvault
WORKDIR /var/lib/weightvault
VOLUME ["/var/lib/weightvault"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEIGHTVAULT_PORT', '8000'), timeout=2)"
# `serve` applies migrations, then starts WEIGHTVAULT_API_WORKERS API processes and supervised conversion workers.
CMD ["weightvault", "serve"]
