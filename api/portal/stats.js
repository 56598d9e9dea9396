// A destination's delivery chart (GET …/stats): deliveries that succeeded and failed per
// bucket, and the success rate, over the last 24 hours, 7 days or 30 days. An inline SVG
// drawn here (no library, no inline style: colours come from app.css classes), with a
// title and a description for screen readers and the same numbers as a table.

import { call } from "./api.js";
import { el } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
const RANGES = [
  { label: "24 h", hours: 24, bucket: "hour" },
  { label: "7 d", hours: 24 * 7, bucket: "hour" },
  { label: "30 d", hours: 24 * 30, bucket: "day" },
];
// The drawing's own units; the SVG scales to its container's width.
const WIDTH = 400;
const HEIGHT = 160;
const PAD = { top: 8, right: 42, bottom: 18, left: 30 };

/** An SVG element; children are elements or text. */
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function percent(rate) {
  return rate == null ? "—" : `${(rate * 100).toFixed(1)} %`;
}

function when(iso, bucket) {
  const date = new Date(iso);
  return bucket === "day" ? date.toLocaleDateString() : date.toLocaleString();
}

/** In words, what the chart shows (its description, and the line above it). */
function summary(totals) {
  const { succeeded, failed, success_rate: rate } = totals.deliveries;
  const latency = totals.latency_ms.p50 == null ? ""
    : `; attempt latency p50 ${Math.round(totals.latency_ms.p50)} ms, p95 ${Math.round(totals.latency_ms.p95)} ms`;
  return `${succeeded} succeeded, ${failed} failed, success rate ${percent(rate)}${latency}`;
}

function bar(bucket, index, step, max, plotHeight, label) {
  const { succeeded, failed } = bucket.deliveries;
  const x = PAD.left + index * step + step * 0.1;
  const width = Math.max(step * 0.8, 0.5);
  const okHeight = (succeeded / max) * plotHeight;
  const failedHeight = (failed / max) * plotHeight;
  const base = PAD.top + plotHeight;
  return svg("g", { class: "bar" },
    svg("title", {}, `${label}: ${succeeded} succeeded, ${failed} failed`),
    svg("rect", { class: "bar-ok", x, width, y: base - okHeight, height: okHeight }),
    svg("rect", { class: "bar-failed", x, width, y: base - okHeight - failedHeight, height: failedHeight }));
}

function axes(max, plotHeight) {
  const right = WIDTH - PAD.right;
  const base = PAD.top + plotHeight;
  return svg("g", { class: "axis", "aria-hidden": "true" },
    svg("line", { x1: PAD.left, x2: right, y1: base, y2: base }),
    svg("text", { x: PAD.left - 4, y: base, "text-anchor": "end" }, "0"),
    svg("text", { x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end" }, String(max)),
    svg("text", { x: right + 4, y: base }, "0 %"),
    svg("text", { x: right + 4, y: PAD.top + 8 }, "100 %"));
}

/** The chart of one response: stacked bars per bucket, the success rate as a line. */
function chart(stats, id) {
  const buckets = stats.buckets;
  const max = Math.max(1, ...buckets.map((b) => b.deliveries.succeeded + b.deliveries.failed));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const step = (WIDTH - PAD.left - PAD.right) / Math.max(1, buckets.length);
  const busy = buckets.map((b, i) => [b, i]).filter(([b]) => b.deliveries.succeeded + b.deliveries.failed);
  const rates = buckets.map((b, i) => [b.deliveries.success_rate, i]).filter(([rate]) => rate != null);
  const points = rates.map(([rate, i]) =>
    `${PAD.left + step * (i + 0.5)},${PAD.top + (1 - rate) * plotHeight}`).join(" ");
  const first = buckets[0] ? when(buckets[0].start, stats.bucket) : "";
  return svg("svg", {
    class: "stats-chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-labelledby": `${id}-title ${id}-desc`,
  },
  svg("title", { id: `${id}-title` }, "Deliveries that succeeded and failed, with the success rate"),
  svg("desc", { id: `${id}-desc` }, `Since ${first}: ${summary(stats.totals)}.`),
  axes(max, plotHeight),
  ...busy.map(([b, i]) => bar(b, i, step, max, plotHeight, when(b.start, stats.bucket))),
  rates.length ? svg("polyline", { class: "rate-line", points }) : "",
  ...rates.map(([rate, i]) => svg("circle", {
    class: "rate-dot", r: 1.8, cx: PAD.left + step * (i + 0.5), cy: PAD.top + (1 - rate) * plotHeight,
  })));
}

/** The table alternative: every bucket with a delivery that finished. */
function table(stats) {
  const rows = stats.buckets.filter((b) => b.deliveries.succeeded + b.deliveries.failed);
  if (!rows.length) return el("p", { class: "hint" }, "No delivery finished in this range.");
  const head = ["Time", "Succeeded", "Failed", "Success rate"];
  return el("div", { class: "table-wrap" }, el("table", { class: "attempts stats-table" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((b) => el("tr", {},
      el("td", { "data-label": "Time" }, when(b.start, stats.bucket)),
      el("td", { "data-label": "Succeeded" }, String(b.deliveries.succeeded)),
      el("td", { "data-label": "Failed" }, String(b.deliveries.failed)),
      el("td", { "data-label": "Success rate" }, percent(b.deliveries.success_rate)))))));
}

/** The section on a destination's page: range buttons, a summary, the chart, the table. */
export async function deliveryChart(destination) {
  const path = `/v2/event-destinations/${encodeURIComponent(destination.id)}/stats`;
  const body = el("div", { "aria-live": "polite" });
  const buttons = RANGES.map((range) => el("button", {
    type: "button", "aria-pressed": "false", onclick: () => show(range),
  }, range.label));
  // A range's button is pressed once its chart is drawn.
  async function show(range) {
    const to = new Date();
    const from = new Date(to.getTime() - range.hours * 3600 * 1000);
    const stats = await call("GET", path, {
      query: { from: from.toISOString(), to: to.toISOString(), bucket: range.bucket },
    });
    body.replaceChildren(
      el("p", { class: "stats-summary" }, summary(stats.totals)),
      chart(stats, `chart-${destination.id}`),
      el("p", { class: "legend", "aria-hidden": "true" },
        el("span", { class: "key key-ok" }), "Succeeded ",
        el("span", { class: "key key-failed" }), "Failed ",
        el("span", { class: "key key-rate" }), "Success rate"),
      el("details", {}, el("summary", {}, "Show as a table"), table(stats)));
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === range.label)));
  }
  await show(RANGES[0]);
  return el("section", { class: "stats", "aria-labelledby": "stats-heading" },
    el("div", { class: "stats-head" },
      el("h2", { id: "stats-heading" }, "Deliveries over time"),
      el("div", { class: "ranges", role: "group", "aria-label": "Time range" }, buttons)),
    body);
}
