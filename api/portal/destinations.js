// Destinations: the list, one destination with its actions, and the create/edit form.

import { ApiError, call } from "./api.js";
import { deliveryLog } from "./deliveries.js";
import {
  canClear, clearErrors, collect, errorsOf, fieldElement, inputErrors, showErrors,
} from "./form.js";
import { destinationForm, loadSpec } from "./schema.js";
import { deliveryChart } from "./stats.js";
import {
  badge, confirmAction, destinationStatus, dialog, disabledByHerald, el, notice, prose, showSecret,
  time,
} from "./ui.js";

const OVERLAP_EXPLAINED = "For the next 24 hours Herald signs every delivery with both the new "
  + "and the previous secret (two signatures in the webhook-signature header), so you can "
  + "switch your receiver over without rejecting anything. After 24 hours only the new secret signs.";

function heading(text) {
  return el("h1", { tabindex: "-1" }, text);
}

function target(destination) {
  const config = destination[destination.type] || {};
  const first = Object.values(config).find((value) => typeof value === "string" && value);
  return first || "";
}

function card(destination) {
  return el("li", { class: "card" },
    el("div", { class: "card-head" },
      el("h2", {}, el("a", { href: `#/d/${encodeURIComponent(destination.id)}` }, destination.name)),
      badge(destinationStatus(destination), destination.status)),
    el("p", { class: "meta" }, el("span", { class: "type" }, destination.type),
      target(destination) ? el("span", { class: "target" }, target(destination)) : ""),
    el("p", { class: "meta" }, "Events: ", destination.events.join(", ")),
    disabledByHerald(destination) ? el("p", { class: "meta" }, "Why: ", destination.status_reason) : "");
}

/** `#/`: the tenant's destinations, newest first, with more pages on request. */
export async function listView(main) {
  const list = el("ul", { class: "cards", "aria-label": "Destinations" });
  const more = el("button", { type: "button", hidden: true }, "Show more");
  let cursor = null;
  const load = async () => {
    const page = await call("GET", "/v2/event-destinations", { query: { limit: 50, cursor } });
    list.append(...page.data.map(card));
    cursor = page.next_cursor;
    more.hidden = !page.has_more;
    return page;
  };
  more.addEventListener("click", async () => {
    const shown = list.children.length;
    await load();
    list.children[shown]?.querySelector("a")?.focus();  // the first of the new ones
  });
  const first = await load();
  main.replaceChildren(
    el("div", { class: "page-head" }, heading("Destinations"),
      el("a", { href: "#/new", class: "button primary" }, "Add destination")),
    first.data.length ? list : el("p", { class: "empty" },
      "No destinations yet. Add one to start receiving events."),
    more);
}

function details(destination) {
  const config = destination[destination.type] || {};
  const rows = [
    ["Type", destination.type],
    ...(disabledByHerald(destination) ? [["Disabled because", destination.status_reason]] : []),
    ["Events", destination.events.join(", ")],
    ...(destination.filter ? [["Filter", JSON.stringify(destination.filter)]] : []),
    ...Object.entries(config).map(([name, value]) => [name.replace(/_/g, " "),
      Array.isArray(value) ? value.join(", ") || "—" : String(value ?? "—")]),
    ["Rate limit", destination.rate_limit ? `${destination.rate_limit} per second` : "none"],
    ["Ordering", destination.ordering === "per_key" ? "per key, in publish order" : "none"],
    ["Description", destination.description || "—"],
    ["Created", time(destination.created_at)],
    ["Id", destination.id],
  ];
  return el("dl", { class: "details" }, rows.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

/** Run an action's API call, render the page again and say what happened; the focus goes
 * back to the action's button (Enable becomes Disable: the same data-action), not to the
 * top of the page the render replaced. */
async function act(action, render, success) {
  const key = document.activeElement?.dataset?.action;
  try {
    const result = await action();
    await render();
    if (success) notice(typeof success === "function" ? success(result) : success);
    if (key) document.querySelector(`[data-action="${key}"]`)?.focus();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notice(error.message, "error");
  }
}

function actions(destination, render, navigate) {
  const path = `/v2/event-destinations/${encodeURIComponent(destination.id)}`;
  const inactive = destination.status === "inactive";
  const buttons = [
    el("a", { class: "button", href: `#/d/${encodeURIComponent(destination.id)}/edit` }, "Edit"),
    el("button", { type: "button", "data-action": "toggle", onclick: () => act(
      () => call("POST", `${path}/${inactive ? "enable" : "disable"}`), render,
      inactive ? "Enabled." : "Disabled: nothing is delivered until you enable it again.") },
    inactive ? "Enable" : "Disable"),
    el("button", { type: "button", "data-action": "test", onclick: () => act(
      () => call("POST", `${path}/test`), render,
      (event) => `Test event ${event.id} sent; it appears in the delivery log below.`) },
    "Send test event"),
  ];
  if (!inactive) {  // an inactive destination recovers through Enable (recover_since)
    buttons.push(el("button", { type: "button", "data-action": "recover",
      onclick: () => recover(destination, path, render) }, "Recover failed deliveries"));
  }
  if (destination.type === "webhook") {
    buttons.push(el("button", { type: "button", onclick: () => rotate(destination, path) },
      "Rotate signing secret"));
  }
  buttons.push(el("button", { type: "button", class: "danger", onclick: async () => {
    if (!await confirmAction(`Delete ${destination.name}?`,
      "Nothing more is delivered to it, and this cannot be undone.", "Delete")) return;
    try {
      await call("DELETE", path);
      navigate("#/", `Deleted ${destination.name}.`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      notice(error.message, "error");
    }
  } }, "Delete"));
  return el("div", { class: "actions", role: "group", "aria-label": "Actions" }, buttons);
}

/** `datetime-local`'s value (local time, to the minute) for a moment in ms. */
function localInput(ms) {
  return new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}

/** After an outage: every delivery that failed since a chosen time is attempted once more,
 * in publish order (POST …/recover); the notice says how many. */
async function recover(destination, path, render) {
  const since = el("input", { id: "recover-since", type: "datetime-local",
    value: localInput(Date.now() - 24 * 3600 * 1000) });
  const choice = await dialog("Recover failed deliveries", [
    el("p", {}, `Each delivery to ${destination.name} that failed (ran out of retries) `
      + "since this time is attempted once more, in the order its events were published."),
    el("label", { for: "recover-since" }, "Failed since"),
    since,
  ], [
    { label: "Cancel", value: "cancel" },
    { label: "Recover", value: "recover", class: "primary" },
  ]);
  if (choice !== "recover") return;
  const start = new Date(since.value);
  if (Number.isNaN(start.getTime())) {
    notice("Choose the time from which to recover.", "error");
    return;
  }
  await act(() => call("POST", `${path}/recover`, { body: { since: start.toISOString() } }),
    render, (job) => `Recovery ${job.id} started: ${job.total} failed `
      + `${job.total === 1 ? "delivery is" : "deliveries are"} attempted again.`);
}

async function rotate(destination, path) {
  if (!await confirmAction("Rotate the signing secret?", OVERLAP_EXPLAINED, "Rotate")) return;
  try {
    const rotated = await call("POST", `${path}/rotate-secret`);
    await showSecret("New signing secret", rotated.webhook.secret, [
      `This is the new signing secret of ${destination.name}.`, OVERLAP_EXPLAINED]);
    notice("Signing secret rotated; the previous one keeps signing for 24 hours.");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    notice(error.message, "error");
  }
}

/** `#/d/<id>`: one destination, its actions, its delivery chart and its delivery log. */
export async function destinationView(main, { id }, navigate) {
  const path = `/v2/event-destinations/${encodeURIComponent(id)}`;
  const head = el("div");
  const render = async () => {
    const destination = await call("GET", path);
    head.replaceChildren(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Destinations")),
      el("div", { class: "page-head" }, heading(destination.name),
        badge(destinationStatus(destination), destination.status)),
      destination.description ? el("p", {}, destination.description) : "",
      details(destination),
      actions(destination, render, navigate));
    return destination;
  };
  const destination = await render();
  main.replaceChildren(head, await deliveryChart(destination), await deliveryLog(destination));
}

function typeSection(form, type, values, editing) {
  return el("fieldset", { class: "config" },
    el("legend", {}, `${type.name} settings`),
    type.description ? el("p", { class: "hint" }, prose(type.description)) : "",
    type.fields.map((field) => fieldElement(field, values?.[field.name], editing)));
}

function typeChooser(schema, onChange) {
  return el("div", { class: "field", "data-path": "type" },
    el("label", { for: "field-type" }, "Type"),
    el("select", { id: "field-type", name: "type", "aria-describedby": "field-type-error",
      onchange: (event) => onChange(event.target.value) },
    schema.types.map((type) => el("option", { value: type.name,
      selected: type.name === schema.defaultType }, type.name))),
    el("p", { id: "field-type-error", class: "field-error", hidden: true }));
}

/** `#/new` and `#/d/<id>/edit`: the form, derived from the API's schema. */
export async function formView(main, { id }, navigate) {
  const schema = destinationForm(await loadSpec());
  const existing = id ? await call("GET", `/v2/event-destinations/${encodeURIComponent(id)}`) : null;
  let type = schema.types.find((t) => t.name === (existing?.type || schema.defaultType));
  const form = el("form", { novalidate: true, class: "destination-form" });
  let config = typeSection(form, type, existing?.[type.name], Boolean(existing));
  const common = el("fieldset", {}, el("legend", {}, "Destination"),
    existing ? el("p", {}, `Type: ${existing.type}`) : typeChooser(schema, (name) => {
      type = schema.types.find((t) => t.name === name);
      const next = typeSection(form, type, null, false);
      config.replaceWith(next);
      config = next;
    }),
    schema.common.map((field) => fieldElement(field, existing?.[field.name], Boolean(existing))));
  const submit = el("button", { type: "submit", class: "primary" }, existing ? "Save changes" : "Create destination");
  const cancel = el("a", { class: "button", href: existing ? `#/d/${encodeURIComponent(id)}` : "#/" }, "Cancel");
  form.append(common, config, el("div", { class: "actions" }, submit, cancel));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      await save(form, schema, type, existing, navigate);
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(
    el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Destinations")),
    heading(existing ? `Edit ${existing.name}` : "Add destination"),
    form);
}

async function save(form, schema, type, existing, navigate) {
  // On PATCH, an optional field the customer emptied is removed (not kept as stored).
  const isSet = (value) => value != null && value !== "" && !(typeof value === "object"
    && Object.keys(value).length === 0);
  const clearable = new Set(existing ? schema.common.filter((f) => canClear(f)
    && isSet(existing[f.name])).map((f) => f.path) : []);
  let body;
  try {
    body = { ...collect(form, schema.common, clearable), ...collect(form, type.fields) };
  } catch (error) {
    const errors = inputErrors(error);
    if (!errors) throw error;
    showErrors(form, errors, "Please correct the fields below.");
    return;
  }
  if (!existing) body.type = type.name;
  body[type.name] ??= {};
  try {
    const saved = existing
      ? await call("PATCH", `/v2/event-destinations/${encodeURIComponent(existing.id)}`, { body })
      : await call("POST", "/v2/event-destinations", { body });
    if (saved.webhook?.secret) {
      await showSecret("Your signing secret", saved.webhook.secret, [
        "Herald signs every delivery to this webhook with this secret (Standard Webhooks): "
        + "use it to check that a request comes from us."]);
    }
    navigate(`#/d/${encodeURIComponent(saved.id)}`, existing ? "Saved." : `Created ${saved.name}.`);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401) throw error;
    const errors = errorsOf(error);
    delete errors[""];  // an unnamed refusal is the summary's message itself
    showErrors(form, errors,
      error.status === 400 ? "Please correct the fields below." : error.message);
  }
}
