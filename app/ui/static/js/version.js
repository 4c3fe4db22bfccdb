// A version's page: the proof, the artifacts with download buttons and copyable commands, and ONNX.

import { api, can, download, enc, get, getAll } from "./api.js";
import { badge, errorBox, formatBytes, h, keyValues, num, replace, section, sha, snippet, table, timeEl } from "./dom.js";
import { editPanel, modelHref, training } from "./models.js";

const POLL_MS = 1000;

function artifactUrl(model, version, artifact) {
  return `/v1/models/${enc(model)}/versions/${version}/artifacts/${enc(artifact.kind)}?format=${enc(artifact.format)}`;
}

function filenameOf(model, version, artifact) {
  if (artifact.filename) return artifact.filename;
  return artifact.kind === "onnx" ? `${model}-v${version}.onnx` : `${model}-v${version}-${artifact.kind}.${artifact.format}`;
}

function snippets(who, model, version, artifact) {
  const origin = location.origin;
  const url = origin + artifactUrl(model, version, artifact);
  const file = filenameOf(model, version, artifact);
  const auth = who && who.auth === "on";
  const header = auth ? ` -H "Authorization: Bearer $WEIGHTVAULT_TOKEN"` : "";
  const curl = `curl -fSL${header} -o '${file}' '${url}'`;
  const kindFlag = artifact.kind === "onnx" ? "" : ` --kind ${artifact.kind} --format ${artifact.format}`;
  // The model folder comes unpacked from the CLI and the client, ready for from_pretrained.
  const folder = file.replace(/\.zip$/, "");
  const pull =
    artifact.kind === "onnx"
      ? `weightvault convert ${model}:${version} --wait -o '${file}' --url ${origin}`
      : artifact.kind === "hf"
        ? `weightvault pull ${model}:${version} --format hf -o '${folder}' --url ${origin}`
        : `weightvault pull ${model}:${version}${kindFlag} -o '${file}' --url ${origin}`;
  const tokenArg = auth ? `, token=os.environ["WEIGHTVAULT_TOKEN"]` : "";
  const client = `${auth ? "import os\n" : ""}from weightvault import Client\n\nclient = Client("${origin}"${tokenArg})\n`;
  const python =
    artifact.kind === "onnx"
      ? `${client}path = client.pull_onnx("${model}:${version}", output="${file}")`
      : artifact.kind === "hf"
        ? `${client}folder = client.pull_folder("${model}:${version}", output="${folder}").path`
        : `${client}client.pull("${model}:${version}", kind="${artifact.kind}", format="${artifact.format}", output="${file}")`;
  return [snippet("curl", curl), snippet("weightvault", pull), snippet("Python", python)];
}

function downloadControl(who, model, version, artifact) {
  const url = artifactUrl(model, version, artifact);
  const file = filenameOf(model, version, artifact);
  const label = `Download ${file}`;
  if (who && who.auth === "off") {
    // No token to send: a plain link streams straight to disk, however large the file.
    return h("a", { class: "button download", href: url, download: file, "aria-label": label }, "Download");
  }
  const out = h("span", { "aria-live": "polite" });
  const button = h("button", { type: "button", class: "download", "aria-label": label }, "Download");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await download(url, file);
      replace(out);
    } catch (error) {
      replace(out, errorBox(error));
    } finally {
      button.disabled = false;
    }
  });
  return h("span", {}, button, out);
}

function artifactCard(who, model, version, artifact, open) {
  const v = artifact.validation || {};
  const checks = [];
  if (v.method) checks.push(v.method);
  if (v.max_abs_diff !== undefined && v.max_abs_diff !== null) checks.push(`max abs difference ${num(v.max_abs_diff)}`);
  if (v.exporter) checks.push(`${v.exporter} exporter, opset ${v.opset}, onnxruntime ${v.onnxruntime} at batch sizes ${(v.batch_sizes || []).join(", ")} within atol ${num(v.atol)} / rtol ${num(v.rtol)}`);
  return h(
    "article",
    { class: "artifact", dataset: { kind: artifact.kind, format: artifact.format } },
    h(
      "div",
      { class: "artifact-head" },
      h("h3", {}, `${artifact.kind} `, h("span", { class: "fmt" }, artifact.format)),
      h("span", { class: "muted" }, formatBytes(artifact.size)),
      v.status === "passed" ? badge("proven", "ok") : badge(v.status || "unchecked", "bad"),
      downloadControl(who, model, version, artifact),
    ),
    h("div", { class: "artifact-sha" }, "sha256 ", sha(artifact.sha256)),
    checks.length ? h("p", { class: "proof-line" }, checks.join("; ") + ".") : null,
    h("details", { class: "snippets", open: open || null }, h("summary", {}, "Commands to fetch it"), snippets(who, model, version, artifact)),
  );
}

function shapeText(tensors) {
  return (tensors || []).map((t) => `[${(t.shape || []).join(", ")}] ${t.dtype || ""}`.trim()).join(", ") || "–";
}

function proofSection(version) {
  const val = version.validation || {};
  const forward = val.forward || {};
  const src = version.source;
  const passed = val.status === "passed";
  const artifacts = (version.artifacts || []).filter((a) => a.kind !== "onnx");
  const diffs = artifacts.map((a) => (a.validation || {}).max_abs_diff).filter((d) => d !== undefined && d !== null);
  const words = passed
    ? [
        `The upload (${formatBytes(src.size)}, ${src.format}, ${src.layout}${src.filename ? `, “${src.filename}”` : ""}) was read without running any code from it, `,
        `loaded into a fresh ${val.architecture || version.model} with strict=${val.strict ? "True" : "False"}, `,
        `and run forward on the architecture's example inputs. `,
        `Then ${artifacts.length} files were written, read back from disk into fresh instances, and their outputs compared with the upload's`,
        diffs.length ? ` (largest difference ${num(Math.max(...diffs))}).` : ".",
      ].join("")
    : `Validation status: ${val.status || "unknown"}.`;
  return section(
    "Proof",
    h("p", { class: "verdict" }, passed ? badge("passed", "ok") : badge(val.status || "unknown", "bad"), " ", words),
    h(
      "dl",
      { class: "kv", id: "proof" },
      h("dt", {}, "architecture"),
      h("dd", {}, val.architecture || "–"),
      h("dt", {}, "strict load"),
      h("dd", {}, String(Boolean(val.strict))),
      h("dt", {}, "example inputs"),
      h("dd", {}, shapeText(forward.inputs)),
      h("dt", {}, "outputs"),
      h("dd", {}, shapeText(forward.outputs)),
      h("dt", {}, "outputs finite"),
      h("dd", {}, forward.finite === undefined ? "–" : String(forward.finite)),
      h("dt", {}, "forward time"),
      h("dd", {}, forward.seconds === undefined ? "–" : `${(forward.seconds * 1000).toFixed(2)} ms`),
      h("dt", {}, "checked at"),
      h("dd", {}, timeEl(val.checked_at)),
      h("dt", {}, "reloaded formats"),
      h("dd", {}, artifacts.map((a) => `${a.kind}.${a.format}`).join(", ") || "–"),
      h("dt", {}, "source sha256"),
      h("dd", {}, sha(src.sha256)),
      h("dt", {}, "training"),
      h("dd", {}, training(version.training)),
    ),
  );
}

function jobText(job) {
  if (!job) return "No conversion requested yet.";
  const r = job.report || (job.artifact && job.artifact.validation) || {};
  switch (job.status) {
    case "queued":
      return "Queued: waiting for a conversion worker…";
    case "running":
      return "Running: exporting, then checking with onnxruntime…";
    case "succeeded":
      return `Succeeded: ${r.exporter || "?"} exporter, opset ${r.opset ?? "?"}, checked at batch sizes ${(r.batch_sizes || []).join(", ")}, largest difference ${num(r.max_abs_diff)}.`;
    case "failed":
      return `Failed: ${(job.error && job.error.message) || "no message"}`;
    default:
      return job.status;
  }
}

function onnxSection(who, version, onnxSlot, onArtifact) {
  const status = h("span", { class: "job-status", id: "onnx-status" }, badge("none", "neutral"));
  const text = h("span", { class: "job-text", id: "onnx-text" }, "Looking for conversions…");
  const button = can(who, "write") ? h("button", { type: "button", id: "onnx-convert", disabled: true }, "Convert to ONNX") : null;
  const out = h("div", { "aria-live": "polite" });
  let timer = null;

  const show = (job) => {
    const kind = { succeeded: "ok", failed: "bad", running: "busy", queued: "busy" }[job ? job.status : ""] || "neutral";
    replace(status, badge(job ? job.status : "none", kind));
    replace(text, jobText(job));
    if (button) button.disabled = Boolean(job && ["queued", "running", "succeeded"].includes(job.status));
  };
  const poll = (job) => {
    show(job);
    clearTimeout(timer);
    if (job && (job.status === "queued" || job.status === "running")) {
      timer = setTimeout(async () => {
        try {
          poll(await get(`/v1/jobs/${enc(job.id)}`));
        } catch (error) {
          replace(out, errorBox(error));
        }
      }, POLL_MS);
    } else if (job && job.status === "succeeded") {
      onArtifact();
    }
  };
  if (button) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      replace(out);
      try {
        poll(await api("POST", `/v1/models/${enc(version.model)}/versions/${version.version}/onnx`, {}));
      } catch (error) {
        button.disabled = false;
        replace(out, errorBox(error));
      }
    });
  }
  const hasOnnx = (version.artifacts || []).some((a) => a.kind === "onnx");
  getAll("/v1/jobs", { model: version.model })
    .then((jobs) => {
      const mine = jobs.filter((j) => j.version === version.version).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
      const current = mine.find((j) => j.status !== "failed") || mine[0] || null;
      poll(current);
      if (!current && hasOnnx) replace(text, "An ONNX artifact exists.");
    })
    .catch((error) => {
      show(null);
      replace(out, errorBox(error));
    });
  // The artifact appears below the status line: nothing above it moves when a job finishes.
  return section("ONNX", h("div", { class: "job-line" }, status, text), button, out, onnxSlot);
}

export async function versionPage(main, who, name, ref) {
  const base = `/v1/models/${enc(name)}/versions/${enc(ref)}`;
  let version = await get(base);
  const model = await get(`/v1/models/${enc(name)}`);
  const aliases = Object.entries(model.aliases || {})
    .filter(([, number]) => number === version.version)
    .map(([alias]) => alias)
    .sort();
  const artifactsSlot = h("div", { id: "artifacts" });
  const onnxSlot = h("div", { id: "onnx-artifact" });
  const aboutSlot = h("div", {});
  const renderArtifacts = () => {
    const list = version.artifacts || [];
    const card = (a) => artifactCard(who, name, version.version, a, a.kind === "weights" && a.format === "safetensors");
    replace(artifactsSlot, list.filter((a) => a.kind !== "onnx").map(card));
    replace(onnxSlot, list.filter((a) => a.kind === "onnx").map(card));
  };
  const renderAbout = () =>
    replace(
      aboutSlot,
      section(
        "About",
        version.description ? h("p", { class: "description" }, version.description) : h("p", { class: "muted" }, "No description."),
        h("h3", {}, "Metadata"),
        keyValues(version.metadata),
        can(who, "write")
          ? editPanel(version, `/v1/models/${enc(name)}/versions/${version.version}`, (saved) => {
              version = saved;
              renderAbout();
            })
          : null,
      ),
    );
  const refreshArtifacts = async () => {
    version = await get(`/v1/models/${enc(name)}/versions/${version.version}`);
    renderArtifacts();
  };

  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/ui/" }, "Models"), " / ", h("a", { href: modelHref(name) }, name), " / ", `v${version.version}`),
    h("h1", { id: "version-title" }, `${name} `, h("span", { class: "v" }, `v${version.version}`), " ", aliases.map((a) => h("span", { class: "chip" }, a))),
    h("p", { class: "sub" }, "Accepted ", timeEl(version.created_at), " · ", formatBytes(version.source.size), " · ", `${version.source.format} · ${version.source.layout}`),
    section("Artifacts", artifactsSlot),
    h("div", { class: "grid" }, proofSection(version), aboutSlot),
    onnxSection(who, version, onnxSlot, refreshArtifacts),
  );
  renderArtifacts();
  renderAbout();
}

export function jobsTable(jobs) {
  return table(
    ["Job", "Model", "Status", "Created", "Finished", "Message"],
    jobs.map((job) =>
      h(
        "tr",
        {},
        h("td", {}, h("code", { title: job.id }, job.id.slice(0, 8))),
        h("td", {}, h("a", { href: `/ui/models/${enc(job.model)}/versions/${job.version}` }, `${job.model} v${job.version}`)),
        h("td", {}, badge(job.status, { succeeded: "ok", failed: "bad" }[job.status] || "busy")),
        h("td", {}, timeEl(job.created_at)),
        h("td", {}, job.finished_at ? timeEl(job.finished_at) : "–"),
        h("td", {}, job.error ? job.error.message : ""),
      ),
    ),
    { id: "jobs" },
  );
}
