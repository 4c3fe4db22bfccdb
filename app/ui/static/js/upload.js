// Upload one checkpoint by drag and drop or the file picker, with a real progress bar (XMLHttpRequest
// upload progress), and lay out the server's refusal readably.

import { ApiError, authHeaders, enc } from "./api.js";
import { formatBytes, h, jsonText, replace, table } from "./dom.js";

const ROW_LIMIT = 500;

function mismatchTable(details) {
  const rows = [];
  for (const key of details.missing_keys || []) {
    rows.push(["missing", key, "in the architecture", "not in the file"]);
  }
  for (const key of details.unexpected_keys || []) {
    rows.push(["unexpected", key, "not in the architecture", "in the file"]);
  }
  for (const item of details.shape_mismatches || []) {
    rows.push(["shape", item.key, JSON.stringify(item.expected), JSON.stringify(item.got)]);
  }
  for (const item of details.dtype_mismatches || []) {
    rows.push(["dtype", item.key ?? JSON.stringify(item), item.expected ?? "", item.got ?? ""]);
  }
  for (const item of details.tied_mismatches || []) {
    rows.push(["tied", item.key ?? JSON.stringify(item), JSON.stringify(item.expected ?? ""), JSON.stringify(item.got ?? "")]);
  }
  const shown = rows.slice(0, ROW_LIMIT);
  return [
    table(
      ["Problem", "Key", "Expected", "Got"],
      shown.map(([kind, key, expected, got]) =>
        h("tr", { class: `mismatch-${kind}` }, h("td", {}, kind), h("td", {}, h("code", {}, String(key))), h("td", {}, String(expected)), h("td", {}, String(got))),
      ),
      { class: "mismatch" },
    ),
    rows.length > ROW_LIMIT ? h("p", { class: "muted" }, `… and ${rows.length - ROW_LIMIT} more`) : null,
  ];
}

export function refusal(error) {
  const details = error.details || {};
  let body = null;
  if (error.code === "architecture_mismatch") {
    body = mismatchTable(details);
  } else if (error.code === "unsafe_checkpoint") {
    body = [
      h("p", {}, "Refused global" + ((details.globals || []).length === 1 ? "" : "s") + ":"),
      h("ul", { class: "globals" }, (details.globals || []).map((name) => h("li", {}, h("code", {}, String(name))))),
      h("p", { class: "muted" }, "Nothing from the file was executed."),
    ];
  } else if (Object.keys(details).length) {
    body = h("pre", { class: "details" }, jsonText(details));
  }
  return h(
    "div",
    { class: "error refusal", role: "alert", dataset: { code: error.code || "" } },
    h("strong", {}, error.status ? `Refused (${error.status})` : "Upload failed"),
    " ",
    h("code", {}, error.code || ""),
    h("p", {}, error.message),
    body,
  );
}

// The upload panel of a model page; ``onDone(version)`` runs after a 201.
export function uploadPanel(modelName, onDone) {
  let file = null;
  let xhr = null;
  const input = h("input", { type: "file", id: "upload-file", class: "visually-hidden" });
  const chosen = h("span", { class: "chosen muted" }, "No file chosen");
  const zone = h(
    "div",
    { class: "dropzone", id: "dropzone" },
    h("p", {}, "Drop a checkpoint here (.pt, .pth, .ckpt, .bin, .safetensors) or "),
    h("label", { for: "upload-file", class: "button secondary", tabindex: "0", role: "button" }, "Choose a file"),
    input,
    chosen,
  );
  const metadata = h("textarea", { id: "upload-metadata", rows: "3", placeholder: '{"acc": 0.98, "notes": "..."}', spellcheck: "false" });
  const start = h("button", { type: "button", id: "upload-start", disabled: true }, "Upload");
  const cancel = h("button", { type: "button", class: "secondary", hidden: true }, "Cancel");
  const bar = h("progress", { id: "upload-progress", max: "1", value: "0" });
  const label = h("span", { class: "progress-label", id: "upload-label" }, "");
  const outcome = h("div", { id: "upload-outcome", "aria-live": "polite" });

  const choose = (picked) => {
    if (!picked) return;
    file = picked;
    replace(chosen, `${picked.name} · ${formatBytes(picked.size)}`);
    chosen.classList.remove("muted");
    start.disabled = false;
    replace(outcome);
  };
  input.addEventListener("change", () => choose(input.files[0]));
  zone.querySelector("label").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer ? event.dataTransfer.files : [];
    if (files.length > 1) {
      replace(outcome, h("p", { class: "error" }, "Drop one file: a single checkpoint becomes one version."));
      return;
    }
    choose(files[0]);
  });

  const finish = () => {
    xhr = null;
    start.disabled = !file;
    cancel.hidden = true;
  };

  start.addEventListener("click", () => {
    if (!file) return;
    const meta = metadata.value.trim();
    if (meta) {
      try {
        const parsed = JSON.parse(meta);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      } catch {
        replace(outcome, h("p", { class: "error" }, "Metadata must be a JSON object, e.g. {\"acc\": 0.98}."));
        return;
      }
    }
    const form = new FormData();
    form.append("file", file, file.name);
    if (meta) form.append("metadata", meta);
    xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/models/${enc(modelName)}/versions`);
    for (const [key, value] of Object.entries(authHeaders())) xhr.setRequestHeader(key, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    bar.max = file.size || 1;
    bar.value = 0;
    replace(label, `0 B of ${formatBytes(file.size)}`);
    replace(outcome);
    start.disabled = true;
    cancel.hidden = false;
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      bar.max = event.total;
      bar.value = event.loaded;
      const pct = Math.floor((100 * event.loaded) / event.total);
      replace(label, `${formatBytes(event.loaded)} of ${formatBytes(event.total)} (${pct}%)`);
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = bar.max;
      replace(label, `${formatBytes(file.size)} sent (100%) · the server is reading, loading and proving it…`);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      const status = xhr.status;
      finish();
      if (status === 201 && data) {
        replace(label, `${formatBytes(file.size)} sent (100%) · accepted`);
        const href = `/ui/models/${enc(modelName)}/versions/${data.version}`;
        replace(outcome, h("p", { class: "ok", id: "upload-done" }, "Accepted as ", h("a", { href }, `version ${data.version}`), ": loaded strictly, run, written and proven by reload."));
        // The file became a version: a second click must not upload it again.
        file = null;
        input.value = "";
        start.disabled = true;
        replace(chosen, `${data.source.filename || "file"} → version ${data.version}`);
        chosen.classList.add("muted");
        onDone(data);
      } else {
        replace(label, "");
        replace(outcome, refusal(new ApiError(status, data)));
      }
    });
    xhr.addEventListener("error", () => {
      finish();
      replace(label, "");
      replace(outcome, refusal(new ApiError(0, null)));
    });
    xhr.addEventListener("abort", () => {
      finish();
      replace(label, "Cancelled; nothing was stored.");
    });
    xhr.send(form);
  });
  cancel.addEventListener("click", () => xhr && xhr.abort());

  return h(
    "div",
    { class: "upload" },
    zone,
    h("label", { for: "upload-metadata" }, "Metadata (optional JSON object)"),
    metadata,
    h("div", { class: "row" }, start, cancel),
    h("div", { class: "progress" }, bar, label),
    outcome,
  );
}
