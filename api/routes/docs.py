"""GET /openapi.json (the spec) and GET /docs (a self-contained page that renders it)."""

from __future__ import annotations

import base64
import functools
import hashlib

import orjson
from aiohttp import web

from api.openapi import build_spec

routes = web.RouteTableDef()

# Inlined so the page works offline: no CDN, no web fonts, nothing fetched but the spec.
STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; }
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 72rem;
  padding: 0 1.5rem 4rem; }
header { border-bottom: 1px solid var(--line); margin-bottom: 1rem; }
nav a { margin-right: 1rem; }
h2 { border-bottom: 1px solid var(--line); margin-top: 2.5rem; }
h4 { margin: 1rem 0 .25rem; }
code { font: 13px ui-monospace, monospace; }
.prose p { margin: .25rem 0; }
.muted, .notes { color: var(--muted); font-size: 13px; }
details.op { border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0; }
details.op > summary { cursor: pointer; padding: .5rem .75rem; }
details.op > div { padding: 0 .75rem .75rem; }
.method { border-radius: 4px; color: #fff; display: inline-block; font: bold 12px monospace;
  margin-right: .5rem; padding: 2px 6px; text-align: center; width: 4rem; }
.get { background: #2b6cb0; } .post { background: #2f855a; } .patch { background: #b7791f; }
.put { background: #6b46c1; } .delete { background: #c53030; }
.path { font-weight: bold; margin-right: .75rem; }
table { border-collapse: collapse; margin: .25rem 0; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left;
  vertical-align: top; }
th { font-size: 13px; }
section.schema { margin-bottom: 1.5rem; }
"""

SCRIPT = r"""
"use strict";
(() => {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  const SCHEMAS = "#/components/schemas/";
  const main = document.getElementById("content");
  let spec = {};

  // Every spec string enters the page through append() as a text node, never as HTML.
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child !== null && child !== undefined && child !== "") node.append(child);
    }
    return node;
  }

  function link(anchor, text) {
    const a = el("a", null, text);
    a.href = "#" + anchor;
    return a;
  }

  function slug(text) {
    return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-");
  }

  // Descriptions: paragraphs split on blank lines, `backticks` shown as code.
  function prose(text) {
    const box = el("div", "prose");
    for (const para of String(text || "").split(/\n\s*\n/)) {
      if (!para.trim()) continue;
      const p = el("p");
      para.split("`").forEach((part, i) => p.append(i % 2 ? el("code", null, part) : part));
      box.append(p);
    }
    return box;
  }

  function pointer(ref) {
    if (!ref.startsWith("#/")) return undefined;
    return ref.slice(2).split("/").reduce(
      (node, key) => (node == null ? node : node[key.replace(/~1/g, "/").replace(/~0/g, "~")]),
      spec);
  }

  function resolve(node) {
    for (let hops = 0; node && typeof node.$ref === "string" && hops < 20; hops++) {
      node = pointer(node.$ref);
    }
    return node || {};
  }

  function refLabel(ref) {
    if (!ref.startsWith(SCHEMAS)) return ref.split("/").pop();
    const [name, ...rest] = ref.slice(SCHEMAS.length).split("/");
    if (rest.length === 0) return link("schema-" + slug(name), name);
    const target = resolve({ $ref: ref });
    if (!target.properties) return typeLabel(target);  // a plain field shared with another schema
    return link("schema-" + slug(name), name + "." + rest.filter((_, i) => i % 2).join("."));
  }

  function typeLabel(schema) {
    const span = el("span", "type");
    if (!schema) return span;
    if (schema.$ref) {
      span.append(refLabel(schema.$ref));
      return span;
    }
    const choices = schema.allOf || schema.oneOf || schema.anyOf;
    if (choices) {
      choices.forEach((choice, i) => {
        if (i) span.append(schema.allOf ? " & " : " | ");
        span.append(typeLabel(choice));
      });
      return span;
    }
    const types = [].concat(schema.type || (schema.properties ? "object" : "any"));
    types.forEach((type, i) => {
      if (i) span.append(" | ");
      if (type === "array") span.append("array of ", typeLabel(schema.items));
      else span.append(schema.format ? type + " (" + schema.format + ")" : type);
    });
    return span;
  }

  function notes(schema) {
    const out = [];
    if (schema.writeOnly) out.push("write-only");
    if (schema.enum) out.push("one of: " + schema.enum.join(", "));
    if (schema.const !== undefined) out.push("always " + JSON.stringify(schema.const));
    if (schema.default !== undefined) out.push("default: " + JSON.stringify(schema.default));
    if (schema.minimum !== undefined || schema.maximum !== undefined) {
      out.push("range: " + (schema.minimum ?? "") + " to " + (schema.maximum ?? ""));
    }
    if (schema.minItems !== undefined || schema.maxItems !== undefined) {
      out.push("items: " + (schema.minItems ?? 0) + " to " + (schema.maxItems ?? "any"));
    }
    if (schema.maxLength !== undefined) out.push("at most " + schema.maxLength + " characters");
    if (schema.pattern) out.push("pattern: " + schema.pattern);
    return out.length ? el("div", "notes", out.join(" · ")) : null;
  }

  function table(headings, rows) {
    const head = el("tr");
    for (const text of headings) head.append(el("th", null, text));
    return el("table", null, el("thead", null, head), el("tbody", null, ...rows));
  }

  function propertyRows(schema, prefix, depth, rows) {
    const resolved = resolve(schema);
    for (const part of (resolved.allOf || [resolved]).map(resolve)) {
      const required = new Set(part.required || []);
      for (const [name, raw] of Object.entries(part.properties || {})) {
        const prop = resolve(raw);
        rows.push(el("tr", null,
          el("td", null, el("code", null, prefix + name)),
          el("td", null, typeLabel(raw)),
          el("td", null, required.has(name) ? "required" : ""),
          el("td", null, prose(prop.description), notes(prop))));
        if (!raw.$ref && prop.properties && depth < 3) {
          propertyRows(prop, prefix + name + ".", depth + 1, rows);
        }
      }
    }
    return rows;
  }

  function parameters(pathItem, op) {
    const params = [...(pathItem.parameters || []), ...(op.parameters || [])].map(resolve);
    if (!params.length) return null;
    const rows = params.map((p) => el("tr", null,
      el("td", null, el("code", null, p.name)),
      el("td", null, p.in),
      el("td", null, typeLabel(p.schema)),
      el("td", null, p.required ? "required" : ""),
      el("td", null, prose(p.description), notes(resolve(p.schema)))));
    return el("div", null, el("h4", null, "Parameters"),
      table(["Name", "In", "Type", "Required", "Description"], rows));
  }

  // Media types that share a schema are listed together.
  function bodies(content) {
    const groups = new Map();
    for (const [mediaType, media] of Object.entries(content || {})) {
      const key = JSON.stringify(media.schema || null);
      if (!groups.has(key)) groups.set(key, { types: [], schema: media.schema });
      groups.get(key).types.push(mediaType);
    }
    const box = el("div");
    for (const { types, schema } of groups.values()) {
      box.append(el("div", null, el("code", null, types.join(", ")), " — ", typeLabel(schema)));
    }
    return box;
  }

  function requestBody(op) {
    if (!op.requestBody) return null;
    const body = resolve(op.requestBody);
    return el("div", null,
      el("h4", null, body.required ? "Request body" : "Request body (optional)"),
      prose(body.description), bodies(body.content));
  }

  function responses(op) {
    const rows = Object.entries(op.responses || {}).map(([status, raw]) => {
      const response = resolve(raw);
      return el("tr", null,
        el("td", null, el("code", null, status)),
        el("td", null, prose(response.description)),
        el("td", null, bodies(response.content)),
        el("td", "muted", Object.keys(response.headers || {}).join(", ")));
    });
    return el("div", null, el("h4", null, "Responses"),
      table(["Status", "Description", "Body", "Headers"], rows));
  }

  function operation(path, method, op, pathItem) {
    const security = op.security || spec.security || [];
    return el("details", "op",
      el("summary", null, el("span", "method " + method, method.toUpperCase()),
        el("code", "path", path), el("span", null, op.summary || "")),
      el("div", null,
        prose(op.description),
        el("p", "muted", security.length ? "Needs an API key." : "No API key needed."),
        parameters(pathItem, op), requestBody(op), responses(op)));
  }

  function operationsByTag() {
    const tags = new Map((spec.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
    for (const [path, pathItem] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        const op = pathItem[method];
        if (!op) continue;
        for (const name of op.tags && op.tags.length ? op.tags : ["Other"]) {
          if (!tags.has(name)) tags.set(name, { tag: { name }, ops: [] });
          tags.get(name).ops.push(operation(path, method, op, pathItem));
        }
      }
    }
    return [...tags.values()].filter((group) => group.ops.length);
  }

  function schemas() {
    const section = el("section", null, el("h2", null, "Schemas"));
    section.id = "schemas";
    for (const [name, schema] of Object.entries((spec.components || {}).schemas || {})) {
      const rows = propertyRows(schema, "", 0, []);
      const box = el("section", "schema", el("h3", null, name), prose(schema.description),
        rows.length ? table(["Field", "Type", "Required", "Description"], rows) : notes(schema));
      box.id = "schema-" + slug(name);
      section.append(box);
    }
    return section;
  }

  function render() {
    const info = spec.info || {};
    document.title = info.title || "API";
    document.getElementById("title").textContent = (info.title || "API") + " " +
      (info.version || "");
    const nav = document.getElementById("nav");
    main.replaceChildren(prose(info.description));
    for (const { tag, ops } of operationsByTag()) {
      const section = el("section", null, el("h2", null, tag.name), prose(tag.description), ...ops);
      section.id = "tag-" + slug(tag.name);
      main.append(section);
      nav.append(link(section.id, tag.name));
    }
    main.append(schemas());
    nav.append(link("schemas", "Schemas"));
  }

  fetch("openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then((loaded) => {
      spec = loaded;
      render();
    })
    .catch((error) => {
      main.replaceChildren(el("p", null, "Could not load openapi.json: " + error.message));
    });
})();
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API documentation</title>
<style>{style}</style>
</head>
<body>
<header><h1 id="title">API documentation</h1><nav id="nav" aria-label="Sections"></nav></header>
<main id="content"><p>Loading the API specification…</p>
<noscript><p>This page needs JavaScript; the specification itself is at
<a href="openapi.json">openapi.json</a>.</p></noscript></main>
<script>{script}</script>
</body>
</html>
"""


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


# Only this page's own script and style may run, and it may fetch only from this origin.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def spec_body() -> bytes:
    """The spec serialized once, as served at /openapi.json."""
    return orjson.dumps(build_spec())


@functools.cache
def docs_page() -> str:
    """The documentation page, built once."""
    return PAGE.format(style=STYLE, script=SCRIPT)


@routes.get("/openapi.json")
async def openapi_json(_: web.Request) -> web.Response:
    """The OpenAPI 3.1 spec of the whole API."""
    return web.Response(body=spec_body(), content_type="application/json")


@routes.get("/docs")
async def docs(_: web.Request) -> web.Response:
    """A page that fetches /openapi.json and renders it; works offline."""
    return web.Response(
        text=docs_page(), content_type="text/html", charset="utf-8", headers=DOCS_HEADERS
    )
