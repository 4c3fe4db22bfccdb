"""ONNX conversion jobs through HTTP, run by the same Worker code the worker processes run."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient

from app.architectures.registry import load_registry
from app.jobs.worker import Worker
from app.main import create_app
from app.settings import Settings
from tests.checkpoints import SimpleModel, save
from tests.conftest import TEST_ARCHITECTURES, create_model, upload
from tests.fixtures.stored import store_as_whole_files


@pytest.fixture
def run_jobs(client: TestClient) -> Callable[[], int]:
    worker = Worker(client.app.state.runtime)  # type: ignore[attr-defined]

    def run() -> int:
        done = 0
        while worker.run_once():
            done += 1
        return done

    return run


def _push_module(
    client: TestClient, tmp_path: Path, name: str, architecture: str, module: torch.nn.Module
) -> None:
    create_model(client, name, architecture)
    response = upload(client, name, save(module.state_dict(), tmp_path / f"{name}.pt"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("architecture", ["simple-linear", "mlp", "cnn", "transformer-encoder"])
def test_each_architecture_converts_and_runs_at_any_batch_size(
    client: TestClient, tmp_path: Path, run_jobs: Callable[[], int], architecture: str
) -> None:
    arch = load_registry().get(architecture)
    config = arch.effective_config({})
    torch.manual_seed(0)
    module = SimpleModel() if architecture == "simple-linear" else arch.build(config)
    module.eval()
    _push_module(client, tmp_path, "m", architecture, module)

    submitted = client.post("/v1/models/m/versions/latest/onnx", json={})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] == "queued" and job["kind"] == "onnx"
    assert job["options"] == {"opset": 20, "dynamic_batch": True, "atol": 1e-4, "rtol": 1e-3}
    assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
    assert run_jobs() == 1

    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    report = done["report"]
    assert report["exporter"] == "dynamo" and report["opset"] == 20
    assert report["batch_sizes"] == [1, 7]
    assert report["max_abs_diff"] <= 1e-4 and report["onnxruntime"] == onnxruntime.__version__
    assert done["artifact"]["kind"] == "onnx" and done["started_at"] and done["finished_at"]

    download = client.get("/v1/models/m/versions/1/artifacts/onnx")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="m-v1.onnx"'
    crc = f"{zlib.crc32(download.content):08x}"
    assert download.headers["x-weightvault-crc32"] == crc == done["artifact"]["crc32"]
    proto = onnx.load_model_from_string(download.content)  # one self-contained file
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    session = onnxruntime.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    names = [spec.name for spec in arch.inputs(config)]
    for batch in (1, 3, 7):
        inputs = arch.example_inputs(config, batch_size=batch, seed=100 + batch)
        (got,) = session.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
        with torch.inference_mode():
            want = module(*inputs).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_same_effective_options_give_the_same_job(
    client: TestClient, tmp_path: Path, run_jobs: Callable[[], int]
) -> None:
    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    first = client.post("/v1/models/demo/versions/1/onnx")
    assert first.status_code == 202
    again = client.post(
        "/v1/models/demo/versions/latest/onnx", json={"opset": 20, "dynamic_batch": True, "atol": 0.0001}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    run_jobs()
    after = client.post("/v1/models/demo/versions/1/onnx", json={})
    assert after.status_code == 200 and after.json()["status"] == "succeeded"
    other = client.post("/v1/models/demo/versions/1/onnx", json={"dynamic_batch": False})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert run_jobs() == 1
    static = client.get(f"/v1/jobs/{other.json()['id']}").json()
    assert static["status"] == "succeeded" and static["report"]["batch_sizes"] == [1]
    listed = client.get("/v1/jobs", params={"model": "demo"}).json()["items"]
    assert [j["id"] for j in listed] == [first.json()["id"], other.json()["id"]]


def test_identical_weights_reuse_a_finished_conversion(
    client: TestClient, tmp_path: Path, run_jobs: Callable[[], int]
) -> None:
    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    first = client.post("/v1/models/demo/versions/1/onnx").json()
    run_jobs()
    assert upload(client, "demo", tmp_path / "demo.pt").json()["version"] == 2
    cached = client.post("/v1/models/demo/versions/2/onnx")
    assert cached.status_code == 202
    assert (
        cached.json()["status"] == "succeeded" and cached.json()["report"]["cached_from_job"] == first["id"]
    )
    assert run_jobs() == 0
    one = client.get("/v1/models/demo/versions/1/artifacts/onnx")
    two = client.get("/v1/models/demo/versions/2/artifacts/onnx")
    assert two.content == one.content
    assert (
        two.headers["x-weightvault-crc32"]
        == one.headers["x-weightvault-crc32"]
        == cached.json()["artifact"]["crc32"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"opset": 3}, "opset"),
        ({"atol": -1}, "atol"),
        ({"rtol": "x"}, "rtol"),
        ({"colour": "blue"}, "colour"),
        ([1], "body"),
    ],
)
def test_bad_options_are_refused(client: TestClient, tmp_path: Path, body: object, field: str) -> None:
    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    response = client.post("/v1/models/demo/versions/1/onnx", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/jobs").json()["items"] == []


def test_unknown_version_model_and_job(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/v1/models/ghost/versions/1/onnx").json()["error"]["code"] == "model_not_found"
    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    missing = client.post("/v1/models/demo/versions/9/onnx")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "version_not_found"
    job = client.get("/v1/jobs/0123456789abcdef")
    assert job.status_code == 404 and job.json()["error"]["code"] == "job_not_found"
    assert client.get("/v1/jobs", params={"status": "exploded"}).status_code == 422


@pytest.mark.parametrize(("architecture", "cause"), [("bessel", "bessel_j0"), ("branchy", "control flow")])
def test_unexportable_model_fails_with_a_named_cause(
    client: TestClient, tmp_path: Path, run_jobs: Callable[[], int], architecture: str, cause: str
) -> None:
    from tests.fixtures import architectures as fixtures

    module = {"bessel": fixtures.Bessel, "branchy": fixtures.Branchy}[architecture]()
    _push_module(client, tmp_path, "bad", architecture, module)
    job = client.post("/v1/models/bad/versions/1/onnx").json()
    run_jobs()
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "export_failed"
    assert cause in failed["error"]["message"]
    assert failed["artifact"] is None
    assert client.get("/v1/models/bad/versions/1/artifacts/onnx").status_code == 404
    assert client.get("/healthz").status_code == 200
    retried = client.post("/v1/models/bad/versions/1/onnx")
    assert retried.status_code == 202, "a failed job is not reused: asking again tries again"


def test_a_tolerance_too_tight_fails_without_an_artifact(
    client: TestClient, tmp_path: Path, run_jobs: Callable[[], int]
) -> None:
    arch = load_registry().get("transformer-encoder")
    torch.manual_seed(0)
    _push_module(client, tmp_path, "lm", "transformer-encoder", arch.build(arch.effective_config({})))
    job = client.post("/v1/models/lm/versions/1/onnx", json={"atol": 0, "rtol": 0}).json()
    run_jobs()
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "onnx_mismatch"
    assert "max abs diff" in failed["error"]["message"] and "atol=0" in failed["error"]["message"]
    assert failed["report"]["max_abs_diff"] > 0
    assert client.get("/v1/models/lm/versions/1/artifacts/onnx").status_code == 404
    statuses = {j["status"] for j in client.get("/v1/jobs", params={"status": "failed"}).json()["items"]}
    assert statuses == {"failed"}


def test_test_architectures_are_registered() -> None:
    assert {"bessel", "branchy", "sleepy"} <= {a.name for a in load_registry([TEST_ARCHITECTURES]).all()}


def test_a_job_whose_workers_keep_dying_fails_with_a_reason(client: TestClient, tmp_path: Path) -> None:
    import time

    from app.jobs import service
    from app.jobs.models import Job

    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    job_id = client.post("/v1/models/demo/versions/1/onnx").json()["id"]
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        session.query(Job).filter(Job.id == job_id).update({"max_attempts": 2})
        session.commit()
    for attempt in (1, 2):
        with runtime.sessions() as session:
            claimed = service.claim_next(session=session, worker_id=f"doomed-{attempt}", lease_seconds=0.2)
            assert claimed is not None and claimed.id == job_id and claimed.attempts == attempt
        time.sleep(0.3)  # the worker "dies": its lease lapses unrenewed
    with runtime.sessions() as session:
        assert service.claim_next(session=session, worker_id="survivor", lease_seconds=30) is None
    failed = client.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost"
    assert "2 times" in failed["error"]["message"]


def test_job_max_attempts_setting_limits_the_retries_of_a_lost_job(
    settings: Settings, tmp_path: Path
) -> None:
    import time

    from app.jobs import service
    from app.jobs.models import Job

    with TestClient(
        create_app(settings.model_copy(update={"job_max_attempts": 1})), raise_server_exceptions=False
    ) as client:
        _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
        job_id = client.post("/v1/models/demo/versions/1/onnx").json()["id"]
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with runtime.sessions() as session:
            assert session.query(Job).filter(Job.id == job_id).one().max_attempts == 1
            claimed = service.claim_next(session=session, worker_id="doomed", lease_seconds=0.2)
            assert claimed is not None and claimed.id == job_id
        time.sleep(0.3)  # the worker "dies": its lease lapses unrenewed
        with runtime.sessions() as session:
            assert service.claim_next(session=session, worker_id="survivor", lease_seconds=30) is None
        failed = client.get(f"/v1/jobs/{job_id}").json()
        assert failed["status"] == "failed" and failed["attempts"] == 1
        assert failed["error"]["code"] == "worker_lost"
        assert "WEIGHTVAULT_JOB_MAX_ATTEMPTS=1" in failed["error"]["message"]


def test_jobs_take_the_default_attempt_limit_from_the_settings(client: TestClient, tmp_path: Path) -> None:
    from app.jobs.models import Job

    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    job_id = client.post("/v1/models/demo/versions/1/onnx").json()["id"]
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        assert session.query(Job).filter(Job.id == job_id).one().max_attempts == Settings().job_max_attempts


def _skew(case: str) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """What PyTorch's outputs become, so that onnxruntime's (computed from the real export) differ."""

    def skew(outputs: list[np.ndarray]) -> list[np.ndarray]:
        first = outputs[0].copy()
        if case == "count":
            return [first, first]
        if case == "shape":
            return [first[..., None]]
        first.flat[0] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan, "far": first.flat[0] + 1e6}[case]
        return [first]

    return skew


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("count", "PyTorch returns 2 outputs, onnxruntime 1"),
        ("shape", "output 0 has shape"),
        ("inf", "NaN or infinite"),
        ("-inf", "NaN or infinite"),
        ("nan", "NaN or infinite"),
        ("far", "max abs diff 1e+06"),
    ],
)
def test_outputs_that_differ_fail_the_job_with_a_clear_message(
    client: TestClient,
    tmp_path: Path,
    run_jobs: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    says: str,
) -> None:
    """Recorded as a normal failure on both databases: the report holds no NaN or infinity (PostgreSQL
    refuses them), so the job is not left running and retried as if its worker had died."""
    import json

    from app.onnx import export

    _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
    flatten = export._flatten
    monkeypatch.setattr(export, "_flatten", lambda result: _skew(case)(flatten(result)))
    job = client.post("/v1/models/demo/versions/1/onnx").json()
    assert run_jobs() == 1
    failed = client.get(f"/v1/jobs/{job['id']}")
    assert failed.status_code == 200
    body = failed.json()
    assert body["status"] == "failed" and body["attempts"] == 1, body
    assert body["error"]["code"] == "onnx_mismatch"
    assert says in body["error"]["message"] and "at batch size" in body["error"]["message"]
    json.dumps(body["report"], allow_nan=False)  # every number finite
    measured = case in ("inf", "-inf", "nan", "far")
    assert (body["report"]["max_abs_diff"] is not None) == measured
    assert body["artifact"] is None
    assert client.get("/v1/models/demo/versions/1/artifacts/onnx").status_code == 404
    assert run_jobs() == 0, "a failed job is not claimed again"


def test_download_names_and_media_types_come_from_the_packaging_column(
    settings: Settings, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ONNX model past protobuf's limit is served as a zip; the artifacts.packaging column says so (not a
    key of the validation report), and migration 0006 fills it, and the jobs' snapshots, for older rows."""
    from alembic import command
    from sqlalchemy import JSON, column, create_engine, select, table, update

    from app.db.migrate import alembic_config
    from app.onnx import export

    def check(client: TestClient, job_id: str) -> None:
        onnx_file = client.get("/v1/models/demo/versions/1/artifacts/onnx")
        assert onnx_file.headers["content-disposition"] == 'attachment; filename="demo-v1.onnx.zip"'
        assert onnx_file.headers["content-type"] == "application/zip"
        weights = client.get("/v1/models/demo/versions/1/artifacts/weights")
        assert weights.headers["content-disposition"] == 'attachment; filename="demo-v1-weights.safetensors"'
        assert weights.headers["content-type"] == "application/octet-stream"
        assert client.get(f"/v1/jobs/{job_id}").json()["artifact"]["filename"] == "demo-v1.onnx.zip"
        listed = client.get("/v1/models/demo/versions/1").json()["artifacts"]
        assert {a["kind"]: a["filename"] for a in listed}["onnx"] == "demo-v1.onnx.zip"

    monkeypatch.setattr(export, "PROTOBUF_LIMIT", 0)  # a tiny model takes the >2 GB path
    artifacts = table("artifacts", column("kind"), column("validation", JSON()))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        _push_module(client, tmp_path, "demo", "simple-linear", SimpleModel())
        job_id = client.post("/v1/models/demo/versions/1/onnx").json()["id"]
        assert Worker(client.app.state.runtime).run_once()  # type: ignore[attr-defined]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
        check(client, job_id)
        # The report's own "packaging" key is only a report: changing it renames nothing.
        with client.app.state.runtime.sessions() as session:  # type: ignore[attr-defined]
            session.execute(update(artifacts).values(validation={"packaging": "onnx"}))
            session.commit()
        check(client, job_id)
        store_as_whole_files(client)  # recipe-backed artifacts cannot go back before 0008

    # Back to the schema before the column, with rows as the old code wrote them.
    command.downgrade(alembic_config(database_url), "0005")
    jobs = table("jobs", column("id"), column("artifact", JSON()))
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            update(artifacts).where(artifacts.c.kind == "onnx").values(validation={"packaging": "zip"})
        )
        snapshot = dict(conn.execute(select(jobs.c.artifact).where(jobs.c.id == job_id)).scalar_one())
        snapshot.pop("packaging")
        snapshot["validation"] = {"packaging": "zip"}
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(artifact=snapshot))
    engine.dispose()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # migrates to head
        check(client, job_id)
