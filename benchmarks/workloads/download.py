"""Workload 2: download of each composed format against nginx's sendfile of a plain file of the same size.

Every download is composed from tensor blobs and small pieces (a recipe), so there is no one file to
hand nginx: it serves a plain file of the download's size, written for it. Formats: ``full`` (.pt),
``weights`` (.safetensors and .pt) of the download-size mlp state_dict, and, when transformers is
installed, the ``hf`` zip of a GPT-2 of about that size. nginx: Debian's package, one worker, sendfile
on, loopback. Both are read from the page cache (one untimed GET each first); the client reads and
discards the body. Repeats alternate the two servers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from benchmarks import rawhttp, servers
from benchmarks.context import Context, create_model, expect, run_child, say, settle
from benchmarks.data import size_key, size_label
from benchmarks.memory import MemorySampler
from benchmarks.servers import Running

MiB = 1024**2
FORMATS = (("full", "pt"), ("weights", "safetensors"), ("weights", "pt"))
_FILL = 4 * MiB


def run(ctx: Context) -> None:
    if servers.nginx_binary() is None:
        ctx.results.error("download: nginx is not installed (apt-get install -y nginx-light); skipped")
        return
    size = ctx.download_size
    key = size_key(size)
    file, config = ctx.inputs.sized(size)
    model = f"download-{key.lower()}"
    plain = ctx.tmp / "download-plain"
    plain.mkdir(exist_ok=True)
    with servers.weightvault(ctx.tmp, tag=f"download-{key}") as wv, servers.nginx(ctx.tmp, plain) as ng:
        create_model(wv, model, "mlp", config)
        version = expect(
            rawhttp.upload_raw(wv.url, f"/v1/models/{model}/versions", file), 201, "upload"
        ).json()
        for kind, fmt in FORMATS:
            _compare(ctx, wv, ng, plain, model, version, kind, fmt)
        if importlib.util.find_spec("transformers") is None:
            ctx.results.error("download: transformers is not installed; the hf zip row is skipped")
            return
        hf_version = _push_transformers_model(ctx, wv, size)
        _compare(ctx, wv, ng, plain, "download-hf", hf_version, "hf", "zip")


def _push_transformers_model(ctx: Context, wv: Running, size: int) -> dict[str, object]:
    path = ctx.tmp / "inputs" / f"gpt2-{size_key(size)}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"making a GPT-2 of about {size_label(size)}")
    out = run_child(
        [sys.executable, "-m", "benchmarks.hf_input", str(size), str(path)], timeout=1800, cwd=ctx.tmp
    )
    config = json.loads(out.strip().splitlines()[-1])
    payload = {"name": "download-gpt2", "library": "transformers", "config": config}
    expect(rawhttp.json_request(wv.url, "POST", "/v1/architectures", payload), 201, "register GPT-2")
    payload = {"name": "download-hf", "architecture": "download-gpt2"}
    expect(rawhttp.json_request(wv.url, "POST", "/v1/models", payload), 201, "create model download-hf")
    say("pushing the GPT-2 (ingest proves full, weights and hf)")
    version: dict[str, object] = expect(
        rawhttp.upload_raw(wv.url, "/v1/models/download-hf/versions", path), 201, "upload GPT-2"
    ).json()
    ctx.inputs.drop(path)
    return version


def _compare(
    ctx: Context,
    wv: Running,
    ng: Running,
    plain: Path,
    model: str,
    version: dict[str, object],
    kind: str,
    fmt: str,
) -> None:
    artifacts = version["artifacts"]
    assert isinstance(artifacts, list)
    artifact = next(a for a in artifacts if a["kind"] == kind and a["format"] == fmt)
    size = int(artifact["size"])
    label, name = size_label(size), f"{kind}.{fmt}"
    key = f"download/{size_key(ctx.download_size)}/{kind}_{fmt}"
    service_path = f"/v1/models/{model}/versions/{version['version']}/artifacts/{kind}?format={fmt}"
    target = plain / name
    _write_plain(target, size)
    nginx_path = f"/{name}"
    try:
        for url, path in ((wv.url, service_path), (ng.url, nginx_path)):
            expect(rawhttp.download(url, path), 200, "warm-up download")
        add = ctx.results.add
        for repeat in range(ctx.repeats):
            say(f"download {name} ({label}): repeat {repeat + 1}/{ctx.repeats}")
            settle()
            with MemorySampler(wv.pid) as sampler:
                reply = expect(rawhttp.download(wv.url, service_path), 200, f"weightvault download {name}")
            assert sampler.peak is not None
            add(
                f"{key}/service/seconds",
                reply.seconds,
                unit="s",
                label=f"download {name} ({label}): weightvault GET, composed from tensor blobs",
            )
            add(
                f"{key}/service/anon_growth_mib",
                sampler.peak.anon_growth / MiB,
                unit="MiB",
                label=f"download {name} ({label}): weightvault RssAnon growth",
            )
            settle()
            reply = expect(rawhttp.download(ng.url, nginx_path), 200, f"nginx download {name}")
            add(
                f"{key}/nginx/seconds",
                reply.seconds,
                unit="s",
                label=f"download {name} ({label}): nginx sendfile GET of a plain file of the same size",
            )
    finally:
        target.unlink(missing_ok=True)


def _write_plain(target: Path, size: int) -> None:
    """A real (not sparse) file of ``size`` bytes, on disk before it is served."""
    chunk = os.urandom(_FILL)
    with target.open("wb") as handle:
        remaining = size
        while remaining:
            remaining -= handle.write(chunk[: min(remaining, _FILL)])
        handle.flush()
        os.fsync(handle.fileno())
