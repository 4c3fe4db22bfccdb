"""The Dockerfile and compose file agree with the settings the app reads (no engine here to build them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV = {f"WEIGHTVAULT_{name.upper()}" for name in Settings.model_fields}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_names_the_team_services_volumes_and_health_checks() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "migrate", "api", "worker"} <= set(services)
    assert {"pgdata", "data"} <= set(compose["volumes"])
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["api"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["deploy"]["replicas"] == 2
    assert "container_name" not in services["worker"], "a fixed name would stop --scale worker=N"
    for name in ("migrate", "api", "worker"):
        assert "data:/var/lib/weightvault" in services[name]["volumes"], f"{name} must share the data volume"
    assert services["api"]["command"][:2] == ["weightvault", "serve"]
    assert services["worker"]["command"][:2] == ["weightvault", "worker"]


def test_compose_environment_only_uses_settings_the_app_reads() -> None:
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.startswith("WEIGHTVAULT_"):
                assert key in SETTINGS_ENV, f"{name} sets {key}, which the app does not read"
                Settings.model_validate({key.removeprefix("WEIGHTVAULT_").lower(): value})
    api_env = _compose()["services"]["api"]["environment"]
    assert api_env["WEIGHTVAULT_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile_runs_as_non_root_with_a_health_check_and_a_data_volume() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/var/lib/weightvault"]' in text
    assert "torch==2.13.0" in text and "download.pytorch.org/whl/cpu" in text
    for key in re.findall(r"(WEIGHTVAULT_[A-Z_]+)=", text):
        assert key in SETTINGS_ENV, f"the Dockerfile sets {key}, which the app does not read"


def test_dockerfile_copies_every_local_distribution_the_server_depends_on() -> None:
    """pip resolves ``name @ {root:uri}/path`` against the build context: the path must be in the image."""
    text = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    local = re.findall(r"@ \{root:uri\}/([\w./-]+)", pyproject)
    assert local == ["client"]
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    for path in local:
        assert path in copied, f"the Dockerfile does not copy {path}/, which pip install . needs"
        assert (ROOT / path / "pyproject.toml").is_file()
