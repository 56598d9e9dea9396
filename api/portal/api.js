// The portal session: the token from the URL fragment, its claims (display only), and
// calls to the /v2 API with it. The server verifies the token on every call.

const STORAGE_KEY = "herald.portal.token";

/** The session token: taken from `#token=…` once (then removed from the address bar, so it
 * is neither bookmarked nor shared by copying the URL), kept in sessionStorage for reloads. */
export function takeToken() {
  const hash = window.location.hash;
  if (hash.startsWith("#token=")) {
    const token = decodeURIComponent(hash.slice("#token=".length));
    if (token) window.sessionStorage.setItem(STORAGE_KEY, token);
    window.history.replaceState(null, "", window.location.pathname + window.location.search + "#/");
  }
  return window.sessionStorage.getItem(STORAGE_KEY);
}

/** The JWT's payload, decoded without verifying it: only for the theme, the return link and
 * the expiry shown; an opaque token (an API key) has no claims. */
export function claimsOf(token) {
  const parts = String(token || "").split(".");
  if (parts.length !== 3) return {};
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = window.atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

/** A refused call: the HTTP status and the API's error body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(messageOf(status, body));
    this.status = status;
    this.body = body || {};
  }
}

function messageOf(status, body) {
  if (body && Array.isArray(body.errors) && body.errors[0] && body.errors[0].message) {
    return body.errors[0].message;
  }
  if (body && body.title) return body.title;
  return `Herald answered ${status}.`;
}

let sessionToken = null;
let onExpired = () => {};

/** Start calling the API with `token`; `expired` runs when the API answers 401. */
export function useSession(token, expired) {
  sessionToken = token;
  onExpired = expired;
}

/** One API call: the parsed JSON body, or an ApiError (401 also ends the session). */
export async function call(method, path, { body, query } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: `Bearer ${sessionToken}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, { title: "Herald could not be reached. Check your connection." });
  }
  const text = await response.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = {};
  }
  if (response.status === 401) onExpired();
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}
