// OpenAPI 3.1 for the REST face, generated from the same descriptors and google.api.http rules
// the router serves, so the document cannot drift from the routes.
//
// API:
//   const doc = buildOpenApi({ services, comments, info, ... });   // a plain JSON object
//   const comments = commentsFromDescriptorSet(fromBinary(FileDescriptorSetSchema, bytes));
//
// It knows nothing about tenantd: authentication, extra header parameters and the error body are
// passed in. Schemas follow the proto3 JSON mapping (what the transcoder accepts and emits):
// 64-bit integers are strings, enums are their value names, maps are objects, well-known types
// have their special JSON forms. Choices a reader of the document should know:
// - every message and enum reachable from a route is a component named by its full proto name;
//   well-known types are inlined, since their JSON form is a string, a number or "any";
// - `body: "*"` gets an inline schema: the request message without the fields the path binds;
// - fields the path and body leave unbound are query parameters, named by proto field path
//   (`filter.status`); maps, Any, Struct and repeated messages cannot be set from a query
//   string, so they are not offered;
// - an additional binding gets operationId `<Service>_<Method>_<n>` (n from 2): OpenAPI requires
//   operation ids to be unique;
// - a path variable over several segments (`{name=shelves/*}`) is one parameter whose value
//   holds slashes; an unnamed `*` or `**` becomes a parameter `_segN` bound to no field.
import type { DescEnum, DescField, DescMessage, DescMethod, DescService, JsonObject } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import type { FileDescriptorSet, SourceCodeInfo_Location } from "@bufbuild/protobuf/wkt";
import { buildRouter, type RestBinding } from "./router.js";
import type { PathTemplate } from "./template.js";

export interface OpenApiOptions {
  services: readonly DescService[];
  info: { title: string; version: string; description?: string };
  /** Comments by full proto name (see commentsFromDescriptorSet); summaries and descriptions. */
  comments?: ReadonlyMap<string, string>;
  servers?: readonly JsonObject[];
  /** components.securitySchemes, e.g. `{ bearer: { type: "http", scheme: "bearer" } }`. */
  securitySchemes?: Record<string, JsonObject>;
  /** The document-wide security requirement, e.g. `[{ bearer: [] }]`. */
  security?: readonly JsonObject[];
  /** A method's own security requirement when it differs (e.g. `[]` for a public method). */
  operationSecurity?: (method: DescMethod) => readonly JsonObject[] | undefined;
  /** Extra parameter objects (headers) for every operation of a method. */
  parameters?: (method: DescMethod) => readonly JsonObject[];
  /** The message every error response carries (e.g. google.rpc.Status). */
  errorMessage?: DescMessage;
  /** Error responses every operation may answer, by HTTP status, e.g. `{ "404": { description } }`. */
  errorResponses?: Record<string, { description: string; headers?: Record<string, JsonObject> }>;
}

/** Descriptor path elements (google/protobuf/descriptor.proto field numbers). */
const FILE_MESSAGE = 4;
const FILE_ENUM = 5;
const FILE_SERVICE = 6;
const MESSAGE_FIELD = 2;
const MESSAGE_NESTED = 3;
const MESSAGE_ENUM = 4;
const ENUM_VALUE = 2;
const SERVICE_METHOD = 2;

/**
 * Comments of a descriptor set built with source info (`buf build`), by full name: messages and
 * enums (`pkg.Msg`, `pkg.Msg.Inner`), fields (`pkg.Msg.field`), enum values (`pkg.Msg.Enum.VALUE`,
 * scoped by the enum unlike proto's own C++ scoping), services (`pkg.Service`) and methods
 * (`pkg.Service.Method`). Leading comments win; a trailing comment is used when there is none.
 */
export function commentsFromDescriptorSet(set: FileDescriptorSet): Map<string, string> {
  const out = new Map<string, string>();
  for (const file of set.file) {
    const byPath = new Map<string, SourceCodeInfo_Location>();
    for (const loc of file.sourceCodeInfo?.location ?? []) byPath.set(loc.path.join("."), loc);
    const put = (name: string, path: number[]) => {
      const loc = byPath.get(path.join("."));
      const text = cleanComment(loc?.leadingComments || loc?.trailingComments || "");
      if (text !== "") out.set(name, text);
    };
    const prefix = file.package ? `${file.package}.` : "";
    const putEnum = (e: (typeof file.enumType)[number], name: string, path: number[]) => {
      put(name, path);
      e.value.forEach((v, i) => {
        put(`${name}.${v.name}`, [...path, ENUM_VALUE, i]);
      });
    };
    const putMessage = (m: (typeof file.messageType)[number], name: string, path: number[]) => {
      put(name, path);
      m.field.forEach((f, i) => {
        put(`${name}.${f.name}`, [...path, MESSAGE_FIELD, i]);
      });
      m.nestedType.forEach((n, i) => {
        putMessage(n, `${name}.${n.name}`, [...path, MESSAGE_NESTED, i]);
      });
      m.enumType.forEach((e, i) => {
        putEnum(e, `${name}.${e.name}`, [...path, MESSAGE_ENUM, i]);
      });
    };
    file.messageType.forEach((m, i) => {
      putMessage(m, prefix + m.name, [FILE_MESSAGE, i]);
    });
    file.enumType.forEach((e, i) => {
      putEnum(e, prefix + e.name, [FILE_ENUM, i]);
    });
    file.service.forEach((s, i) => {
      put(prefix + s.name, [FILE_SERVICE, i]);
      s.method.forEach((m, j) => {
        put(`${prefix}${s.name}.${m.name}`, [FILE_SERVICE, i, SERVICE_METHOD, j]);
      });
    });
  }
  return out;
}

/** protoc keeps the space after `//` on every line; paragraphs and line breaks stay as written. */
function cleanComment(raw: string): string {
  return raw
    .split("\n")
    .map((l) => (l.startsWith(" ") ? l.slice(1) : l).trimEnd())
    .join("\n")
    .trim();
}

/** The first sentence (or first paragraph, if it has no full stop), on one line. */
function summaryOf(text: string): string {
  const para = (text.split(/\n\s*\n/, 1)[0] ?? "").replace(/\s+/g, " ").trim();
  const m = /^(.+?[.!?])(\s|$)/.exec(para);
  return m?.[1] ?? para;
}

const COMPONENT_PREFIX = "#/components/schemas/";

// Well-known types with a special proto3 JSON form: inlined instead of becoming components.
const WKT_SCHEMAS: Record<string, () => JsonObject> = {
  "google.protobuf.Timestamp": () => ({
    type: "string",
    format: "date-time",
    description: "RFC 3339 time in UTC, e.g. `2024-01-31T12:00:00Z`.",
  }),
  "google.protobuf.Duration": () => ({
    type: "string",
    pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$",
    description: "Seconds with an `s` suffix, e.g. `1.5s`.",
  }),
  "google.protobuf.FieldMask": () => ({
    type: "string",
    description: "Comma-separated field paths in lowerCamelCase, e.g. `name,metadata`.",
  }),
  "google.protobuf.Struct": () => ({ type: "object", additionalProperties: true }),
  "google.protobuf.Value": () => ({ description: "Any JSON value." }),
  "google.protobuf.ListValue": () => ({ type: "array", items: {} }),
  "google.protobuf.Empty": () => ({ type: "object", additionalProperties: false }),
  "google.protobuf.Any": () => ({
    type: "object",
    description: "A message of the type that `@type` names, with that message's fields.",
    properties: { "@type": { type: "string", description: "`type.googleapis.com/<full message name>`" } },
    required: ["@type"],
    additionalProperties: true,
  }),
  "google.protobuf.DoubleValue": () => scalarSchema(ScalarType.DOUBLE),
  "google.protobuf.FloatValue": () => scalarSchema(ScalarType.FLOAT),
  "google.protobuf.Int64Value": () => scalarSchema(ScalarType.INT64),
  "google.protobuf.UInt64Value": () => scalarSchema(ScalarType.UINT64),
  "google.protobuf.Int32Value": () => scalarSchema(ScalarType.INT32),
  "google.protobuf.UInt32Value": () => scalarSchema(ScalarType.UINT32),
  "google.protobuf.BoolValue": () => scalarSchema(ScalarType.BOOL),
  "google.protobuf.StringValue": () => scalarSchema(ScalarType.STRING),
  "google.protobuf.BytesValue": () => scalarSchema(ScalarType.BYTES),
};

/** Well-known types a query parameter can carry (their JSON form is a string or a scalar). */
const QUERY_WKT = new Set([
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
  "google.protobuf.FieldMask",
  ...Object.keys(WKT_SCHEMAS).filter((n) => n.endsWith("Value") && n !== "google.protobuf.Value"),
]);

function scalarSchema(t: ScalarType): JsonObject {
  switch (t) {
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", format: "byte", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "int64", minimum: 0, maximum: 4294967295 };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      // proto3 JSON writes 64-bit integers as strings so that no JSON parser rounds them.
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
    default:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
  }
}

export function buildOpenApi(opts: OpenApiOptions): JsonObject {
  const comments = opts.comments ?? new Map<string, string>();
  const schemas: Record<string, JsonObject> = {};
  const pending: (DescMessage | DescEnum)[] = [];
  const named = new Set<string>();

  const describe = (schema: JsonObject, name: string): JsonObject => {
    const c = comments.get(name);
    return c === undefined ? schema : { ...schema, description: c };
  };

  /** A $ref to a component, queued for generation. */
  const refTo = (desc: DescMessage | DescEnum): JsonObject => {
    if (!named.has(desc.typeName)) {
      named.add(desc.typeName);
      pending.push(desc);
    }
    return { $ref: COMPONENT_PREFIX + desc.typeName };
  };

  const messageSchema = (desc: DescMessage): JsonObject => {
    const wkt = WKT_SCHEMAS[desc.typeName];
    return wkt ? wkt() : refTo(desc);
  };

  const valueSchema = (f: DescField): JsonObject => {
    switch (f.fieldKind) {
      case "scalar":
        return scalarSchema(f.scalar);
      case "enum":
        return refTo(f.enum);
      case "message":
        return messageSchema(f.message);
      case "list": {
        const item =
          f.listKind === "scalar"
            ? scalarSchema(f.scalar)
            : f.listKind === "enum"
              ? refTo(f.enum)
              : messageSchema(f.message);
        return { type: "array", items: item };
      }
      case "map": {
        const value =
          f.mapKind === "scalar"
            ? scalarSchema(f.scalar)
            : f.mapKind === "enum"
              ? refTo(f.enum)
              : messageSchema(f.message);
        const keys: JsonObject | undefined =
          f.mapKey === ScalarType.STRING
            ? undefined
            : f.mapKey === ScalarType.BOOL
              ? { enum: ["true", "false"] }
              : { pattern: "^-?[0-9]+$" };
        return { type: "object", additionalProperties: value, ...(keys ? { propertyNames: keys } : {}) };
      }
    }
  };

  const fieldSchema = (f: DescField): JsonObject => {
    const schema = valueSchema(f);
    const c = comments.get(`${f.parent.typeName}.${f.name}`);
    let description = c ?? "";
    if (f.oneof) {
      const note = `Member of oneof \`${f.oneof.name}\`: at most one of ${f.oneof.fields.map((x) => `\`${x.jsonName}\``).join(", ")} is set.`;
      description = description ? `${description}\n\n${note}` : note;
    }
    if (description === "") return schema;
    // A sibling of $ref is allowed in 3.1 (JSON Schema 2020-12), so descriptions stay on the field.
    return { ...schema, description };
  };

  const objectSchema = (desc: DescMessage, skip: ReadonlySet<string> = new Set()): JsonObject => {
    const properties: Record<string, JsonObject> = {};
    for (const f of desc.fields) if (!skip.has(f.name)) properties[f.jsonName] = fieldSchema(f);
    return { type: "object", properties };
  };

  const enumSchema = (desc: DescEnum): JsonObject => {
    const lines = desc.values.map((v) => {
      const c = comments.get(`${desc.typeName}.${v.name}`);
      return `- \`${v.name}\`${c ? `: ${c.replace(/\s*\n\s*/g, " ")}` : ""}`;
    });
    const head = comments.get(desc.typeName);
    return {
      type: "string",
      enum: desc.values.map((v) => v.name),
      description: [head, lines.join("\n")].filter(Boolean).join("\n\n"),
    };
  };

  // --- parameters -------------------------------------------------------------------------------

  const pathOf = (t: PathTemplate): { path: string; params: JsonObject[] } => {
    const parts: string[] = [];
    const params: JsonObject[] = [];
    const segs = t.segments;
    let synthetic = 0;
    for (let i = 0; i < segs.length; ) {
      const v = t.variables.find((x) => x.start === i);
      if (v) {
        const name = v.fieldPath.join(".");
        const end = v.end ?? segs.length;
        const pattern = segs
          .slice(i, end)
          .map((s) => (s.kind === "literal" ? s.value : s.kind === "wildcard" ? "*" : "**"))
          .join("/");
        parts.push(`{${name}}`);
        params.push({ name, pattern: pattern === "*" ? "" : pattern });
        i = end;
        continue;
      }
      const s = segs[i] as PathTemplate["segments"][number];
      if (s.kind === "literal") parts.push(s.value);
      else {
        synthetic++;
        parts.push(`{_seg${synthetic}}`);
        params.push({ name: `_seg${synthetic}`, pattern: s.kind === "wildcard" ? "*" : "**", synthetic: true });
      }
      i++;
    }
    return { path: `/${parts.join("/")}${t.verb ? `:${t.verb}` : ""}`, params };
  };

  const pathParams = (b: RestBinding, params: JsonObject[]): JsonObject[] =>
    params.map((p) => {
      const name = p.name as string;
      const fields = b.pathFields.get(name);
      const leaf = fields?.[fields.length - 1];
      const base: JsonObject = leaf ? valueSchema(leaf) : { type: "string" };
      const notes: string[] = [];
      const c = leaf ? comments.get(`${leaf.parent.typeName}.${leaf.name}`) : undefined;
      if (c) notes.push(c);
      if (p.pattern) {
        notes.push(
          p.synthetic
            ? `Matches \`${p.pattern}\`; not bound to a request field.`
            : `Matches \`${p.pattern}\` (the value spans path segments).`,
        );
      }
      return {
        name,
        in: "path",
        required: true,
        schema: base,
        ...(notes.length > 0 ? { description: notes.join("\n\n") } : {}),
      };
    });

  const queryParams = (b: RestBinding): JsonObject[] => {
    if (b.body === "*") return [];
    const out: JsonObject[] = [];
    const bound = [...b.pathFields.keys()];
    const walk = (desc: DescMessage, prefix: string, seen: ReadonlySet<string>) => {
      for (const f of desc.fields) {
        if (prefix === "" && b.body !== "" && f === b.body) continue;
        const name = prefix + f.name;
        if (bound.some((p) => p === name || p.startsWith(`${name}.`) || name.startsWith(`${p}.`))) {
          // A message that holds a path-bound field still offers its other fields.
          if (
            f.fieldKind === "message" &&
            !WKT_SCHEMAS[f.message.typeName] &&
            bound.some((p) => p.startsWith(`${name}.`))
          ) {
            walk(f.message, `${name}.`, new Set([...seen, f.message.typeName]));
          }
          continue;
        }
        const c = comments.get(`${f.parent.typeName}.${f.name}`);
        const param = (schema: JsonObject, explode = false): void => {
          out.push({
            name,
            in: "query",
            schema,
            ...(explode ? { style: "form", explode: true } : {}),
            ...(c ? { description: c } : {}),
          });
        };
        if (f.fieldKind === "scalar" || f.fieldKind === "enum") param(valueSchema(f));
        else if (f.fieldKind === "list" && f.listKind !== "message") param(valueSchema(f), true);
        else if (f.fieldKind === "list" && QUERY_WKT.has(f.message.typeName)) param(valueSchema(f), true);
        else if (f.fieldKind === "message") {
          if (QUERY_WKT.has(f.message.typeName)) param(valueSchema(f));
          else if (!WKT_SCHEMAS[f.message.typeName] && !seen.has(f.message.typeName)) {
            // Nested fields as `a.b`; a recursive message stops at its second appearance.
            walk(f.message, `${name}.`, new Set([...seen, f.message.typeName]));
          }
        }
        // Maps, Any, Struct and repeated messages cannot be set from a query string.
      }
    };
    walk(b.method.input, "", new Set([b.method.input.typeName]));
    return out;
  };

  // --- operations -------------------------------------------------------------------------------

  const errorRefs: Record<string, JsonObject> = {};
  const responsesComponent: Record<string, JsonObject> = {};
  if (opts.errorResponses) {
    const body = opts.errorMessage ? messageSchema(opts.errorMessage) : { type: "object" };
    for (const [status, r] of Object.entries(opts.errorResponses)) {
      const key = `Error${status}`;
      responsesComponent[key] = {
        description: r.description,
        ...(r.headers ? { headers: r.headers } : {}),
        content: { "application/json": { schema: body } },
      };
      errorRefs[status] = { $ref: `#/components/responses/${key}` };
    }
  }

  const paths: Record<string, Record<string, JsonObject>> = {};
  const seenIds = new Map<string, number>();
  const router = buildRouter(opts.services);
  for (const b of router.bindings) {
    const method = b.method;
    const service = method.parent;
    const { path, params } = pathOf(b.template);
    const baseId = `${service.name}_${method.name}`;
    const n = (seenIds.get(baseId) ?? 0) + 1;
    seenIds.set(baseId, n);
    const comment = comments.get(`${service.typeName}.${method.name}`);

    const response = b.responseBody === undefined ? messageSchema(method.output) : fieldSchema(b.responseBody);
    const op: JsonObject = {
      operationId: n === 1 ? baseId : `${baseId}_${n}`,
      tags: [service.name],
      ...(comment ? { summary: summaryOf(comment), description: comment } : {}),
      parameters: [...pathParams(b, params), ...queryParams(b), ...(opts.parameters?.(method) ?? [])],
    };
    if (b.body !== "") {
      const skip = new Set([...b.pathFields.keys()].filter((k) => !k.includes(".")));
      const schema =
        b.body === "*"
          ? skip.size === 0
            ? messageSchema(method.input)
            : describe(objectSchema(method.input, skip), method.input.typeName)
          : fieldSchema(b.body);
      op.requestBody = { required: b.body !== "*", content: { "application/json": { schema } } };
    }
    op.responses = {
      "200": { description: "OK", content: { "application/json": { schema: response } } },
      ...errorRefs,
    };
    const security = opts.operationSecurity?.(method);
    if (security !== undefined) op.security = [...security];

    const httpMethods = b.httpMethod === "*" ? ["get", "put", "post", "delete", "patch"] : [b.httpMethod.toLowerCase()];
    paths[path] ??= {};
    for (const m of httpMethods) {
      // A custom rule for "*" documents each method with its own id.
      const entry = paths[path] as Record<string, JsonObject>;
      entry[m] = httpMethods.length === 1 ? op : { ...op, operationId: `${op.operationId}_${m}` };
    }
  }

  // Components last: operations queue every message and enum they reach; messages queue theirs.
  for (let d = pending.shift(); d !== undefined; d = pending.shift()) {
    schemas[d.typeName] = d.kind === "enum" ? enumSchema(d) : describe(objectSchema(d), d.typeName);
  }

  const tags = opts.services
    .filter((s) => s.methods.some((m) => router.bindings.some((b) => b.method === m)))
    .map((s) => {
      const c = comments.get(s.typeName);
      return { name: s.name, ...(c ? { description: c } : {}) };
    });

  const components: JsonObject = { schemas: sortKeys(schemas) };
  if (Object.keys(responsesComponent).length > 0) components.responses = responsesComponent;
  if (opts.securitySchemes) components.securitySchemes = opts.securitySchemes;

  return {
    openapi: "3.1.0",
    info: { ...opts.info },
    ...(opts.servers ? { servers: [...opts.servers] } : {}),
    ...(opts.security ? { security: [...opts.security] } : {}),
    tags,
    paths: sortKeys(paths),
    components,
  };
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
