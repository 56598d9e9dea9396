// The create-destination form, derived from the API's own OpenAPI spec (/openapi.json):
// the types, each type's fields, which are required, their descriptions and enums, and
// which are credentials (writeOnly). A new type or field in the spec needs no change here.

const CREATE_PATH = "/v2/event-destinations";
// The spec marks an alias by its description ("Alias of `key`; give one or the other."):
// the form shows only the canonical name.
const ALIAS = /^Alias of `[a-z_]+`/;
// Chosen by Herald or by the form itself, never typed.
const NOT_TYPED = new Set(["id", "type"]);

let loaded = null;

/** The spec, fetched once (it needs no token). */
export async function loadSpec() {
  if (!loaded) {
    loaded = fetch("/openapi.json", { headers: { Accept: "application/json" } }).then((r) => {
      if (!r.ok) throw new Error(`openapi.json answered ${r.status}`);
      return r.json();
    });
  }
  return loaded;
}

function resolver(spec) {
  const pointer = (ref) => ref.slice(2).split("/").reduce(
    (node, key) => (node == null ? node : node[key.replace(/~1/g, "/").replace(/~0/g, "~")]),
    spec);
  return (node) => {
    for (let hops = 0; node && typeof node.$ref === "string" && hops < 20; hops++) {
      node = pointer(node.$ref);
    }
    return node || {};
  };
}

/** How a property is edited: a select, a number, a secret, a list, a map or JSON. */
function kindOf(property) {
  const types = [].concat(property.type || []);
  if (property.enum) return "select";
  if (types.includes("integer") || types.includes("number")) return "number";
  if (types.includes("string") && property.writeOnly) return "secret";
  if (types.includes("string")) return "text";
  if (types.includes("array")) return "list";
  // A map of strings (metadata, custom headers); any other object (a content filter) is JSON.
  const values = property.additionalProperties;
  if (types.includes("object") && !property.properties && values
      && [].concat(values.type || []).includes("string")) return "map";
  return "json";
}

const ACRONYMS = { url: "URL", id: "ID", json: "JSON", sasl: "SASL", api: "API" };

/** `service_account_json` → "Service account JSON". */
function labelOf(name) {
  const words = name.split("_").map((word) => ACRONYMS[word] || word);
  return words.join(" ").replace(/^./, (c) => c.toUpperCase());
}

function field(path, name, raw, required, resolve) {
  const property = resolve(raw);
  return {
    path,
    name,
    label: labelOf(name),
    required,
    description: property.description || "",
    enum: property.enum || null,
    default: property.default,
    kind: kindOf(property),
    // custom_headers' values are write-only though the map is not marked so.
    secretValues: /values are write-only/i.test(property.description || ""),
    numberType: [].concat(property.type || []).includes("integer") ? "integer" : "number",
  };
}

function fieldsOf(schema, prefix, resolve) {
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {})
    .filter(([, raw]) => !ALIAS.test(resolve(raw).description || ""))
    .map(([name, raw]) => field(prefix + name, name, raw, required.has(name), resolve));
}

// Sentences of a config object's description that speak to API callers about the request's
// shape ("Provide this object under the `webhook` property …"), which the form handles.
const REQUEST_SHAPE = /^(Configuration for an? `|Provide this object under)/;

function customerNotes(description) {
  return String(description || "").split(/(?<=\.)\s+/)
    .filter((sentence) => !REQUEST_SHAPE.test(sentence)).join(" ");
}

/** The form's description: `types` (each with its description and config `fields`) and the
 * `common` fields every type shares (name, events …), in the spec's order. */
export function destinationForm(spec) {
  const resolve = resolver(spec);
  const body = resolve(spec.paths[CREATE_PATH].post.requestBody);
  const create = resolve(body.content["application/json"].schema);
  const typeProperty = resolve(create.properties.type);
  const typeNames = typeProperty.enum || [];
  const required = new Set(create.required || []);
  const common = Object.entries(create.properties)
    .filter(([name]) => !NOT_TYPED.has(name) && !typeNames.includes(name))
    .map(([name, raw]) => field(name, name, raw, required.has(name), resolve));
  const types = typeNames.map((name) => {
    const config = resolve(create.properties[name]);
    return {
      name,
      description: customerNotes(config.description),
      fields: fieldsOf(config, `${name}.`, resolve),
    };
  });
  return { common, types, defaultType: typeProperty.default || typeNames[0] };
}
