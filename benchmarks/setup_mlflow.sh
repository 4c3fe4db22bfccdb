#!/usr/bin/env bash
# Install the MLflow tracking server into its own venv (benchmarks/.venv-mlflow), never into the project's.
# Idempotent: a venv that already imports the wanted version is left alone.
# MLFLOW_VERSION=... overrides the pin; if that exact version is not on the index, pip's newest is used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${MLFLOW_VENV:-$here/.venv-mlflow}"
want="${MLFLOW_VERSION:-3.17.2}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/mlflow" ] && have="$("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null)"; then
  if [ "$have" = "$want" ]; then
    echo "mlflow $have already installed in $venv"
    exit 0
  fi
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -m pip install -q "mlflow==$want"; then
  echo "mlflow==$want is not installable here; installing the newest mlflow pip resolves" >&2
  "$venv/bin/python" -m pip install -q mlflow
fi
"$venv/bin/python" -c 'import mlflow; print("mlflow", mlflow.__version__, "installed in", __import__("sys").prefix)'
