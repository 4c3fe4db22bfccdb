// The model list (search, create) and a model's page (about, config, aliases, upload, versions).

import { api, can, enc, get, getAll } from "./api.js";
import { badge, errorBox, formatBytes, h, jsonText, keyValues, replace, section, sha, table, timeEl } from "./dom.js";
import { uploadPanel } from "./upload.js";

export const modelHref = (name) => `/ui/models/${enc(name)}`;
export const versionHref = (name, version) => `/ui/models/${enc(name)}/versions/${enc(String(version))}`;

function aliasChips(aliases, name) {
  return Object.entries(aliases || {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([alias, version]) => h("a", { class: "chip", href: versionHref(name, version), title: `${alias} → v${version}` }, `${alias} → v${version}`));
}

export async function modelsPage(main, who) {
  const params = new URLSearchParams(location.search);
  const architectures = await getAll("/v1/architectures");
  const q = h("input", { type: "search", id: "search-q", name: "q", value: params.get("q") || "", placeholder: "name contains…", "aria-label": "Name contains" });
  const arch = h(
    "select",
    { id: "search-architecture", name: "architecture", "aria-label": "Architecture" },
    h("option", { value: "" }, "any architecture"),
    architectures.map((a) => h("option", { value: a.name }, a.name)),
  );
  arch.value = params.get("architecture") || "";
  const results = h("div", { id: "model-results", "aria-live": "polite" });
  const form = h("form", { class: "search", role: "search" }, q, arch, h("button", { type: "submit" }, "Search"));

  let cursor = null;
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const body = h("tbody", {});

  const row = (model) => {
    const updated = h("td", {}, timeEl(model.created_at));
    if (model.latest_version !== null) {
      // The list carries the model's creation time; the latest version's time is the last update.
      get(`/v1/models/${enc(model.name)}/versions/latest`).then(
        (version) => replace(updated, timeEl(version.created_at)),
        () => {},
      );
    }
    return h(
      "tr",
      {},
      h("td", {}, h("a", { href: modelHref(model.name), class: "model-link" }, model.name)),
      h("td", {}, model.architecture),
      h("td", {}, model.latest_version === null ? h("span", { class: "muted" }, "none") : h("a", { href: versionHref(model.name, model.latest_version) }, `v${model.latest_version}`)),
      h("td", {}, aliasChips(model.aliases, model.name)),
      updated,
      h("td", { class: "desc" }, model.description || ""),
    );
  };

  const load = async (reset) => {
    if (reset) {
      cursor = null;
      body.replaceChildren();
    }
    try {
      const page = await get("/v1/models", { q: q.value.trim(), architecture: arch.value, cursor, limit: 50 });
      for (const model of page.items) body.append(row(model));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!body.children.length) {
        replace(results, h("p", { class: "muted", id: "no-models" }, q.value || arch.value ? "No model matches." : "No models yet."));
      } else if (!results.querySelector("table")) {
        replace(results, table(["Name", "Architecture", "Latest", "Aliases", "Updated", "Description"], body, { id: "models" }));
      }
    } catch (error) {
      replace(results, errorBox(error));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const search = new URLSearchParams();
    if (q.value.trim()) search.set("q", q.value.trim());
    if (arch.value) search.set("architecture", arch.value);
    history.replaceState(null, "", `/ui/${search.toString() ? "?" + search : ""}`);
    results.replaceChildren();
    load(true);
  });
  more.addEventListener("click", () => load(false));

  replace(main, h("div", { class: "title-row" }, h("h1", {}, "Models"), can(who, "write") ? createModelForm(architectures) : null), form, results, more);
  await load(true);
}

function createModelForm(architectures) {
  const name = h("input", { id: "new-name", required: true, pattern: "[a-z0-9][a-z0-9._\\-]{0,127}", placeholder: "my-model", autocomplete: "off" });
  const arch = h("select", { id: "new-architecture" }, architectures.map((a) => h("option", { value: a.name }, a.name)));
  const description = h("input", { id: "new-description", placeholder: "optional" });
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "stack" },
    h("label", { for: "new-name" }, "Name"),
    name,
    h("label", { for: "new-architecture" }, "Architecture"),
    arch,
    h("label", { for: "new-description" }, "Description"),
    description,
    h("button", { type: "submit" }, "Create model"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const body = { name: name.value.trim(), architecture: arch.value };
      if (description.value.trim()) body.description = description.value.trim();
      const model = await api("POST", "/v1/models", body);
      location.assign(modelHref(model.name));
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  return h("details", { class: "create" }, h("summary", { class: "button" }, "New model"), form);
}

function verdict(validation) {
  if (!validation || validation.status !== "passed") return badge((validation && validation.status) || "unknown", "bad");
  return badge(validation.strict ? "passed · strict" : "passed", "ok");
}

export function versionRows(model, versions) {
  const aliasesOf = {};
  for (const [alias, number] of Object.entries(model.aliases || {})) (aliasesOf[number] ||= []).push(alias);
  return versions.map((v) =>
    h(
      "tr",
      { dataset: { version: String(v.version) } },
      h("td", {}, h("a", { href: versionHref(model.name, v.version) }, `v${v.version}`), " ", (aliasesOf[v.version] || []).sort().map((a) => h("span", { class: "chip" }, a))),
      h("td", {}, timeEl(v.created_at)),
      h("td", { class: "num" }, formatBytes(v.source.size)),
      h("td", {}, sha(v.source.sha256)),
      h("td", {}, `${v.source.format} · ${v.source.layout}`),
      h("td", {}, training(v.training)),
      h("td", {}, verdict(v.validation)),
    ),
  );
}

export function training(t) {
  const parts = [];
  if (t && t.epoch !== null && t.epoch !== undefined) parts.push(`epoch ${t.epoch}`);
  if (t && t.step !== null && t.step !== undefined) parts.push(`step ${t.step}`);
  if (t && t.optimizer) parts.push(t.optimizer);
  return parts.length ? parts.join(" · ") : h("span", { class: "muted" }, "–");
}

export function editPanel(current, path, onSaved) {
  const description = h("textarea", { rows: "2", id: "edit-description" }, current.description || "");
  const metadata = h("textarea", { rows: "5", id: "edit-metadata", spellcheck: "false" }, jsonText(current.metadata || {}));
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "stack" },
    h("label", { for: "edit-description" }, "Description"),
    description,
    h("label", { for: "edit-metadata" }, "Metadata (JSON object; replaces the stored one)"),
    metadata,
    h("button", { type: "submit" }, "Save"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(metadata.value || "{}");
    } catch {
      replace(out, h("p", { class: "error" }, "Metadata is not valid JSON."));
      return;
    }
    try {
      const saved = await api("PATCH", path, { description: description.value.trim() || null, metadata: parsed });
      onSaved(saved);
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  return h("details", { class: "edit" }, h("summary", { class: "button secondary" }, "Edit description and metadata"), form);
}

function aboutSection(model, who, rerender) {
  return section(
    "About",
    model.description ? h("p", { class: "description" }, model.description) : h("p", { class: "muted" }, "No description."),
    h("h3", {}, "Metadata"),
    keyValues(model.metadata),
    can(who, "write") ? editPanel(model, `/v1/models/${enc(model.name)}`, rerender) : null,
  );
}

function aliasSection(model, versions, who, rerender) {
  const entries = Object.entries(model.aliases || {}).sort(([a], [b]) => a.localeCompare(b));
  const list = entries.length
    ? h(
        "ul",
        { class: "aliases", id: "aliases" },
        entries.map(([alias, version]) =>
          h(
            "li",
            {},
            h("a", { class: "chip", href: versionHref(model.name, version) }, `${alias} → v${version}`),
            can(who, "write")
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "link danger",
                    "aria-label": `Remove alias ${alias}`,
                    onclick: async (event) => {
                      const button = event.currentTarget;
                      button.disabled = true;
                      try {
                        await api("DELETE", `/v1/models/${enc(model.name)}/aliases/${enc(alias)}`);
                        rerender(await get(`/v1/models/${enc(model.name)}`));
                      } catch (error) {
                        button.disabled = false;
                        button.closest("li").append(errorBox(error));
                      }
                    },
                  },
                  "remove",
                )
              : null,
          ),
        ),
      )
    : h("p", { class: "muted", id: "aliases" }, "No aliases.");
  let form = null;
  if (can(who, "write") && versions.length) {
    const alias = h("input", { id: "alias-name", placeholder: "production", required: true, autocomplete: "off" });
    const version = h("select", { id: "alias-version" }, versions.map((v) => h("option", { value: String(v.version) }, `v${v.version}`)));
    const out = h("div", { "aria-live": "polite" });
    form = h(
      "form",
      { class: "inline" },
      h("label", { for: "alias-name" }, "Alias"),
      alias,
      h("label", { for: "alias-version" }, "points at"),
      version,
      h("button", { type: "submit", id: "alias-set" }, "Set alias"),
      out,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        rerender(await api("PUT", `/v1/models/${enc(model.name)}/aliases/${enc(alias.value.trim())}`, { version: Number(version.value) }));
      } catch (error) {
        replace(out, errorBox(error));
      }
    });
  }
  return section("Aliases", list, form);
}

export async function modelPage(main, who, name) {
  let model = await get(`/v1/models/${enc(name)}`);
  const [architecture, initialVersions] = await Promise.all([
    get(`/v1/architectures/${enc(model.architecture)}`).catch(() => null),
    getAll(`/v1/models/${enc(name)}/versions`),
  ]);
  let versions = initialVersions.sort((a, b) => b.version - a.version);
  const versionsBody = h("tbody", { id: "versions-body" });
  const versionsArea = h("div", {});
  const aboutSlot = h("div", {});
  const aliasSlot = h("div", {});

  const renderVersions = () => {
    versionsBody.replaceChildren(...versionRows(model, versions));
    if (versions.length) {
      replace(versionsArea, table(["Version", "Created", "Size", "sha256", "Source", "Training", "Validation"], versionsBody, { id: "versions" }));
    } else {
      replace(versionsArea, h("p", { class: "muted" }, "No versions yet."));
    }
  };
  const sub = h("p", { class: "sub", id: "model-sub" });
  const rerender = (updated) => {
    model = updated;
    replace(
      sub,
      "Architecture ",
      h("a", { href: `/ui/architectures#arch-${enc(model.architecture)}` }, model.architecture),
      " · created ",
      timeEl(model.created_at),
      " · latest ",
      model.latest_version === null ? "none" : h("a", { href: versionHref(model.name, model.latest_version) }, `v${model.latest_version}`),
    );
    replace(aboutSlot, aboutSection(model, who, rerender));
    replace(aliasSlot, aliasSection(model, versions, who, rerender));
    renderVersions();
  };
  const afterUpload = async () => {
    versions = (await getAll(`/v1/models/${enc(name)}/versions`)).sort((a, b) => b.version - a.version);
    rerender(await get(`/v1/models/${enc(name)}`));
  };

  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/ui/" }, "Models"), " / ", model.name),
    h("h1", { id: "model-name" }, model.name),
    sub,
    h("div", { class: "grid" }, aboutSlot, section("Configuration", keyValues(model.config, "default configuration"), architecture ? h("p", { class: "muted" }, architecture.description) : null)),
    aliasSlot,
    can(who, "write") ? section("Upload a version", uploadPanel(name, afterUpload)) : null,
    section("Versions", versionsArea),
  );
  rerender(model);
}
