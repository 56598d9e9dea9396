// Small DOM helpers shared by the views: every API string enters the page as text, never
// as HTML.

/** An element with attributes (`on…` become listeners) and children (strings as text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Text with `backticks` shown as code (the spec's descriptions use them). */
export function prose(text) {
  const parts = String(text || "").split("`");
  return parts.map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

/** A flash message at the top of the main area, for what an action did. */
export function notice(message, kind = "ok") {
  const main = document.getElementById("main");
  main.querySelectorAll(".notice").forEach((old) => old.remove());
  const box = el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    message);
  const heading = main.querySelector("h1");
  if (heading) (heading.closest(".page-head") || heading).after(box);
  else main.prepend(box);
  return box;
}

let dialogCount = 0;

/** A modal dialog; resolves with the value of the button pressed (null on Escape). Focus
 * moves into it (to the element marked autofocus, else its first button) and back to
 * whatever had it when it closes. */
export function dialog(title, content, buttons) {
  const opener = document.activeElement;
  const headingId = `dialog-title-${++dialogCount}`;
  return new Promise((resolve) => {
    const box = el("dialog", { "aria-labelledby": headingId, class: "dialog" });
    const actions = el("div", { class: "actions" }, buttons.map((button) => el("button", {
      type: "button",
      class: button.class || "",
      autofocus: button.autofocus || false,
      onclick: () => box.close(button.value),
    }, button.label)));
    box.append(el("h2", { id: headingId }, title), ...[].concat(content), actions);
    box.addEventListener("close", () => {
      const value = box.returnValue || null;
      box.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(value);
    });
    document.body.append(box);
    box.showModal();
    const first = box.querySelector("[autofocus]") || box.querySelector("button");
    if (first) first.focus();
  });
}

/** Ask before something that cannot be undone; true when confirmed. */
export async function confirmAction(title, message, confirmLabel) {
  const value = await dialog(title, el("p", {}, message), [
    { label: "Cancel", value: "cancel", autofocus: true },
    { label: confirmLabel, value: "confirm", class: "danger" },
  ]);
  return value === "confirm";
}

/** Show a new signing secret this once, with a copy button. */
export async function showSecret(title, secret, explanation) {
  const field = el("input", { id: "new-secret", readonly: true, value: secret,
    class: "secret", spellcheck: "false", autocomplete: "off" });
  const copy = el("button", { type: "button", onclick: async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(secret);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Select and copy it";
    }
  } }, "Copy");
  await dialog(title, [
    ...[].concat(explanation).map((text) => el("p", {}, text)),
    el("label", { for: "new-secret" }, "Signing secret"),
    el("div", { class: "copy-row" }, field, copy),
    el("p", { class: "hint" }, "It is shown only this once: store it now."),
  ], [{ label: "I have stored it", value: "done", autofocus: false }]);
}

const STATUS_LABELS = {
  pending_verification: "Pending verification",
  active: "Active",
  pending: "Pending",
  retrying: "Retrying",
  succeeded: "Succeeded",
  failed: "Failed",
  canceled: "Canceled",
};

/** A destination's status as words: inactive says whether the user or Herald disabled it. */
export function destinationStatus(destination) {
  if (destination.status !== "inactive") {
    return STATUS_LABELS[destination.status] || destination.status;
  }
  return disabledByHerald(destination) ? "Auto-disabled" : "Disabled";
}

// The reasons a user's own disable records; any other reason is Herald's (a 410 Gone, too
// many deliveries dead-lettered in a row …), shown beside the status.
const USER_REASONS = new Set(["disabled", "disabled by user"]);

/** True if Herald disabled this inactive destination on its own; its reason says why. */
export function disabledByHerald(destination) {
  return destination.status === "inactive"
    && !USER_REASONS.has(destination.status_reason || "disabled");
}

/** A status badge element. */
export function badge(text, status) {
  return el("span", { class: `badge status-${status}` }, text);
}

/** A delivery status as words. */
export function deliveryStatus(status) {
  return STATUS_LABELS[status] || status;
}

/** A timestamp in the reader's locale, with the ISO value as the machine-readable time. */
export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return el("time", { datetime: iso }, Number.isNaN(date.getTime()) ? iso : date.toLocaleString());
}
