// A small tus 1.0 client (core + creation + termination) for the browser, written for weightvault's
// endpoint: POST creates, HEAD answers Upload-Offset, PATCH appends a slice, DELETE ends. The file goes in
// PATCH slices (Blob.slice, XMLHttpRequest for upload progress); on a dropped connection it HEADs the upload
// and resumes from the server's offset, a few times with backoff. The upload's URL is kept in this tab's
// sessionStorage under the file's fingerprint, so dropping the same file again after a reload resumes.

import { ApiError } from "./api.js";

const TUS_VERSION = "1.0.0";
const STORE_PREFIX = "weightvault.upload:";
export const DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024;
export const DEFAULT_RETRY_DELAYS = [1000, 3000, 6000, 12000];

// 0: no answer (network); 423: another PATCH of this upload still runs; 429/5xx: try again later.
const RETRIABLE = new Set([0, 408, 423, 429, 500, 502, 503, 504]);

export class AbortedError extends Error {
  constructor() {
    super("The upload was cancelled.");
    this.aborted = true;
  }
}

// The key a re-drop of the same file finds: model, name, size and modification time.
export function fingerprint(model, file) {
  return STORE_PREFIX + JSON.stringify([model, file.name, file.size, file.lastModified]);
}

function recall(key) {
  try {
    const entry = JSON.parse(sessionStorage.getItem(key) || "null");
    return entry && typeof entry.url === "string" ? entry : null;
  } catch {
    return null;
  }
}

function remember(key, entry) {
  try {
    sessionStorage.setItem(key, JSON.stringify(entry));
  } catch {
    // Storage full or disabled: the upload still works, it just cannot resume after a reload.
  }
}

export function forget(key) {
  sessionStorage.removeItem(key);
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

// Keep every request on this origin (the CSP allows no other): a Location naming another host (a proxy
// that rewrote it, say) is used by its path only.
function sameOrigin(location) {
  const url = new URL(location, window.location.href);
  return url.pathname + url.search;
}

async function answerBody(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class TusUpload {
  // options: endpoint (POST URL), file, key (fingerprint), metadata (object of text values for
  // Upload-Metadata), headers() (auth headers), chunkBytes, retryDelays, and callbacks onProgress(sent,
  // total), onResume(offset), onRetry({attempt, of, delay, offset, error}).
  constructor(options) {
    this.options = options;
    this.file = options.file;
    this.chunkBytes = Math.max(1, options.chunkBytes || DEFAULT_CHUNK_BYTES);
    this.retryDelays = options.retryDelays || DEFAULT_RETRY_DELAYS;
    this.url = null;
    this.xhr = null;
    this.aborted = false;
  }

  headers(extra) {
    return { "Tus-Resumable": TUS_VERSION, ...this.options.headers(), ...extra };
  }

  metadataHeader() {
    return Object.entries(this.options.metadata || {})
      .filter(([, value]) => value !== undefined && value !== null)
      .map(([key, value]) => `${key} ${base64(String(value))}`)
      .join(",");
  }

  async request(method, url, headers) {
    let response;
    try {
      response = await fetch(url, { method, headers: this.headers(headers), cache: "no-store" });
    } catch {
      throw new ApiError(0, null);
    }
    if (!response.ok) throw new ApiError(response.status, method === "HEAD" ? null : await answerBody(response));
    return response;
  }

  async create() {
    const headers = { "Upload-Length": String(this.file.size), Accept: "application/json" };
    const metadata = this.metadataHeader();
    if (metadata) headers["Upload-Metadata"] = metadata;
    const response = await this.request("POST", this.options.endpoint, headers);
    const location = response.headers.get("Location");
    if (!location) throw new ApiError(response.status, { error: { code: "no_location", message: "The server answered no Location for the upload.", details: {} } });
    return sameOrigin(location);
  }

  async head() {
    const response = await this.request("HEAD", this.url);
    const offset = Number(response.headers.get("Upload-Offset"));
    if (!Number.isSafeInteger(offset) || offset < 0) throw new ApiError(0, null);
    return offset;
  }

  patch(offset) {
    const end = Math.min(offset + this.chunkBytes, this.file.size);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open("PATCH", this.url);
      const headers = this.headers({ "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream", Accept: "application/json" });
      for (const [key, value] of Object.entries(headers)) xhr.setRequestHeader(key, value);
      xhr.upload.addEventListener("progress", (event) => this.progress(offset + Math.min(event.loaded, end - offset)));
      xhr.addEventListener("load", () => {
        this.xhr = null;
        if (xhr.status === 204) {
          const next = Number(xhr.getResponseHeader("Upload-Offset"));
          if (Number.isSafeInteger(next) && next >= offset) resolve(next);
          else reject(new ApiError(0, null));
          return;
        }
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = null;
        }
        reject(new ApiError(xhr.status, body));
      });
      xhr.addEventListener("error", () => {
        this.xhr = null;
        reject(new ApiError(0, null));
      });
      xhr.addEventListener("abort", () => {
        this.xhr = null;
        reject(new AbortedError());
      });
      xhr.send(this.file.slice(offset, end));
    });
  }

  progress(sent) {
    if (this.options.onProgress) this.options.onProgress(sent, this.file.size);
  }

  // Send every byte; resolves with the upload's URL once the server has acknowledged the last one (the
  // server ingests the file before it answers that PATCH).
  async start() {
    const { key } = this.options;
    const metadata = this.metadataHeader();
    const size = this.file.size;
    let offset = 0;
    let needHead = false;
    const stored = recall(key);
    if (stored && stored.metadata === metadata) {
      this.url = stored.url;
      needHead = true;
    } else if (stored) {
      // The same file with other metadata is another upload: end the old one.
      this.url = stored.url;
      this.terminate();
      this.url = null;
    }
    let attempt = 0;
    let mismatches = 0;
    let resumed = false;
    for (;;) {
      if (this.aborted) throw new AbortedError();
      try {
        if (!this.url) {
          this.url = await this.create();
          remember(key, { url: this.url, metadata });
          offset = 0;
          this.progress(0);
        } else if (needHead) {
          offset = await this.head();
          needHead = false;
          this.progress(offset);
          if (!resumed && stored && this.url === stored.url && offset > 0 && this.options.onResume) this.options.onResume(offset);
          resumed = true;
          // Everything arrived before (the answer to the last PATCH was lost): the outcome tells the rest.
          if (offset >= size && size > 0) return this.url;
        }
        offset = await this.patch(offset);
        attempt = 0;
        this.progress(offset);
        if (offset >= size) return this.url;
      } catch (error) {
        if (error.aborted || this.aborted) throw new AbortedError();
        if (error.code === "upload_finished") return this.url; // ingesting, done or failed already
        if ([404, 410].includes(error.status) && this.url) {
          forget(key);
          if (offset === 0 && needHead) {
            // A remembered upload that is gone (expired, deleted): start a new one.
            this.url = null;
            needHead = false;
            continue;
          }
          throw error;
        }
        if (error.code === "offset_mismatch" && mismatches < 5) {
          mismatches += 1;
          needHead = true;
          continue;
        }
        if (!RETRIABLE.has(error.status) || attempt >= this.retryDelays.length) throw error;
        const delay = this.retryDelays[attempt];
        attempt += 1;
        if (this.options.onRetry) this.options.onRetry({ attempt, of: this.retryDelays.length, delay, offset, error });
        await sleep(delay);
        if (this.url) needHead = true;
      }
    }
  }

  // The upload's state and outcome ({state, version, error}); waits while the server is still ingesting.
  async outcome() {
    let attempt = 0;
    for (;;) {
      if (this.aborted) throw new AbortedError();
      try {
        const response = await this.request("GET", this.url, { Accept: "application/json" });
        const data = await response.json();
        if (data.state === "done" || data.state === "failed") {
          forget(this.options.key);
          return data;
        }
        if (data.state === "receiving" && data.offset < data.length) {
          throw new ApiError(0, { error: { code: "upload_incomplete", message: `The server has ${data.offset} of ${data.length} bytes; drop the same file again to resume.`, details: {} } });
        }
        attempt = 0;
        await sleep(1000);
      } catch (error) {
        if (error.aborted || this.aborted) throw new AbortedError();
        if (!RETRIABLE.has(error.status) || attempt >= this.retryDelays.length) throw error;
        await sleep(this.retryDelays[attempt]);
        attempt += 1;
      }
    }
  }

  // Stop sending; with terminate, also end the upload on the server (its bytes are freed).
  abort(terminate) {
    this.aborted = true;
    if (this.xhr) this.xhr.abort();
    if (terminate) {
      forget(this.options.key);
      this.terminate();
    }
  }

  terminate() {
    if (!this.url) return;
    fetch(this.url, { method: "DELETE", headers: this.headers(), cache: "no-store" }).catch(() => {});
  }
}
