"""The ONNX baseline: what a user would run without the service, as a fresh ``python -c`` process.

Same model, same work as a conversion job: build the architecture, load the state_dict strictly, export
with the dynamo exporter (dynamic batch, opset 20, optimize), run onnx's checker, then onnxruntime at batch
sizes 1 and 7 against PyTorch with atol=1e-4, rtol=1e-3. Its wall time includes starting Python and
importing torch, which is exactly what warm workers save.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = """
import json, sys, warnings
import numpy as np, onnx, onnxruntime, torch
from app.architectures.builtin import ARCHITECTURES
name, config, weights, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
arch = next(a for a in ARCHITECTURES if a.name == name)
model = arch.build(config)
model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
model.eval()
names = [spec.name for spec in arch.inputs(config)]
example = arch.example_inputs(config, batch_size=2)
dims = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in example)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    program = torch.onnx.export(model, example, dynamo=True, dynamic_shapes=dims, input_names=names,
                                opset_version=20, optimize=True, verbose=False, report=False)
program.save(out)
onnx.checker.check_model(out)
options = onnxruntime.SessionOptions()
options.log_severity_level = 3
session = onnxruntime.InferenceSession(out, options, providers=["CPUExecutionProvider"])
for batch in (1, 7):
    inputs = arch.example_inputs(config, batch_size=batch, seed=batch)
    with torch.inference_mode():
        want = model(*inputs).numpy()
    got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    assert np.allclose(got, want, atol=1e-4, rtol=1e-3), f"mismatch at batch {batch}"
print("ok")
"""


def command(python: str, architecture: str, config: dict[str, object], weights: Path, out: Path) -> list[str]:
    return [python, "-c", SCRIPT, architecture, json.dumps(config), str(weights), str(out)]


if __name__ == "__main__":
    sys.stdout.write(SCRIPT)
