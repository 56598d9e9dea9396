// The customer portal: reads the session token, applies the platform's theme, and routes
// `#/…` to the views. Served by the API under /portal/ (api/routes/portal.py).

import { ApiError, claimsOf, takeToken, useSession } from "./api.js";
import { destinationView, formView, listView } from "./destinations.js";
import { el, notice } from "./ui.js";

const ROUTES = [
  [/^#\/?$/, listView],
  [/^#\/new$/, formView],
  [/^#\/d\/([^/]+)$/, destinationView, ["id"]],
  [/^#\/d\/([^/]+)\/edit$/, formView, ["id"]],
];

const main = document.getElementById("main");
let ended = false;
let pendingNotice = null;

function safeUrl(value, schemes) {
  try {
    const url = new URL(String(value));
    return schemes.includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** The platform's name, logo, colour and return link, from the token's (unverified) claims:
 * display only, each value checked before use. */
function applyTheme(claims) {
  const theme = claims.theme && typeof claims.theme === "object" ? claims.theme : {};
  const name = typeof theme.name === "string" && theme.name.trim() ? theme.name.trim() : "";
  if (name) {
    document.getElementById("brand-name").textContent = `${name} · Webhook settings`;
    document.title = `Webhook settings · ${name}`;
  }
  const color = typeof theme.primary_color === "string" ? theme.primary_color.trim() : "";
  if (color && window.CSS.supports("color", color)) {
    document.documentElement.style.setProperty("--primary", color);
  }
  const logo = safeUrl(theme.logo_url, ["https:"]);
  if (logo) {
    const img = document.getElementById("logo");
    img.src = logo;
    img.alt = name ? `${name} logo` : "";
    img.hidden = false;
  }
  const back = safeUrl(claims.return_url, ["https:", "http:"]);
  if (back) {
    const link = document.getElementById("back");
    link.href = back;
    link.textContent = name ? `Back to ${name}` : "Back";
    link.hidden = false;
  }
}

function endSession(title, message) {
  ended = true;
  main.replaceChildren(el("h1", { tabindex: "-1" }, title), el("p", {}, message));
  main.querySelector("h1").focus();
}

function expired() {
  endSession("Session expired",
    "This page's session has expired or is no longer valid. Open the portal again from your "
    + "account to start a new session.");
}

/** Go to `hash`, then show `message` on the page it renders. */
function navigate(hash, message) {
  pendingNotice = message || null;
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

async function route() {
  if (ended) return;
  const hash = window.location.hash || "#/";
  for (const [pattern, view, names = []] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(match[i + 1])]));
    main.setAttribute("aria-busy", "true");
    try {
      await view(main, params, navigate);
    } catch (error) {
      if (ended) return;
      if (!(error instanceof ApiError)) throw error;
      const missing = error.status === 404;
      main.replaceChildren(el("h1", { tabindex: "-1" }, missing ? "Not found" : "Something went wrong"),
        el("p", {}, missing ? "There is no such destination in your account." : error.message),
        el("p", {}, el("a", { href: "#/" }, "All destinations")));
    } finally {
      main.removeAttribute("aria-busy");
    }
    if (ended) return;
    if (pendingNotice) notice(pendingNotice);
    pendingNotice = null;
    main.querySelector("h1")?.focus();
    return;
  }
  window.location.hash = "#/";
}

function start() {
  const token = takeToken();
  if (!token) {
    endSession("No session",
      "Open this page through the link your account gives you: it carries a session for you.");
    return;
  }
  const claims = claimsOf(token);
  applyTheme(claims);
  useSession(token, expired);
  if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
    expired();
    return;
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
