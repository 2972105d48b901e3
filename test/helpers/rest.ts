// REST calls for tests, derived from the RPC's own google.api.http rule: the route (primary or an
// additional binding) is read from the descriptor and its path variables are filled from the
// request message, the rest goes to the body or the query string as the rule says. Written
// independently of src/transport/rest/ (no shared parsing), so that a transcoder bug cannot hide
// behind the same code in the test. Also: google.rpc.Status JSON of a ConnectError, and api.md's
// gRPC → HTTP table.
import {
  create,
  createRegistry,
  type DescField,
  type DescMessage,
  type DescMethod,
  fromBinary,
  getOption,
  hasOption,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { http } from "../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../gen/google/api/http_pb.js";
import { ErrorInfoSchema, file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";

export interface RestRoute {
  httpMethod: string;
  /** The path template, e.g. `/v1/tenants/{tenant_id}/keys/{key_id}:rotate`. */
  template: string;
  /** Field paths (proto names) of the template's variables, in order. */
  variables: string[];
  /** "" (no body), "*" or the proto name of the body field. */
  body: string;
  /** "" or the proto name of the response field sent as the body. */
  responseBody: string;
}

/** The routes of a method's http rule: the primary binding first, then the additional ones. */
export function restRoutes(method: DescMethod): RestRoute[] {
  if (!hasOption(method, http)) return [];
  const rule = getOption(method, http);
  return [rule, ...rule.additionalBindings].map(routeOf);
}

function routeOf(rule: HttpRule): RestRoute {
  const p = rule.pattern;
  let httpMethod: string;
  let template: string;
  if (p.case === "custom") {
    httpMethod = p.value.kind.toUpperCase();
    template = p.value.path;
  } else if (p.case !== undefined) {
    httpMethod = p.case.toUpperCase();
    template = p.value;
  } else {
    throw new Error("http rule without a pattern");
  }
  const variables = [...template.matchAll(/\{([^}=]+)(=[^}]*)?\}/g)].map((m) => m[1] as string);
  return { httpMethod, template, variables, body: rule.body, responseBody: rule.responseBody };
}

function fieldByProtoName(desc: DescMessage, name: string): DescField {
  const f = desc.fields.find((x) => x.name === name);
  if (!f) throw new Error(`${desc.typeName} has no field ${name}`);
  return f;
}

/** Reads and removes the value at a proto-name path from a proto3 JSON object. */
function takePath(desc: DescMessage, json: JsonObject, path: string): JsonValue | undefined {
  const parts = path.split(".");
  let msg = desc;
  let obj: JsonObject = json;
  for (let i = 0; i < parts.length; i++) {
    const f = fieldByProtoName(msg, parts[i] as string);
    const v = obj[f.jsonName];
    if (i === parts.length - 1) {
      delete obj[f.jsonName];
      return v;
    }
    if (f.fieldKind !== "message" || v === undefined || v === null || typeof v !== "object" || Array.isArray(v)) {
      return undefined;
    }
    msg = f.message;
    obj = v;
  }
  return undefined;
}

function hasPath(desc: DescMessage, json: JsonObject, path: string): boolean {
  const copy = structuredClone(json);
  const v = takePath(desc, copy, path);
  return v !== undefined && v !== null && v !== "";
}

/** Percent-encodes a path value; a multi-segment variable (`{x=**}`, `{x=a/*}`) keeps its slashes. */
function encodePathValue(value: string, multiSegment: boolean): string {
  return multiSegment ? value.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(value);
}

function appendQuery(out: [string, string][], prefix: string, v: JsonValue): void {
  if (v === null) return;
  if (Array.isArray(v)) {
    for (const x of v) appendQuery(out, prefix, x);
  } else if (typeof v === "object") {
    for (const [k, x] of Object.entries(v)) appendQuery(out, `${prefix}.${k}`, x);
  } else {
    out.push([prefix, String(v)]);
  }
}

export interface RestRequest {
  route: RestRoute;
  httpMethod: string;
  /** Path and query string. */
  url: string;
  /** JSON text of the body, if the route takes one. */
  body: string | undefined;
}

/**
 * The REST request for `method` with `init`: the first route whose path variables the request
 * fills (so a tenant key's CreateKey without tenant_id takes `/v1/tenant/keys`), unless `route`
 * picks one by index.
 */
export function restRequestFor(method: DescMethod, init: object, route?: number): RestRequest {
  const routes = restRoutes(method);
  if (routes.length === 0) throw new Error(`${method.parent.typeName}/${method.name} has no http rule`);
  // Only populated fields: an unset field must not turn into a query parameter or body member.
  const json = toJson(method.input, create(method.input, init as MessageInitShape<DescMessage>)) as JsonObject;
  const chosen =
    route !== undefined ? routes[route] : routes.find((r) => r.variables.every((v) => hasPath(method.input, json, v)));
  if (!chosen) throw new Error(`no route of ${method.name} has all its path variables in the request`);

  const rest = structuredClone(json);
  const path = chosen.template.replace(/\{([^}=]+)(=([^}]*))?\}/g, (_m, name: string, _eq, pattern?: string) => {
    const v = takePath(method.input, rest, name);
    if (v === undefined || v === null || v === "") throw new Error(`path variable ${name} is empty`);
    return encodePathValue(String(v), pattern !== undefined && (pattern === "**" || pattern.includes("/")));
  });

  let body: string | undefined;
  const query: [string, string][] = [];
  if (chosen.body === "*") {
    body = JSON.stringify(rest);
  } else {
    if (chosen.body !== "") {
      const f = fieldByProtoName(method.input, chosen.body);
      const v = rest[f.jsonName];
      delete rest[f.jsonName];
      if (v !== undefined) body = JSON.stringify(v);
    }
    for (const [k, v] of Object.entries(rest)) appendQuery(query, k, v);
  }
  const qs = query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
  return { route: chosen, httpMethod: chosen.httpMethod, url: qs ? `${path}?${qs}` : path, body };
}

export interface RestAuth {
  key?: string;
  actAs?: string;
  headers?: Record<string, string>;
}

export interface RestResponse {
  status: number;
  json: JsonValue;
  headers: Headers;
}

export async function restFetch(baseUrl: string, req: RestRequest, auth: RestAuth = {}): Promise<RestResponse> {
  const headers: Record<string, string> = { ...auth.headers };
  if (auth.key !== undefined) headers.authorization = `Bearer ${auth.key}`;
  if (auth.actAs !== undefined) headers["x-tenant-id"] = auth.actAs;
  if (req.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(baseUrl + req.url, {
    method: req.httpMethod,
    headers,
    ...(req.body !== undefined ? { body: req.body } : {}),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? null : (JSON.parse(text) as JsonValue), headers: res.headers };
}

/** google.rpc.Status in proto3 JSON: what the REST face answers for an error. */
export interface StatusJson {
  code: number;
  message: string;
  details: JsonObject[];
}

const registry = createRegistry(file_google_rpc_error_details);
const TYPE_PREFIX = "type.googleapis.com/";

/** The google.rpc.Status JSON of an RPC error, the way the REST face renders it. */
export function statusOfConnectError(e: unknown): StatusJson {
  const err = ConnectError.from(e);
  const details = err.details.map((d): JsonObject => {
    const desc = "desc" in d ? d.desc : registry.getMessage(d.type);
    if (!desc) return { "@type": TYPE_PREFIX + ("desc" in d ? d.desc.typeName : d.type) };
    const msg = "desc" in d ? create(d.desc, d.value) : fromBinary(desc, d.value);
    return { "@type": TYPE_PREFIX + desc.typeName, ...(toJson(desc, msg, { registry }) as JsonObject) };
  });
  return { code: err.code, message: err.rawMessage, details };
}

/** The ErrorInfo of a Status JSON, if any. */
export function errorInfoOf(status: StatusJson): JsonObject | undefined {
  return status.details.find((d) => d["@type"] === TYPE_PREFIX + ErrorInfoSchema.typeName);
}

/** Whether a REST body is a google.rpc.Status. */
export function isStatusJson(v: JsonValue): v is JsonValue & StatusJson {
  return (
    v !== null &&
    typeof v === "object" &&
    !Array.isArray(v) &&
    typeof v.code === "number" &&
    typeof v.message === "string" &&
    Array.isArray(v.details)
  );
}

/** api.md's HTTP mapping, written out here rather than imported from the code under test. */
const HTTP_OF_CODE: Partial<Record<Code, number>> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

/** The HTTP status api.md gives a code and reason: the standard table, 422 for field values. */
export function expectedHttpStatus(code: Code, reason: string | undefined): number {
  const fieldValue = reason === "FIELD_INVALID" || reason === "FIELD_IMMUTABLE";
  if (fieldValue && (code === Code.InvalidArgument || code === Code.FailedPrecondition)) return 422;
  return HTTP_OF_CODE[code] ?? 500;
}
