// A destination's delivery log: filters, pages, each delivery's attempts, retry and replay.

import { ApiError, call } from "./api.js";
import { loadSpec } from "./schema.js";
import { badge, deliveryStatus, el, notice, time } from "./ui.js";

// Deliveries that are over without success can be attempted again (the API says 409 else).
const RETRYABLE = new Set(["failed", "canceled"]);

function isoOrEmpty(localValue) {
  if (!localValue) return "";
  const date = new Date(localValue);  // datetime-local is the reader's local time
  return Number.isNaN(date.getTime()) ? localValue : date.toISOString();
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "hint" }, "No attempt yet.");
  const head = ["#", "Time", "Outcome", "Status code", "Latency", "Response"];
  return el("div", { class: "table-wrap" }, el("table", { class: "attempts" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, attempts.map((a) => el("tr", {},
      el("td", { "data-label": "#" }, String(a.attempt ?? "")),
      el("td", { "data-label": "Time" }, time(a.created_at)),
      el("td", { "data-label": "Outcome" }, a.outcome),
      el("td", { "data-label": "Status code" }, a.response_status == null ? "—" : String(a.response_status)),
      el("td", { "data-label": "Latency" }, a.latency_ms == null ? "—" : `${Math.round(a.latency_ms)} ms`),
      el("td", { "data-label": "Response" },
        a.error ? el("p", { class: "attempt-error" }, a.error) : "",
        a.response_body ? el("pre", { class: "excerpt" }, a.response_body) : (a.error ? "" : "—")))))));
}

function deliveryItem(delivery, destinationId, refresh) {
  const panelId = `attempts-${delivery.id}`;
  const panel = el("div", { id: panelId, class: "attempts-panel", hidden: true });
  const toggle = el("button", { type: "button", "aria-expanded": "false", "aria-controls": panelId },
    `Attempts (${delivery.attempt_count})`);
  toggle.addEventListener("click", async () => {
    const open = toggle.getAttribute("aria-expanded") === "true";
    if (open) {
      toggle.setAttribute("aria-expanded", "false");
      panel.hidden = true;
      return;
    }
    const full = await call("GET", `/v2/event-deliveries/${encodeURIComponent(delivery.id)}`);
    panel.replaceChildren(el("h3", {}, `Attempts of ${delivery.id}`), attemptsTable(full.attempts));
    panel.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
  });
  const buttons = [toggle];
  if (RETRYABLE.has(delivery.status)) {
    buttons.push(el("button", { type: "button", onclick: () => run(
      () => call("POST", `/v2/event-deliveries/${encodeURIComponent(delivery.id)}/retry`),
      refresh, "Retrying the delivery now.", delivery.id) }, "Retry"));
  }
  buttons.push(el("button", { type: "button", onclick: () => run(
    () => call("POST", `/v2/events/${encodeURIComponent(delivery.event_id)}/replay`,
      { body: { destination_id: destinationId } }),
    refresh, (r) => (r.skipped_destination_ids?.length
      ? "Not replayed: this event's delivery is still being attempted."
      : "Event replayed to this destination."), delivery.id) }, "Replay event"));
  return el("li", { class: "delivery", "data-delivery": delivery.id },
    el("div", { class: "delivery-head" },
      badge(deliveryStatus(delivery.status), delivery.status),
      el("span", { class: "event-type" }, delivery.event_type),
      el("span", { class: "meta" }, time(delivery.created_at))),
    el("p", { class: "meta" }, `Event ${delivery.event_id} · delivery ${delivery.id}`,
      delivery.next_attempt_at ? [" · next attempt ", time(delivery.next_attempt_at)] : ""),
    el("div", { class: "actions" }, buttons),
    panel);
}

/** Run a delivery's action, reload the page of the log and say what happened; the focus
 * goes back to that delivery's first button (its own was replaced by the reload). */
async function run(action, refresh, success, deliveryId) {
  try {
    const result = await action();
    await refresh();
    notice(typeof success === "function" ? success(result) : success);
    document.querySelector(`[data-delivery="${deliveryId}"] button`)?.focus();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notice(error.message, "error");
  }
}

function filterForm(statuses, apply) {
  const field = (id, label, control) => el("div", { class: "field" },
    el("label", { for: id }, label), control);
  const form = el("form", { class: "filters", novalidate: true, "aria-label": "Filter deliveries" },
    field("filter-status", "Status", el("select", { id: "filter-status", name: "status" },
      el("option", { value: "" }, "Any"),
      statuses.map((s) => el("option", { value: s }, deliveryStatus(s))))),
    field("filter-event-type", "Event type", el("input", { id: "filter-event-type",
      name: "event_type", type: "text", placeholder: "task_run.completed", spellcheck: "false" })),
    field("filter-from", "From", el("input", { id: "filter-from", name: "from", type: "datetime-local" })),
    field("filter-to", "To", el("input", { id: "filter-to", name: "to", type: "datetime-local" })),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary" }, "Apply filters"),
      el("button", { type: "reset" }, "Clear")));
  const read = () => ({
    status: form.elements.status.value,
    event_type: form.elements.event_type.value.trim(),
    created_after: isoOrEmpty(form.elements.from.value),
    created_before: isoOrEmpty(form.elements.to.value),
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(read()); });
  form.addEventListener("reset", () => window.setTimeout(() => apply(read()), 0));
  return form;
}

/** The delivery log section of a destination's page. */
export async function deliveryLog(destination) {
  const spec = await loadSpec();
  const statuses = spec.components?.schemas?.EventDeliveryStatus?.enum || [];
  const list = el("ul", { class: "deliveries", "aria-label": "Deliveries" });
  const status = el("p", { class: "hint", "aria-live": "polite" });
  const newer = el("button", { type: "button" }, "Newer");
  const older = el("button", { type: "button" }, "Older");
  const pageLabel = el("span", { class: "page-label" });
  let filters = {};
  const cursors = [null];  // the cursor of each page seen, for going back
  let next = null;
  const path = `/v2/event-destinations/${encodeURIComponent(destination.id)}/event-deliveries`;
  const load = async () => {
    const page = await call("GET", path, {
      query: { ...filters, limit: 20, cursor: cursors.at(-1) } }).catch((error) => {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      status.textContent = error.message;
      return null;
    });
    if (!page) return;
    next = page.has_more ? page.next_cursor : null;
    list.replaceChildren(...page.data.map((d) => deliveryItem(d, destination.id, load)));
    status.textContent = page.data.length ? "" : "No deliveries match.";
    newer.disabled = cursors.length === 1;
    older.disabled = !next;
    pageLabel.textContent = `Page ${cursors.length}`;
  };
  newer.addEventListener("click", () => { cursors.pop(); load(); });
  older.addEventListener("click", () => { if (next) { cursors.push(next); load(); } });
  const refresh = el("button", { type: "button", onclick: () => load() }, "Refresh");
  const form = filterForm(statuses, (chosen) => {
    filters = chosen;
    cursors.length = 1;
    load();
  });
  await load();
  return el("section", { class: "log", "aria-labelledby": "log-title" },
    el("div", { class: "page-head" }, el("h2", { id: "log-title" }, "Delivery log"), refresh),
    form, status, list,
    el("nav", { class: "pager", "aria-label": "Delivery log pages" }, newer, pageLabel, older));
}
