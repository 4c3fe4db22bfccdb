// The public JSON API, called as any client would: the token (pasted by the user, kept in this tab's
// sessionStorage) goes in the Authorization header, never in a URL or a cookie.

const TOKEN_KEY = "weightvault.token";
const SCOPES = ["read", "write", "admin"];

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {
      code: status ? `http_${status}` : "network_error",
      message: status ? `The server answered ${status}.` : "The server could not be reached.",
      details: {},
    };
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

export function authHeaders() {
  const value = token.get();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

export const enc = encodeURIComponent;

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params) => api("GET", path + query(params));

// Every page of a list (the server caps a page at 500 items).
export async function getAll(path, params, maxPages = 20) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const data = await get(path, { ...params, limit: 500, cursor });
    items.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return items;
}

let whoPromise = null;

export function whoami() {
  if (!whoPromise) whoPromise = get("/v1/auth/whoami");
  return whoPromise;
}

export function can(who, scope) {
  return Boolean(who) && SCOPES.indexOf(who.scope) >= SCOPES.indexOf(scope);
}

// Downloads carry the token too, so they are fetched and handed to the browser as a file.
export async function download(url, filename) {
  let response;
  try {
    response = await fetch(url, { headers: authHeaders(), cache: "no-store" });
  } catch {
    throw new ApiError(0, null);
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    throw new ApiError(response.status, data);
  }
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}
