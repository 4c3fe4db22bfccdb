"""A resumed upload against an uninterrupted one, through the client, against a real server.

For a file of ``--size`` (default 1 GiB) it times, in the same run and alternately:
- ``direct``: ``Client.push`` below the resumable threshold (one POST, the v1 path);
- ``resumable``: ``Client.push`` through the tus endpoint, uninterrupted;
- ``resumed``: the same, with the connection cut once at half the file (the client waits its first backoff,
  1 s, asks the server for its offset and goes on: the cost is that wait, the bytes in flight and one HEAD).
Each push goes to a fresh model, so every one is a full ingest. Prints medians and ratios to ``direct``.

    python -m benchmarks.resumable --size 1G --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.data import make_sized, parse_size, size_label
from benchmarks.servers import weightvault


def _cut_once_at(half: int) -> Callable[..., httpx.Response]:
    """httpx.Client.patch that loses the connection once, after ``half`` bytes of the file were sent."""
    real_patch = httpx.Client.patch
    state = {"sent": 0, "cut": False}

    def patch(self: httpx.Client, url: str, **kwargs: object) -> httpx.Response:
        body = kwargs.get("content")
        if state["cut"] or body is None:
            return real_patch(self, url, **kwargs)  # type: ignore[arg-type]

        def counted() -> object:
            for chunk in body:  # type: ignore[attr-defined]
                state["sent"] += len(chunk)
                if state["sent"] >= half and not state["cut"]:
                    state["cut"] = True
                    raise httpx.RemoteProtocolError("benchmark: connection cut")
                yield chunk

        kwargs["content"] = counted()
        return real_patch(self, url, **kwargs)  # type: ignore[arg-type]

    return patch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = parse_size(args.size)

    from weightvault import Client

    with tempfile.TemporaryDirectory(prefix="wv-resumable-") as tmp:
        work = Path(tmp)
        checkpoint = work / "checkpoint.pt"
        config = make_sized(checkpoint, size)
        times: dict[str, list[float]] = {"direct": [], "resumable": [], "resumed": []}
        with weightvault(work, tag="resumable") as server:
            for repeat in range(args.repeats):
                for mode in times:
                    name = f"{mode}-{repeat}"
                    httpx.post(
                        f"{server.url}/v1/models",
                        json={"name": name, "architecture": "mlp", "config": config},
                    ).raise_for_status()
                    os.environ["WEIGHTVAULT_RESUMABLE_THRESHOLD"] = str(size * 2 if mode == "direct" else 1)
                    original = httpx.Client.patch
                    if mode == "resumed":
                        httpx.Client.patch = _cut_once_at(checkpoint.stat().st_size // 2)  # type: ignore[method-assign]
                    try:
                        with Client(server.url, cache_dir=work / f"cache-{name}", progress=False) as client:
                            started = time.perf_counter()
                            client.push(name, checkpoint)
                            times[mode].append(time.perf_counter() - started)
                    finally:
                        httpx.Client.patch = original  # type: ignore[method-assign]
        base = statistics.median(times["direct"])
        print(f"{size_label(size)} checkpoint, {args.repeats} repeats, medians:")
        for mode, values in times.items():
            median = statistics.median(values)
            print(
                f"  {mode:10s} {median:7.2f} s  ({median / base:.2f}x direct)  runs: {[round(v, 2) for v in values]}"
            )


if __name__ == "__main__":
    main()
