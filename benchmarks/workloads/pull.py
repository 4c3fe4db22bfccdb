"""Workload: the client's download (``weightvault pull -o``) against curl fetching the same URL to a file.

One weightvault server (``python -m app serve``) holds an ``mlp`` of the download size; its weights
artifact (safetensors) is fetched, per repeat and in this order, by:

- curl: ``curl -s -o FILE URL``, a fresh process, timed from its start to its exit;
- curl then ``sha256sum FILE``: the same download checked by hand against the published sha256, which
  is what ``weightvault pull`` does for every download (shown for context; the target is against curl);
- the CLI: ``weightvault pull MODEL -o FILE`` with an empty cache (``WEIGHTVAULT_CACHE`` a fresh
  folder), a fresh process timed the same way: interpreter start, imports, the request, the transfer,
  the CRC-32 check, the fsync, the rename into the cache and the hard link to FILE;
- the same with ``--verify sha256`` (the check before the server sent CRCs), in the same minutes;
- ``Client.pull(..., output=FILE)`` in a child process with an empty cache, timing the call only
  (no interpreter start, no imports): the transfer path itself;
- ``weightvault cache ls --json`` on an empty cache: what the CLI costs around a request (process
  start, imports, building the command, exit).

The client's modules are compiled to ``.pyc`` first, as ``pip install`` does for an installed client.

Everything is read from the server's page cache (one untimed curl GET and one untimed pull first); the
output and the client's cache are deleted, then ``os.sync()`` runs, before each timed step, so one
step's writeback (and the freeing of its files) is not billed to the next. The CLI gets no terminal:
no progress bar is drawn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import rawhttp, servers
from benchmarks.context import Context, create_model, expect, say, settle
from benchmarks.data import size_key, size_label

CLIENT_PULL = """\
import sys, time
from weightvault import Client
url, model, cache, out = sys.argv[1:5]
with Client(url, cache_dir=cache, progress=False) as client:
    started = time.perf_counter()
    pulled = client.pull(model, output=out)
    print(time.perf_counter() - started)
assert not pulled.from_cache and pulled.transferred == pulled.size
"""


def _client_package() -> Path:
    spec = importlib.util.find_spec("weightvault")
    assert spec is not None and spec.origin is not None, "the weightvault client is not installed"
    return Path(spec.origin).parent


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def run(ctx: Context) -> None:
    curl = shutil.which("curl")
    cli = Path(sys.executable).with_name("weightvault")
    if curl is None or not cli.exists():
        ctx.results.error(f"pull: needs curl ({curl}) and the weightvault command ({cli}); skipped")
        return
    size = ctx.download_size
    key, label = size_key(size), size_label(size)
    file, config = ctx.inputs.sized(size)
    model = f"pull-{key.lower()}"
    work = ctx.tmp / "pull"
    work.mkdir(exist_ok=True)
    out = work / "out.safetensors"
    add = ctx.results.add
    with servers.weightvault(ctx.tmp, tag=f"pull-{key}") as wv:
        create_model(wv, model, "mlp", config)
        version = expect(
            rawhttp.upload_raw(wv.url, f"/v1/models/{model}/versions", file), 201, "upload"
        ).json()
        weights = next(
            a for a in version["artifacts"] if a["kind"] == "weights" and a["format"] == "safetensors"
        )
        url = f"{wv.url}/v1/models/{model}/versions/{version['version']}/artifacts/weights?format=safetensors"

        cache = work / "cache"

        def reset() -> None:
            # Before settle(), not inside the timed step: freeing a 1 GiB file is journal and block work
            # the filesystem finishes after unlink returns, which the next writer would otherwise pay.
            out.unlink(missing_ok=True)
            shutil.rmtree(cache, ignore_errors=True)

        def client_env() -> dict[str, str]:
            return servers.base_env(WEIGHTVAULT_URL=wv.url, WEIGHTVAULT_CACHE=str(cache))

        def curl_once() -> float:
            seconds, _ = _timed([curl, "-sf", "-o", str(out), url], servers.base_env(), work)
            if out.stat().st_size != weights["size"]:
                raise RuntimeError(f"curl wrote {out.stat().st_size} bytes, not {weights['size']}")
            return seconds

        def curl_checked_once() -> float:
            # What a careful user does by hand: download, then check the sha256 the server published.
            command = '"$1" -sf -o "$2" "$3" && sha256sum "$2"'
            seconds, stdout = _timed(
                ["bash", "-c", command, "-", curl, str(out), url], servers.base_env(), work
            )
            if stdout.split()[0] != weights["sha256"]:
                raise RuntimeError(f"curl + sha256sum: {stdout.split()[0]}, not {weights['sha256']}")
            return seconds

        def cli_pull(*verify: str) -> float:
            command = [str(cli), "pull", model, "-o", str(out), *verify, "--json"]
            seconds, stdout = _timed(command, client_env(), work)
            pulled = json.loads(stdout)
            if pulled["size"] != weights["size"] or out.stat().st_size != weights["size"]:
                raise RuntimeError(f"pull wrote {out.stat().st_size} bytes, not {weights['size']}")
            if pulled["verified_by"] != (verify[-1] if verify else "crc32"):
                raise RuntimeError(f"pull checked the download by {pulled['verified_by']}, not as asked")
            return seconds

        def client_once() -> float:
            command = [sys.executable, "-c", CLIENT_PULL, wv.url, model, str(cache), str(out)]
            _, stdout = _timed(command, client_env(), work)
            return float(stdout.split()[-1])

        steps = [
            ("curl", "curl -s -o FILE URL (fresh process)", curl_once),
            ("curl_sha256sum", "curl -s -o FILE URL && sha256sum FILE (fresh processes)", curl_checked_once),
            ("cli", "weightvault pull -o FILE, empty cache (fresh process)", cli_pull),
            (
                "cli_sha256",
                "weightvault pull -o FILE --verify sha256, empty cache (fresh process)",
                lambda: cli_pull("--verify", "sha256"),
            ),
            ("client", "Client.pull(output=FILE), empty cache (the call alone)", client_once),
        ]
        # The client as a user has it installed: pip compiles a wheel's modules at install time. From an
        # editable checkout under PYTHONDONTWRITEBYTECODE (set on these machines) every command would
        # compile the client's modules from source again, 60-70 ms that no installed CLI pays.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(_client_package())], check=True)
        for _, _, once in steps:  # warm-up: the blob into the page cache, the client's files too
            reset()
            once()
        for repeat in range(ctx.repeats):
            say(f"pull {label}: repeat {repeat + 1}/{ctx.repeats}")
            for name, what, once in steps:
                reset()
                settle()
                add(f"pull/{key}/{name}/seconds", once(), unit="s", label=f"pull {label}: {what}")
            reset()
            settle()
            seconds, _ = _timed([str(cli), "cache", "ls", "--json"], client_env(), work)
            add(
                "pull/cli_command_overhead/seconds",
                seconds,
                unit="s",
                label="weightvault cache ls --json, empty cache (process start, imports, exit; no request)",
            )
        shutil.rmtree(work, ignore_errors=True)
    if os.cpu_count() == 2:
        ctx.results.note(
            "pull: on 2 CPUs the server, the client's receiving/hashing thread and its writer share both cores."
        )
