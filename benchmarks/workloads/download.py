"""Workload 2: download of the weights artifact (safetensors) against nginx serving the very same blob file.

nginx: Debian's package, one worker, sendfile on, loopback. Both are read from the page cache (one
untimed GET each first); the client reads and discards the body. Repeats alternate the two servers.
"""

from __future__ import annotations

from benchmarks import rawhttp, servers
from benchmarks.context import Context, blob_path, create_model, expect, say, settle
from benchmarks.data import size_key, size_label
from benchmarks.memory import MemorySampler

MiB = 1024**2


def run(ctx: Context) -> None:
    if servers.nginx_binary() is None:
        ctx.results.error("download: nginx is not installed (apt-get install -y nginx-light); skipped")
        return
    size = ctx.download_size
    key, label = size_key(size), size_label(size)
    file, config = ctx.inputs.sized(size)
    model = f"download-{key.lower()}"
    add = ctx.results.add
    with servers.weightvault(ctx.tmp, tag=f"download-{key}") as wv:
        create_model(wv, model, "mlp", config)
        version = expect(
            rawhttp.upload_raw(wv.url, f"/v1/models/{model}/versions", file), 201, "upload"
        ).json()
        weights = next(
            a for a in version["artifacts"] if a["kind"] == "weights" and a["format"] == "safetensors"
        )
        blob = blob_path(wv, weights["sha256"])
        service_path = (
            f"/v1/models/{model}/versions/{version['version']}/artifacts/weights?format=safetensors"
        )
        with servers.nginx(ctx.tmp, blob.parent) as ng:
            nginx_path = f"/{blob.name}"
            for url, path in ((wv.url, service_path), (ng.url, nginx_path)):
                expect(rawhttp.download(url, path), 200, "warm-up download")
            for repeat in range(ctx.repeats):
                say(f"download {label}: repeat {repeat + 1}/{ctx.repeats}")
                settle()
                with MemorySampler(wv.pid) as sampler:
                    reply = expect(rawhttp.download(wv.url, service_path), 200, "weightvault download")
                assert sampler.peak is not None
                add(
                    f"download/{key}/service/seconds",
                    reply.seconds,
                    unit="s",
                    label=f"download {label}: weightvault GET weights (safetensors)",
                )
                add(
                    f"download/{key}/service/rss_growth_mib",
                    sampler.peak.rss_growth / MiB,
                    unit="MiB",
                    label=f"download {label}: weightvault VmRSS growth",
                )
                add(
                    f"download/{key}/service/anon_growth_mib",
                    sampler.peak.anon_growth / MiB,
                    unit="MiB",
                    label=f"download {label}: weightvault RssAnon growth",
                )
                settle()
                reply = expect(rawhttp.download(ng.url, nginx_path), 200, "nginx download")
                add(
                    f"download/{key}/nginx/seconds",
                    reply.seconds,
                    unit="s",
                    label=f"download {label}: nginx sendfile GET of the same file",
                )
