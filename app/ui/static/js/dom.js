// DOM helpers. Every string becomes a text node or an attribute value: nothing from the server is ever
// parsed as HTML, so names, metadata and error messages cannot inject markup or script.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatDate(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

export function timeEl(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, formatDate(iso));
}

export function shortSha(sha) {
  return sha ? sha.slice(0, 12) : "–";
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { class: "offscreen", readonly: true }, text);
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function copyButton(text, label = "Copy") {
  const button = h("button", { type: "button", class: "copy", "aria-label": `${label}: ${text.slice(0, 80)}` }, label);
  button.addEventListener("click", async () => {
    try {
      await copyText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy";
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

export function sha(value) {
  if (!value) return "–";
  return h("span", { class: "sha" }, h("code", { title: value, "data-sha": value }, shortSha(value) + "…"), copyButton(value, "Copy sha256"));
}

export function snippet(title, text) {
  return h(
    "div",
    { class: "snippet" },
    h("div", { class: "snippet-head" }, h("span", {}, title), copyButton(text)),
    h("pre", {}, h("code", {}, text)),
  );
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind || "neutral"}` }, text);
}

export function table(headers, rows, attrs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, headers.map((head) => h("th", { scope: "col" }, head)))),
      rows instanceof HTMLTableSectionElement ? rows : h("tbody", {}, rows),
    ),
  );
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), children);
}

export function jsonText(value) {
  return JSON.stringify(value, null, 2);
}

// A small key/value list for metadata and configs; nested values are shown as JSON text.
export function keyValues(obj, empty = "none") {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "muted" }, empty);
  return h(
    "dl",
    { class: "kv" },
    entries.map(([key, value]) => [
      h("dt", {}, key),
      h("dd", {}, typeof value === "string" ? value : h("code", {}, JSON.stringify(value))),
    ]),
  );
}

export function errorBox(error, title) {
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, title || "Error"),
    " ",
    error && error.code ? h("code", {}, error.code) : null,
    h("p", {}, error && error.message ? error.message : String(error)),
  );
}

// Differences and tolerances: three significant digits, exact zero as 0.
export function num(value) {
  if (value === null || value === undefined) return "?";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  return Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6 ? value.toExponential(2) : String(Number(value.toPrecision(3)));
}
