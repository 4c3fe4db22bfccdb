// Upload one checkpoint by drag and drop or the file picker through the resumable (tus) endpoint, with a
// real progress bar, and lay out the server's refusal readably.

import { ApiError, authHeaders, enc } from "./api.js";
import { formatBytes, h, jsonText, replace, table } from "./dom.js";
import { DEFAULT_CHUNK_BYTES, TusUpload, fingerprint } from "./tus.js";

// PATCH slices of 16 MiB; sessionStorage "weightvault.upload.chunkBytes" overrides it (tests use small
// slices to see a file go in several pieces).
function chunkBytes() {
  const override = Number(sessionStorage.getItem("weightvault.upload.chunkBytes"));
  return Number.isSafeInteger(override) && override > 0 ? override : DEFAULT_CHUNK_BYTES;
}

const ROW_LIMIT = 500;

// A state_dict key breaks after its dots on a narrow screen, never between letters.
function dottedKey(key) {
  const parts = String(key).split(".");
  return h("code", {}, parts.map((part, i) => (i < parts.length - 1 ? [`${part}.`, h("wbr", {})] : part)));
}

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
        h("tr", { class: `mismatch-${kind}` }, h("td", {}, kind), h("td", {}, dottedKey(key)), h("td", {}, String(expected)), h("td", {}, String(got))),
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
    h("strong", {}, error.status ? `Refused (${error.status})` : error.code === "network_error" ? "Upload failed" : "Refused"),
    " ",
    h("code", {}, error.code || ""),
    h("p", {}, error.message),
    body,
  );
}

// The upload panel of a model page; ``onDone(version)`` runs once the upload became a version.
export function uploadPanel(modelName, onDone) {
  let file = null;
  let upload = null;
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
    start.disabled = Boolean(upload); // one upload at a time
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
    upload = null;
    start.disabled = !file;
    cancel.hidden = true;
  };
  let resumedFrom = null; // the server's offset when this upload resumed one from before
  const resumedNote = () => (resumedFrom === null ? "" : ` · resumed at ${formatBytes(resumedFrom)}`);
  const showProgress = (sent, total) => {
    bar.max = total || 1;
    bar.value = total ? sent : 1;
    if (sent >= total) {
      // Every byte is out; the server ingests before it answers the last PATCH. Cancelling now would not
      // stop the version from being made, so the button goes.
      cancel.hidden = true;
      replace(label, `${formatBytes(total)} sent (100%)`, resumedNote(), " · the server is reading, loading and proving it…");
      return;
    }
    const pct = Math.floor((100 * sent) / total);
    replace(label, `${formatBytes(sent)} of ${formatBytes(total)} (${pct}%)`, resumedNote());
  };
  start.addEventListener("click", async () => {
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
    const sending = file;
    resumedFrom = null;
    bar.removeAttribute("data-resumed-from");
    const current = new TusUpload({
      endpoint: `/v1/models/${enc(modelName)}/uploads`,
      file: sending,
      key: fingerprint(modelName, sending),
      metadata: { filename: sending.name, metadata: meta || null },
      headers: authHeaders,
      chunkBytes: chunkBytes(),
      onProgress: showProgress,
      onResume: (offset) => {
        resumedFrom = offset;
        bar.dataset.resumedFrom = String(offset);
        showProgress(offset, sending.size);
      },
      onRetry: ({ attempt, of, delay, offset }) => {
        replace(label, `Connection lost at ${formatBytes(offset)} of ${formatBytes(sending.size)}; resuming in ${Math.round(delay / 1000)} s (try ${attempt} of ${of})…`);
      },
    });
    upload = current;
    bar.max = sending.size || 1;
    bar.value = 0;
    replace(label, `0 B of ${formatBytes(sending.size)}`);
    replace(outcome);
    start.disabled = true;
    cancel.hidden = false;
    let result;
    try {
      await current.start();
      showProgress(sending.size, sending.size);
      result = await current.outcome();
    } catch (error) {
      if (upload !== current) return;
      finish();
      if (error.aborted) {
        replace(label, "Cancelled; the bytes sent were discarded.");
        return;
      }
      const sent = Number(bar.value) || 0;
      replace(label, "");
      replace(
        outcome,
        refusal(error),
        error.status === 0 && current.url
          ? h("p", { class: "muted", id: "upload-resume-hint" }, `${formatBytes(sent)} of ${formatBytes(sending.size)} reached the server; choose or drop the same file again to resume from there.`)
          : null,
      );
      return;
    }
    if (upload !== current) return;
    finish();
    if (result.state === "done" && result.version) {
      const data = result.version;
      replace(label, `${formatBytes(sending.size)} sent (100%)`, resumedNote(), " · accepted");
      const href = `/ui/models/${enc(modelName)}/versions/${data.version}`;
      replace(outcome, h("p", { class: "ok", id: "upload-done" }, "Accepted as ", h("a", { href }, `version ${data.version}`), ": loaded strictly, run, written and proven by reload."));
      // The file became a version: a second click must not upload it again.
      if (file === sending) {
        file = null;
        input.value = "";
        start.disabled = true;
        replace(chosen, `${data.source.filename || "file"} → version ${data.version}`);
        chosen.classList.add("muted");
      }
      onDone(data);
    } else {
      replace(label, "");
      replace(outcome, refusal(new ApiError(null, { error: result.error || { code: "upload_failed", message: "The upload failed.", details: {} } })));
    }
  });
  cancel.addEventListener("click", () => {
    if (!upload) return;
    const current = upload;
    current.abort(true);
    finish();
    replace(label, "Cancelled; the bytes sent were discarded.");
  });

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
