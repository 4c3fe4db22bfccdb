"""The Python client: ``Client(url, token=...)`` for training scripts and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from weightvault import bundles, checkpoint, resumable
from weightvault.cache import Cache, default_cache_dir, place
from weightvault.checksums import Verify, checked_verify
from weightvault.download import Pulled, fetch
from weightvault.errors import Conflict, ConversionFailed, NotFound, WaitTimeout
from weightvault.folders import folder_config, unpack_hf_zip
from weightvault.progress import Reporter, auto_reporter
from weightvault.refs import Ref, check_name, parse_ref
from weightvault.resources import Job, Model, Version
from weightvault.transport import DEFAULT_CONNECT_RETRY, DEFAULT_TIMEOUT, DEFAULT_URL, Transport
from weightvault.upload import open_source, send

if TYPE_CHECKING:
    import torch
    from torch import nn

M = TypeVar("M", bound="nn.Module")
DEFAULT_FORMATS = {"full": "pt", "weights": "safetensors", "onnx": "onnx"}


class Client:
    """A weightvault server. ``url`` and ``token`` default to $WEIGHTVAULT_URL and $WEIGHTVAULT_TOKEN.

    Refs are ``"mnist"`` (latest), ``"mnist:3"``, ``"mnist:latest"`` or ``"mnist@production"``.
    Progress bars show when ``progress`` is true (default: when stderr is a terminal).
    Downloads are checked against the server's CRC-32 (``verify="crc32"``, a few percent of a sha256's
    CPU) or their sha256 (``verify="sha256"``, also used when the server sends no CRC).
    Errors are the typed exceptions of ``weightvault.errors``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_retry: float | None = None,
        progress: bool | Reporter | None = None,
        verify: Verify = "crc32",
    ) -> None:
        url = url or os.environ.get("WEIGHTVAULT_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("WEIGHTVAULT_TOKEN")
        if connect_retry is None:
            connect_retry = float(os.environ.get("WEIGHTVAULT_CONNECT_RETRY", DEFAULT_CONNECT_RETRY))
        self.transport = Transport(url, token=token, timeout=timeout, connect_retry=connect_retry)
        self.cache = Cache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
        self.verify: Verify = checked_verify(verify)
        self.reporter: Reporter = (
            auto_reporter(progress) if progress is None or isinstance(progress, bool) else progress
        )

    @property
    def url(self) -> str:
        return self.transport.base_url

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- models and versions ------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        architecture: str,
        *,
        config: dict[str, Any] | None = None,
        description: str | None = None,
        exist_ok: bool = False,
    ) -> Model:
        """Create a model; with ``exist_ok`` an existing one of that name is returned instead of Conflict."""
        body: dict[str, Any] = {"name": check_name(name), "architecture": architecture}
        if config is not None:
            body["config"] = config
        if description is not None:
            body["description"] = description
        try:
            return Model.from_json(self.transport.json("POST", "/v1/models", json=body))
        except Conflict:
            if not exist_ok:
                raise
            return self.get_model(name)

    def get_model(self, name: str) -> Model:
        return Model.from_json(self.transport.json("GET", f"/v1/models/{check_name(name)}"))

    def list_models(self, *, q: str | None = None, architecture: str | None = None) -> list[Model]:
        """All models, or those whose name contains ``q`` and/or with that architecture."""
        params = {name: value for name, value in (("q", q), ("architecture", architecture)) if value}
        return [Model.from_json(item) for item in self.transport.pages("/v1/models", params=params)]

    def update_model(
        self, name: str, *, description: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Model:
        """Change a model's description and/or replace its metadata."""
        body = _edits(description, metadata)
        return Model.from_json(self.transport.json("PATCH", f"/v1/models/{check_name(name)}", json=body))

    def update_version(
        self, ref: str | Ref, *, description: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Version:
        """Change a version's description and/or replace its metadata."""
        return Version.from_json(
            self.transport.json("PATCH", _ref(ref).path, json=_edits(description, metadata))
        )

    def delete_model(self, name: str) -> None:
        """Delete a model with all its versions (admin scope)."""
        self.transport.request("DELETE", f"/v1/models/{check_name(name)}")

    def delete_version(self, ref: str | Ref, *, force: bool = False) -> None:
        """Delete one version; Conflict (alias_in_use) when an alias points at it, unless ``force``."""
        self.transport.request("DELETE", _ref(ref).path, params={"force": "true"} if force else None)

    def list_architectures(self) -> list[dict[str, Any]]:
        return list(self.transport.pages("/v1/architectures"))

    def get_architecture(self, name: str) -> dict[str, Any]:
        return self.transport.json("GET", f"/v1/architectures/{name}")

    def register_architecture(
        self,
        name: str,
        *,
        library: str = "transformers",
        config: dict[str, Any] | None = None,
        factory: str | None = None,
        kwargs: dict[str, Any] | None = None,
        description: str | None = None,
        inputs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Register an architecture on the server (write scope): a transformers ``config`` (the dict in
        config.json), or an allowed library's ``factory`` with ``kwargs``; ``inputs`` declares the example
        inputs when the server cannot derive them. See docs/architectures.md."""
        body: dict[str, Any] = {"name": check_name(name), "library": library}
        for key, value in (
            ("config", config),
            ("factory", factory),
            ("kwargs", kwargs),
            ("description", description),
            ("inputs", inputs),
        ):
            if value is not None:
                body[key] = value
        return self.transport.json("POST", "/v1/architectures", json=body)

    def delete_architecture(self, name: str) -> None:
        """Delete a registered architecture no model uses (admin scope)."""
        self.transport.request("DELETE", f"/v1/architectures/{check_name(name)}")

    def list_jobs(self, *, model: str | None = None, status: str | None = None) -> list[Job]:
        params = {name: value for name, value in (("model", model), ("status", status)) if value}
        return [Job.from_json(item) for item in self.transport.pages("/v1/jobs", params=params)]

    def list_versions(self, model: str) -> list[Version]:
        path = f"/v1/models/{check_name(model)}/versions"
        return [Version.from_json(item) for item in self.transport.pages(path)]

    def get_version(self, ref: str | Ref) -> Version:
        return Version.from_json(self.transport.json("GET", _ref(ref).path))

    def set_alias(self, model: str, alias: str, version: int | str) -> Model:
        """Point ``alias`` at a version (a number, or a ref such as ``latest``)."""
        target: int | str = int(version) if isinstance(version, str) and version.isdigit() else version
        path = f"/v1/models/{check_name(model)}/aliases/{check_name(alias, 'alias')}"
        return Model.from_json(self.transport.json("PUT", path, json={"version": target}))

    def delete_alias(self, model: str, alias: str) -> None:
        self.transport.request(
            "DELETE", f"/v1/models/{check_name(model)}/aliases/{check_name(alias, 'alias')}"
        )

    # --- push ----------------------------------------------------------------------------------------------

    def push(
        self,
        model: str,
        source: str | os.PathLike[str] | Any,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        epoch: int | None = None,
        step: int | None = None,
        metadata: dict[str, Any] | None = None,
        create: bool = False,
        architecture: str | None = None,
        config: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> Version:
        """Upload a checkpoint as the model's next version and return it.

        ``source`` is a path, a binary file object, an ``nn.Module`` or a state_dict. With a module or
        state_dict, ``optimizer``/``scheduler``/``epoch``/``step`` make it a full training checkpoint.
        ``create=True`` with ``architecture`` (and ``config``) creates the model first if it does not exist.
        """
        check_name(model)
        folder = Path(source) if isinstance(source, str | os.PathLike) and Path(source).is_dir() else None
        if create and folder is not None:
            # A save_pretrained folder describes its own architecture: register it from config.json.
            architecture = architecture or model
            self._ensure_folder_architecture(architecture, folder)
        if create:
            if architecture is None:
                raise TypeError(
                    "create=True needs architecture= (e.g. 'mlp') for a model that does not exist."
                )
            existing = self.create_model(
                model, architecture, config=config, description=description, exist_ok=True
            )
            if existing.architecture != architecture:
                # Pushing into it would fail later with a key mismatch that hides the real mistake.
                raise Conflict(
                    409,
                    "architecture_differs",
                    f"The model '{model}' already exists with the architecture '{existing.architecture}', "
                    f"not '{architecture}'. Push without --create/--architecture to add a version to it, "
                    "or choose another model name.",
                    {"model": model, "architecture": existing.architecture, "asked": architecture},
                )
        params = {"metadata": json.dumps(metadata, allow_nan=False)} if metadata else {}
        with open_source(source, optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=step) as upload:
            data = None
            if upload.size >= resumable.threshold():
                # Large files go through the resumable endpoint: a cut connection costs only the bytes
                # in flight, and the same push run again resumes.
                data = resumable.send_resumable(
                    self.transport,
                    model=model,
                    upload=upload,
                    metadata=metadata,
                    reporter=self.reporter,
                    state_dir=self.cache.root / "uploads",
                )
            if data is None:
                data = send(self.transport, model=model, upload=upload, params=params, reporter=self.reporter)
        return Version.from_json(data)

    def _ensure_folder_architecture(self, name: str, folder: Path) -> None:
        try:
            self.get_architecture(name)
            return
        except NotFound:
            pass
        config = folder_config(folder)
        if config is None:
            raise FileNotFoundError(
                f"{folder} has no config.json to register the architecture '{name}' from; "
                "name an existing architecture with --architecture."
            )
        self.register_architecture(name, library="transformers", config=config)

    # --- pull and load -------------------------------------------------------------------------------------

    def pull(
        self,
        ref: str | Ref,
        *,
        kind: str = "weights",
        format: str | None = None,
        output: str | os.PathLike[str] | None = None,
    ) -> Pulled:
        """Download an artifact into the cache (free when already cached) and copy it to ``output``.

        ``output`` may be a directory (the server's file name is used inside it). Without ``output`` the
        returned path is the cached blob: read it, do not modify it.
        """
        target = _ref(ref)
        fmt = format or DEFAULT_FORMATS.get(kind)
        params = {"format": fmt} if fmt else {}
        key = Cache.key(self.url, target.model, target.ref, kind, fmt or "")
        fetched = fetch(
            self.transport,
            f"{target.path}/artifacts/{kind}",
            params=params,
            cache=self.cache,
            key=key,
            reporter=self.reporter,
            verify=self.verify,
        )
        if output is None:
            return fetched
        dest = Path(output)
        if dest.is_dir():
            dest = dest / (fetched.filename or f"{target.model}-{kind}.{fmt}")
        return dataclasses.replace(fetched, path=place(fetched.path, dest))

    def pull_folder(self, ref: str | Ref, *, output: str | os.PathLike[str] | None = None) -> Pulled:
        """The version as a model folder (the ``hf`` artifact) unpacked into ``output`` (default
        ``./<model>-v<version>-hf``), ready for ``from_pretrained(output)``."""
        pulled = self.pull(ref, kind="hf", format="zip")
        name = (pulled.filename or f"{_ref(ref).model}-hf.zip").removesuffix(".zip")
        dest = Path(output) if output is not None else Path.cwd() / name
        return dataclasses.replace(pulled, path=unpack_hf_zip(pulled.path, dest))

    def load_weights(
        self, ref: str | Ref, *, format: str = "safetensors", device: str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """The version's state_dict (tied weights come back tied)."""
        pulled = self.pull(ref, kind="weights", format=format)
        return checkpoint.read_weights(pulled.path, format, device=device)

    def load_into(self, module: M, ref: str | Ref, *, strict: bool = True) -> M:
        """Load the version's weights into ``module`` (strict by default) and return it."""
        module.load_state_dict(self.load_weights(ref), strict=strict)
        return module

    def load_checkpoint(self, ref: str | Ref, *, device: str = "cpu") -> dict[str, Any]:
        """The version's full training checkpoint (``model_state_dict``, ``optimizer_state_dict``, ``epoch`` ...)."""
        return checkpoint.read_checkpoint(self.pull(ref, kind="full").path, device=device)

    def resume(
        self,
        ref: str | Ref,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        scheduler: Any = None,
    ) -> int | None:
        """Restore model (strict), optimizer and scheduler from the version's full checkpoint; its epoch."""
        return checkpoint.restore(self.load_checkpoint(ref), model, optimizer, scheduler)

    # --- ONNX ----------------------------------------------------------------------------------------------

    def convert(
        self,
        ref: str | Ref,
        *,
        opset: int | None = None,
        dynamic_batch: bool | None = None,
        atol: float | None = None,
        rtol: float | None = None,
    ) -> Job:
        """Ask for an ONNX conversion; the job (an existing one when the same options were asked before)."""
        options = {"opset": opset, "dynamic_batch": dynamic_batch, "atol": atol, "rtol": rtol}
        body = {name: value for name, value in options.items() if value is not None}
        return Job.from_json(self.transport.json("POST", f"{_ref(ref).path}/onnx", json=body))

    def get_job(self, job_id: str) -> Job:
        return Job.from_json(self.transport.json("GET", f"/v1/jobs/{job_id}"))

    def wait(self, job: Job | str, *, timeout: float | None = None, poll: float = 1.0) -> Job:
        """Poll until the job finished; ConversionFailed if it failed, WaitTimeout after ``timeout`` seconds."""
        current = job if isinstance(job, Job) else self.get_job(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.2
        with self.reporter.task(_job_text(current), total=None, unit="wait") as task:
            while not current.finished:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"The conversion was still {current.status} after {timeout:g}s.",
                        code="wait_timeout",
                        job_id=current.id,
                    )
                time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 1.5, poll)
                current = self.get_job(current.id)
                task.describe(_job_text(current))
        if current.status == "failed":
            error = current.error or {}
            raise ConversionFailed(
                str(error.get("message") or "The conversion failed."),
                code=str(error.get("code") or "conversion_failed"),
                job_id=current.id,
            )
        return current

    @overload
    def to_onnx(
        self,
        ref: str | Ref,
        *,
        wait: Literal[True] = True,
        output: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Path: ...

    @overload
    def to_onnx(
        self,
        ref: str | Ref,
        *,
        wait: Literal[False],
        output: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Job: ...

    def to_onnx(
        self,
        ref: str | Ref,
        *,
        wait: bool = True,
        output: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Path | Job:
        """Convert the version to ONNX. ``wait=True``: wait, download, and return the local path of the model
        (``output``, else in the cache; see ``pull_onnx``); ``wait=False``: return the job at once.
        ``options`` are ``opset``, ``dynamic_batch``, ``atol`` and ``rtol``; ConversionFailed if it failed."""
        job = self.convert(ref, **options)
        if not wait:
            return job
        job = self.wait(job, timeout=timeout)
        target = _ref(ref)
        # Download the converted version by number: an alias may have moved meanwhile.
        numbered = Ref(target.model, str(job.version)) if job.version is not None else target
        return self.pull_onnx(numbered, output=output)

    def pull_onnx(self, ref: str | Ref, *, output: str | os.PathLike[str] | None = None) -> Path:
        """The local path of the version's ONNX model (``output``, else in the cache), ready for onnxruntime.

        Models past protobuf's 2 GB limit are served as a zip of the model and its external data; they are
        extracted, the data files next to the model under the names it refers to.
        """
        pulled = self.pull(ref, kind="onnx")
        dest = None
        if output is not None:
            dest = Path(output)
            if dest.is_dir():
                dest = dest / (pulled.filename or f"{_ref(ref).model}.onnx").removesuffix(".zip")
        return bundles.local_model(pulled.path, extracted=self.cache.extracted(pulled.sha256), output=dest)


def _ref(ref: str | Ref) -> Ref:
    return ref if isinstance(ref, Ref) else parse_ref(ref)


def _job_text(job: Job) -> str:
    where = f"{job.model}:{job.version}" if job.model else job.id
    return f"onnx {where}: {job.status}"


def _edits(description: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if metadata is not None:
        body["metadata"] = metadata
    return body
