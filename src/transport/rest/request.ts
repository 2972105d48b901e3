// Request assembly: path variables, query parameters and the JSON body become the proto3 JSON
// of the request message, following the binding's rule. The result is canonical (JSON field
// names, upper-case enum names) so that Connect's own `fromJson` parses it once; we never build
// the message here. Everything a client can get wrong that Connect would only report as a vague
// parse error (unknown fields, case-insensitive enums, a query parameter for a bound field,
// nesting depth) is refused here with a precise message.
import type { DescEnum, DescField, DescMessage, JsonObject, JsonValue } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import type { RestBinding } from "./router.js";

/** A refusal of the request itself: becomes 400 with ErrorInfo REQUEST_MALFORMED. */
export class RequestError extends Error {
  constructor(
    message: string,
    /** The offending field or parameter, for a google.rpc.BadRequest field violation. */
    readonly field?: string,
  ) {
    super(message);
    this.name = "RequestError";
  }
}

export const DEFAULT_MAX_JSON_DEPTH = 64;

// --- descriptor lookups, cached per message -----------------------------------------------------

const fieldMaps = new WeakMap<DescMessage, Map<string, DescField>>();

/** The field named `name` by its JSON name or its proto name. */
export function fieldByName(desc: DescMessage, name: string): DescField | undefined {
  let m = fieldMaps.get(desc);
  if (!m) {
    m = new Map();
    for (const f of desc.fields) {
      m.set(f.name, f);
      m.set(f.jsonName, f);
    }
    fieldMaps.set(desc, m);
  }
  return m.get(name);
}

const enumMaps = new WeakMap<DescEnum, Map<string, string>>();

/** The canonical value name for `name`, matched exactly, then case-insensitively. */
function enumName(desc: DescEnum, name: string): string | undefined {
  let m = enumMaps.get(desc);
  if (!m) {
    m = new Map();
    for (const v of desc.values) m.set(v.name.toUpperCase(), v.name);
    enumMaps.set(desc, m);
  }
  return m.get(name.toUpperCase());
}

/** Well-known types with a JSON form other than an object of fields: passed through to fromJson. */
const OPAQUE_WKT = new Set([
  "google.protobuf.Any",
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
  "google.protobuf.FieldMask",
  "google.protobuf.Struct",
  "google.protobuf.Value",
  "google.protobuf.ListValue",
  "google.protobuf.Empty",
]);
const WRAPPERS: Record<string, ScalarType> = {
  "google.protobuf.DoubleValue": ScalarType.DOUBLE,
  "google.protobuf.FloatValue": ScalarType.FLOAT,
  "google.protobuf.Int64Value": ScalarType.INT64,
  "google.protobuf.UInt64Value": ScalarType.UINT64,
  "google.protobuf.Int32Value": ScalarType.INT32,
  "google.protobuf.UInt32Value": ScalarType.UINT32,
  "google.protobuf.BoolValue": ScalarType.BOOL,
  "google.protobuf.StringValue": ScalarType.STRING,
  "google.protobuf.BytesValue": ScalarType.BYTES,
};
/** Message types a query parameter or path value may set, from their JSON string form. */
const STRING_WKT = new Set(["google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"]);

// --- body ---------------------------------------------------------------------------------------

/**
 * Parses a request body. Throws RequestError for malformed JSON. (V8's JSON.parse is iterative,
 * so hostile nesting cannot overflow the stack here; depth is bounded by `canonicalMessage`.)
 */
export function parseJsonBody(text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new RequestError(`malformed JSON body: ${(e as Error).message}`);
  }
}

/**
 * Checks `value` against `desc` and returns a canonical copy: keys are JSON names, enum strings
 * are canonical value names; unknown fields, duplicate fields (`tenant_id` and `tenantId`),
 * unknown enum names and nesting deeper than `maxDepth` are refused. Values whose type the walk
 * does not need to know (numbers, strings, well-known types) are left to fromJson.
 */
export function canonicalMessage(
  desc: DescMessage,
  value: JsonValue,
  at: string,
  depth: number,
  maxDepth: number,
): JsonValue {
  if (depth > maxDepth) throw new RequestError(`JSON nesting deeper than ${maxDepth} levels`, at || undefined);
  if (OPAQUE_WKT.has(desc.typeName) || WRAPPERS[desc.typeName] !== undefined) {
    checkDepth(value, depth, maxDepth, at);
    return value;
  }
  if (value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new RequestError(`${at || "body"}: expected a JSON object for ${desc.typeName}`, at || undefined);
  }
  const out: JsonObject = {};
  for (const [key, v] of Object.entries(value)) {
    const name = at ? `${at}.${key}` : key;
    const f = fieldByName(desc, key);
    if (!f) throw new RequestError(`unknown field "${name}" for ${desc.typeName}`, name);
    if (Object.hasOwn(out, f.jsonName)) throw new RequestError(`field "${name}" is given twice`, name);
    out[f.jsonName] = canonicalField(f, v, name, depth + 1, maxDepth);
  }
  return out;
}

function canonicalField(f: DescField, v: JsonValue, at: string, depth: number, maxDepth: number): JsonValue {
  if (v === null) return null;
  switch (f.fieldKind) {
    case "scalar":
      return v;
    case "enum":
      return canonicalEnum(f.enum, v, at);
    case "message":
      return canonicalMessage(f.message, v, at, depth, maxDepth);
    case "list": {
      if (!Array.isArray(v)) throw new RequestError(`${at}: expected a JSON array`, at);
      if (f.listKind === "enum") return v.map((x) => canonicalEnum(f.enum, x, at));
      if (f.listKind === "message")
        return v.map((x, i) => canonicalMessage(f.message, x, `${at}[${i}]`, depth, maxDepth));
      return v;
    }
    case "map": {
      if (typeof v !== "object" || Array.isArray(v)) throw new RequestError(`${at}: expected a JSON object`, at);
      if (f.mapKind === "scalar") return v;
      const out: JsonObject = {};
      for (const [k, x] of Object.entries(v)) {
        out[k] =
          f.mapKind === "enum"
            ? canonicalEnum(f.enum, x, `${at}.${k}`)
            : canonicalMessage(f.message, x, `${at}.${k}`, depth, maxDepth);
      }
      return out;
    }
  }
}

function canonicalEnum(desc: DescEnum, v: JsonValue, at: string): JsonValue {
  if (typeof v !== "string") return v; // numbers (and null for NullValue) are fromJson's business
  const name = enumName(desc, v);
  if (name === undefined) throw new RequestError(`${at}: "${v}" is not a value of ${desc.typeName}`, at);
  return name;
}

/** Iterative, so that a deep Struct cannot overflow the stack either. */
function checkDepth(value: JsonValue, depth: number, maxDepth: number, at: string): void {
  const stack: [JsonValue, number][] = [[value, depth]];
  while (stack.length > 0) {
    const [v, d] = stack.pop() as [JsonValue, number];
    if (v === null || typeof v !== "object") continue;
    if (d > maxDepth) throw new RequestError(`JSON nesting deeper than ${maxDepth} levels`, at || undefined);
    for (const x of Array.isArray(v) ? v : Object.values(v)) stack.push([x, d + 1]);
  }
}

// --- query string -------------------------------------------------------------------------------

/**
 * Splits a query string into decoded pairs. Unlike URLSearchParams it refuses malformed escapes
 * instead of passing them through. `+` is a space (HTML form encoding, which clients send).
 */
export function parseQuery(query: string): [string, string][] {
  const out: [string, string][] = [];
  if (query === "") return out;
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? "" : part.slice(eq + 1);
    out.push([decodeQueryPart(k), decodeQueryPart(v)]);
  }
  return out;
}

function decodeQueryPart(s: string): string {
  const plus = s.includes("+") ? s.replace(/\+/g, " ") : s;
  if (!plus.includes("%")) return plus;
  try {
    if (/%(?![0-9A-Fa-f]{2})/.test(plus)) throw new Error();
    return decodeURIComponent(plus);
  } catch {
    throw new RequestError(`malformed percent-encoding in query string: "${s}"`);
  }
}

/** Converts a path or query string value to the JSON value fromJson expects for a singular field. */
export function jsonOfString(f: DescField, value: string, at: string): JsonValue {
  if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")) {
    const desc = f.enum as DescEnum;
    if (/^-?\d+$/.test(value)) return Number(value);
    return canonicalEnum(desc, value, at);
  }
  const scalar = f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar") ? f.scalar : undefined;
  if (scalar !== undefined) return scalarOfString(scalar, value, at);
  const message =
    f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f.message : undefined;
  if (message) {
    if (STRING_WKT.has(message.typeName)) return value;
    const wrapped = WRAPPERS[message.typeName];
    if (wrapped !== undefined) return scalarOfString(wrapped, value, at);
  }
  throw new RequestError(`${at}: this field cannot be set from a query parameter`, at);
}

function scalarOfString(t: ScalarType, value: string, at: string): JsonValue {
  if (t === ScalarType.BOOL) {
    if (value === "true" || value === "false") return value === "true";
    throw new RequestError(`${at}: expected true or false, got "${value}"`, at);
  }
  // Numbers stay strings: proto3 JSON accepts them for every numeric type, int64 stays exact,
  // and fromJson checks the range. Bytes are base64 text already.
  return value;
}

// --- assembly -----------------------------------------------------------------------------------

/**
 * The request message's proto3 JSON for `binding`, from the decoded path variables, the raw
 * query string and the parsed body (undefined when the request had none).
 */
export function assembleRequest(
  binding: RestBinding,
  vars: ReadonlyMap<string, string>,
  query: string,
  body: JsonValue | undefined,
  maxDepth = DEFAULT_MAX_JSON_DEPTH,
): JsonObject {
  const input = binding.method.input;
  let root: JsonObject = {};

  if (binding.body === "*") {
    if (body !== undefined) {
      const c = canonicalMessage(input, body, "", 0, maxDepth);
      if (c === null) throw new RequestError("body: expected a JSON object, got null");
      root = c as JsonObject;
    }
  } else if (binding.body !== "") {
    if (body !== undefined)
      root[binding.body.jsonName] = canonicalField(binding.body, body, binding.body.name, 1, maxDepth);
  } else if (body !== undefined) {
    throw new RequestError(`${binding.httpMethod} ${binding.template.source} takes no request body`);
  }

  // Path variables; with `body: "*"` the body may repeat a path-bound value, but not contradict it.
  for (const [name, value] of vars) {
    const fields = binding.pathFields.get(name) as readonly DescField[];
    const leaf = fields[fields.length - 1] as DescField;
    const target = containerFor(root, fields, name);
    const json = jsonOfString(leaf, value, name);
    const existing = target[leaf.jsonName];
    if (existing !== undefined && existing !== null && String(existing) !== String(json)) {
      throw new RequestError(`field "${name}" is bound by the path; the body gives another value`, name);
    }
    target[leaf.jsonName] = json;
  }

  // Query parameters: only for fields the path and body leave unbound.
  const pairs = parseQuery(query);
  if (pairs.length > 0) {
    const seen = new Set<string>();
    for (const [key, value] of pairs) {
      const fields = resolveQueryField(input, key);
      const dotted = fields.map((f) => f.name).join(".");
      if (binding.body === "*") throw new RequestError(`query parameter "${key}": the body binds every field`, key);
      if (binding.body !== "" && fields[0] === binding.body) {
        throw new RequestError(`query parameter "${key}" targets the body field "${binding.body.name}"`, key);
      }
      for (const bound of binding.pathFields.keys()) {
        if (dotted === bound || dotted.startsWith(`${bound}.`) || bound.startsWith(`${dotted}.`)) {
          throw new RequestError(`query parameter "${key}" targets the path-bound field "${bound}"`, key);
        }
      }
      const leaf = fields[fields.length - 1] as DescField;
      const target = containerFor(root, fields, key);
      const json = jsonOfString(leaf, value, key);
      if (leaf.fieldKind === "list") {
        const list = target[leaf.jsonName];
        if (Array.isArray(list)) list.push(json);
        else target[leaf.jsonName] = [json];
      } else {
        if (seen.has(dotted)) throw new RequestError(`query parameter "${key}" is given twice`, key);
        target[leaf.jsonName] = json;
      }
      seen.add(dotted);
    }
  }
  return root;
}

/** Resolves `a.b.c` (JSON or proto names) to fields; the intermediate ones must be singular messages. */
function resolveQueryField(input: DescMessage, key: string): DescField[] {
  const out: DescField[] = [];
  let msg: DescMessage | undefined = input;
  for (const part of key.split(".")) {
    const f: DescField | undefined = msg ? fieldByName(msg, part) : undefined;
    if (!f) throw new RequestError(`unknown query parameter "${key}"`, key);
    out.push(f);
    msg =
      f.fieldKind === "message" && !STRING_WKT.has(f.message.typeName) && !WRAPPERS[f.message.typeName]
        ? f.message
        : undefined;
  }
  const leaf = out[out.length - 1] as DescField;
  if (leaf.fieldKind === "map")
    throw new RequestError(`query parameter "${key}": map fields cannot be set from the query`, key);
  return out;
}

/** The JSON object that holds the last of `fields`, creating the intermediate objects. */
function containerFor(root: JsonObject, fields: readonly DescField[], at: string): JsonObject {
  let obj = root;
  for (let i = 0; i < fields.length - 1; i++) {
    const f = fields[i] as DescField;
    let next = obj[f.jsonName];
    if (next === undefined || next === null) obj[f.jsonName] = next = {};
    if (typeof next !== "object" || Array.isArray(next)) throw new RequestError(`${at}: conflicts with the body`, at);
    obj = next;
  }
  return obj;
}
