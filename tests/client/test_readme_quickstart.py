"""The README's quickstart, run as written: its ```bash block under "## Quickstart: serve, push, pull, convert"
runs line by line in a fresh folder holding the tutorial's checkpoint.pt, with a real `weightvault` command."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from tests.checkpoints import save, trained_simple_model
from tests.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Quickstart: serve, push, pull, convert"
SECONDS = 600

# The block's lines run verbatim; only `serve` gets this test's own port (clients find it via WEIGHTVAULT_URL).
PRELUDE = """set -euo pipefail
weightvault() {
  if [ "${1:-}" = serve ]; then shift; command weightvault serve --port "$QUICKSTART_PORT" "$@"
  else command weightvault "$@"; fi
}
"""


def quickstart_block(readme: str) -> str | None:
    """The first ```bash block of the quickstart section, or None when the README has no such section."""
    start = readme.find(HEADING + "\n")
    if start < 0:
        return None
    section = readme[start + len(HEADING) :]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    return match.group(1) if match else None


def run_quickstart(block: str, workdir: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``block`` in ``workdir`` with ``bin_dir`` first on PATH; stop whatever it left running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTVAULT_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        QUICKSTART_PORT=str(port),
        WEIGHTVAULT_URL=f"http://127.0.0.1:{port}",
        WEIGHTVAULT_CACHE=str(workdir.parent / "cache"),
    )
    log = workdir.parent / "quickstart.log"
    with log.open("w") as out:
        # Output goes to a file, not a pipe: the backgrounded server would hold a pipe open after bash exits.
        process = subprocess.Popen(
            ["bash", "-c", PRELUDE + block],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the backgrounded server joins this group, so it is stopped with it
        )
        try:
            process.wait(timeout=SECONDS)
        finally:
            _stop_group(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, log.read_text(errors="replace"), "")


def _stop_group(pgid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def check_outputs(block: str, workdir: Path) -> list[Path]:
    """Every ``-o FILE`` the block names exists and loads."""
    outputs = [workdir / m for m in re.findall(r"(?:-o|--output)\s+(\S+)", block)]
    for path in outputs:
        assert path.is_file() and path.stat().st_size > 0, path
        if path.suffix == ".safetensors":
            assert set(load_file(path)) == {"linear.weight", "linear.bias"}
        elif path.suffix == ".onnx":
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (out,) = session.run(None, {session.get_inputs()[0].name: torch.ones(2, 10).numpy()})
            assert out.shape == (2, 1)
        elif path.suffix == ".pt":
            loaded = torch.load(path, weights_only=True)
            state = loaded.get("model_state_dict", loaded)
            assert set(state) == {"linear.weight", "linear.bias"}
    return outputs


def test_readme_quickstart(tmp_path: Path) -> None:
    block = quickstart_block((ROOT / "README.md").read_text())
    if block is None:
        pytest.skip(f"README.md has no {HEADING!r} section with a ```bash block yet")
    workdir = tmp_path / "work"
    workdir.mkdir()
    model, optimizer = trained_simple_model()
    ckpt = {
        "epoch": 3,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    save(ckpt, workdir / "checkpoint.pt")

    done = run_quickstart(block, workdir, Path(sys.executable).parent)
    assert done.returncode == 0, f"{shlex.join(done.args)} failed:\n{done.stdout[-5000:]}"
    assert len(check_outputs(block, workdir)) >= 2
