// The router: one shell for every /ui path; the path names the page, the API gives the data.

import { ApiError, can, getAll, token, whoami } from "./api.js";
import { errorBox, h, keyValues, replace, table } from "./dom.js";
import { modelPage, modelsPage } from "./models.js";
import { jobsTable, versionPage } from "./version.js";

const main = document.getElementById("main");

function nav(who) {
  const here = location.pathname;
  const link = (href, text, active) => h("a", { href, "aria-current": active ? "page" : null }, text);
  replace(
    document.getElementById("nav"),
    link("/ui/", "Models", here === "/ui/" || here.startsWith("/ui/models")),
    link("/ui/architectures", "Architectures", here.startsWith("/ui/architectures")),
    can(who, "admin") ? link("/ui/jobs", "Jobs", here.startsWith("/ui/jobs")) : null,
  );
  const box = document.getElementById("who");
  if (!who) {
    replace(box, h("a", { href: "/ui/signin", class: "button secondary", id: "signin-link" }, "Sign in"));
  } else if (who.auth === "off") {
    replace(box, h("span", { class: "muted", title: "The server runs with authentication off" }, "auth off"));
  } else {
    replace(
      box,
      h("span", { id: "scope" }, `signed in · ${who.scope}`),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          id: "signout",
          onclick: () => {
            token.clear();
            location.assign("/ui/signin");
          },
        },
        "Sign out",
      ),
    );
  }
}

function signinPage(message) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", spellcheck: "false", placeholder: "wv_…", required: true });
  const out = h("div", { "aria-live": "polite" }, message ? h("p", { class: "error" }, message) : null);
  const form = h(
    "form",
    { class: "stack signin" },
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "muted" }, "Create one with ", h("code", {}, "weightvault token create --scope read|write|admin"), ". It stays in this tab's session storage and is sent only in the Authorization header to this server."),
    h("button", { type: "submit", id: "signin" }, "Sign in"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    token.set(input.value.trim());
    try {
      const response = await fetch("/v1/auth/whoami", { headers: { Authorization: `Bearer ${input.value.trim()}` }, cache: "no-store" });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new ApiError(response.status, body);
      }
      // Back to the page that asked for a token (the sign-in page itself leads to the model list).
      location.assign(location.pathname === "/ui/signin" ? "/ui/" : location.pathname + location.search);
    } catch (error) {
      token.clear();
      replace(out, errorBox(error, "Not signed in"));
    }
  });
  replace(main, h("h1", {}, "Sign in"), form);
  input.focus();
}

async function architecturesPage() {
  const architectures = await getAll("/v1/architectures");
  replace(
    main,
    h("h1", {}, "Architectures"),
    h("p", { class: "muted" }, "Uploads are loaded into a fresh instance of their model's architecture with strict=True and run on these example inputs."),
    architectures.map((a) =>
      h(
        "section",
        { class: "card", id: `arch-${a.name}` },
        h("h2", {}, a.name, a.source ? h("span", { class: "muted small" }, ` · ${a.source}`) : null),
        h("p", {}, a.description || ""),
        a.parameters !== undefined ? h("p", {}, `${a.parameters.toLocaleString()} parameters`) : null,
        h("h3", {}, "Example inputs"),
        table(
          ["Name", "Shape", "dtype"],
          (a.inputs || []).map((input) => h("tr", {}, h("td", {}, input.name), h("td", {}, h("code", {}, `[${(input.shape || []).join(", ")}]`)), h("td", {}, input.dtype))),
        ),
        h("h3", {}, "Default configuration"),
        keyValues(a.default_config, "no options"),
      ),
    ),
  );
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

async function jobsPage(who) {
  if (!can(who, "admin")) {
    replace(main, h("h1", {}, "Jobs"), h("p", { class: "muted" }, "Jobs across models need a token with the admin scope."));
    return;
  }
  const status = h(
    "select",
    { id: "job-status", "aria-label": "Status" },
    ["", "queued", "running", "succeeded", "failed"].map((s) => h("option", { value: s }, s || "any status")),
  );
  const slot = h("div", { "aria-live": "polite" });
  let timer = null;
  const load = async () => {
    clearTimeout(timer);
    const jobs = await getAll("/v1/jobs", { status: status.value }, 2);
    jobs.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    replace(slot, jobs.length ? jobsTable(jobs) : h("p", { class: "muted" }, "No jobs."));
    if (jobs.some((j) => j.status === "queued" || j.status === "running")) timer = setTimeout(load, 2000);
  };
  status.addEventListener("change", load);
  replace(main, h("h1", {}, "Jobs"), h("div", { class: "search" }, status), slot);
  await load();
}

async function route() {
  let who = null;
  try {
    who = await whoami();
  } catch (error) {
    nav(null);
    if (error.status !== 401) {
      replace(main, errorBox(error, "The server did not answer as expected"));
      return;
    }
    if (location.pathname !== "/ui/signin") {
      const message = token.get() ? error.message : null;
      token.clear();
      signinPage(message);
      return;
    }
  }
  nav(who);
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "signin") signinPage(null);
    else if (parts.length === 0) await modelsPage(main, who);
    else if (parts[0] === "architectures") await architecturesPage();
    else if (parts[0] === "jobs") await jobsPage(who);
    else if (parts[0] === "models" && parts.length === 1) await modelsPage(main, who);
    else if (parts[0] === "models" && parts.length === 2) await modelPage(main, who, parts[1]);
    else if (parts[0] === "models" && parts.length === 4 && parts[2] === "versions") await versionPage(main, who, parts[1], parts[3]);
    else replace(main, h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", { href: "/ui/" }, "See all models.")));
  } catch (error) {
    if (error.status === 401) {
      token.clear();
      signinPage(error.message);
      return;
    }
    replace(main, errorBox(error, error.status === 404 ? "Not found" : "Error"));
  }
  document.documentElement.dataset.ready = "true";
}

route();
