// Form fields from the schema's descriptions (schema.js), the request body they make, and
// the API's refusals shown next to the field they name.

import { el, prose } from "./ui.js";

function inputId(path) {
  return `field-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
}

function shown(value) {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") return JSON.stringify(value, null, 2);
  return String(value);
}

function mapText(value) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return "";
  return Object.entries(value).map(([name, text]) => `${name}: ${text}`).join("\n");
}

function control(field, value, editing) {
  const id = inputId(field.path);
  const common = { id, name: field.path, "aria-describedby": `${id}-hint ${id}-error` };
  switch (field.kind) {
    case "select": {
      const chosen = shown(value ?? field.default);
      const options = field.required || field.default !== undefined ? [] : [el("option", { value: "" }, "—")];
      return el("select", common, options, field.enum.map((option) =>
        el("option", { value: option, selected: option === chosen }, option)));
    }
    case "number":
      return el("input", { ...common, type: "number", inputmode: "numeric", value: shown(value) });
    case "secret":
      // Write-only: a stored value is never shown, nor sent back by the API.
      return el("input", { ...common, type: "password", autocomplete: "new-password",
        placeholder: editing ? "Stored — type a new value to replace it" : "" });
    case "list":
      return el("input", { ...common, type: "text", value: shown(value), spellcheck: "false" });
    case "map":
      return el("textarea", { ...common, rows: 3, spellcheck: "false",
        placeholder: "name: value (one per line)" },
      field.secretValues ? "" : mapText(value));
    case "json":
      return el("textarea", { ...common, rows: 4, spellcheck: "false" },
        value === undefined || value === null ? "" : shown(value));
    default:
      return el("input", { ...common, type: "text", value: shown(value), spellcheck: "false",
        autocomplete: "off" });
  }
}

function hintFor(field, value, editing) {
  const extra = [];
  if (field.kind === "list") extra.push(" Separate several with commas.");
  if (field.kind === "secret" && editing) extra.push(" Leave empty to keep the stored value.");
  if (field.secretValues && editing) {
    const names = Array.isArray(value) ? value : [];
    extra.push(names.length
      ? ` Stored: ${names.join(", ")} (values hidden). Leave empty to keep them.`
      : " Leave empty to keep the stored ones.");
  }
  return [...prose(field.description), ...extra];
}

/** One labelled field: label, control, its description and a slot for the API's error. */
export function fieldElement(field, value, editing) {
  const id = inputId(field.path);
  return el("div", { class: "field", "data-path": field.path },
    el("label", { for: id }, field.label,
      field.required ? el("span", { class: "required" }, " (required)") : ""),
    control(field, value, editing),
    el("p", { id: `${id}-error`, class: "field-error", hidden: true }),
    el("p", { id: `${id}-hint`, class: "hint" }, hintFor(field, value, editing)));
}

class FormInputError extends Error {
  constructor(path, message) {
    super(message);
    this.errors = { [path]: [message] };
  }
}

function parseMap(path, text) {
  const map = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const colon = line.indexOf(":");
    if (colon < 1) throw new FormInputError(path, "Write each entry as name: value, one per line.");
    map[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return map;
}

function valueOf(field, raw) {
  switch (field.kind) {
    case "number": {
      const number = Number(raw);
      return Number.isFinite(number) ? number : raw;  // the API names what is wrong
    }
    case "list":
      return raw.split(",").map((item) => item.trim()).filter(Boolean);
    case "map":
      return parseMap(field.path, raw);
    case "json":
      try {
        return JSON.parse(raw);
      } catch {
        throw new FormInputError(field.path, "Must be valid JSON.");
      }
    default:
      return raw;
  }
}

function put(body, path, value) {
  const names = path.split(".");
  let node = body;
  for (const name of names.slice(0, -1)) node = node[name] ??= {};
  node[names.at(-1)] = value;
}

// What an emptied field sends on PATCH to remove its value (a rate limit, a description,
// metadata); a field not in `clearable` left empty keeps the stored value.
const CLEARED = { number: null, map: {}, text: null };

/** True for an optional field whose value an edit may remove by emptying it. */
export function canClear(field) {
  return !field.required && field.kind in CLEARED;
}

/** The request body from `fields`' inputs in `form`: empty inputs are left out, except the
 * ones named in `clearable` (sent as their kind's "nothing"). */
export function collect(form, fields, clearable = new Set()) {
  const body = {};
  for (const field of fields) {
    const input = form.elements.namedItem(field.path);
    if (!input) continue;
    const raw = input.value.trim();
    if (raw === "") {
      if (clearable.has(field.path)) put(body, field.path, CLEARED[field.kind] ?? null);
      continue;
    }
    put(body, field.path, valueOf(field, raw));
  }
  return body;
}

/** A form-side refusal (bad JSON, a map line without a colon) in the API's 400 shape. */
export function inputErrors(error) {
  return error instanceof FormInputError ? error.errors : null;
}

function matchField(form, name) {
  let best = null;
  for (const wrapper of form.querySelectorAll(".field[data-path]")) {
    const path = wrapper.dataset.path;
    if ((name === path || name.startsWith(`${path}.`) || name.startsWith(`${path}[`))
        && (!best || path.length > best.dataset.path.length)) best = wrapper;
  }
  return best;
}

/** `[0]` → "item 1", `.X-Foo` → "X-Foo": the part of a field an error names. */
function partName(rest) {
  return rest.replace(/^\./, "").replace(/\[(\d+)\]/g, (_, i) => `item ${Number(i) + 1} `).trim();
}

/** Clear what an earlier submit showed. */
export function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
  form.querySelectorAll(".error-summary").forEach((box) => box.remove());
}

/** Show the API's errors: each next to the field its dotted name points into (an error on
 * `webhook.custom_headers.X-Foo` goes to the custom headers field, `events[0]` to events),
 * the rest in a summary at
 * the top; focus moves to the first. `errors` is {name: [messages]}; `general` a message. */
export function showErrors(form, errors, general = "") {
  clearErrors(form);
  const unmatched = [];
  let first = null;
  for (const [name, messages] of Object.entries(errors || {})) {
    const wrapper = name ? matchField(form, name) : null;
    if (!wrapper) {
      unmatched.push(...[].concat(messages).map((m) => (name ? `${name}: ${m}` : m)));
      continue;
    }
    const slot = wrapper.querySelector(".field-error");
    const input = wrapper.querySelector("input, select, textarea");
    // A name deeper than the field (`events.1`, a header's name) says which part.
    const part = name === wrapper.dataset.path ? "" : `${partName(name.slice(wrapper.dataset.path.length))}: `;
    slot.textContent = [slot.textContent, ...[].concat(messages).map((m) => part + m)]
      .filter(Boolean).join(" ");
    slot.hidden = false;
    input.setAttribute("aria-invalid", "true");
    first ??= input;
  }
  const count = Object.keys(errors || {}).length - unmatched.length;
  const summary = el("div", { class: "error-summary", role: "alert", tabindex: "-1" },
    el("p", {}, general || "The request was refused."),
    count ? el("p", {}, count === 1 ? "One field needs attention." : `${count} fields need attention.`) : "",
    unmatched.length ? el("ul", {}, unmatched.map((m) => el("li", {}, m))) : "");
  form.prepend(summary);
  (first || summary).focus();
}

/** An ApiError's errors as {name: [messages]}: the 400's map, or an ErrorResponse's named
 * field. */
export function errorsOf(apiError) {
  const body = apiError.body || {};
  if (body.errors && !Array.isArray(body.errors)) return body.errors;
  const out = {};
  for (const item of Array.isArray(body.errors) ? body.errors : []) {
    (out[item.field || ""] ??= []).push(item.message);
  }
  return out;
}
