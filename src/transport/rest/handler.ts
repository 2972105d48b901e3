// REST transcoding for Connect services, driven by their google.api.http rules.
//
// API:
//   const rest = createRestHandler({ services, handlers: () => router.handlers, maxRequestBytes });
//   // in the server's fallback (requests that are not RPC paths):
//   if (!(await rest(req, res))) writeNotFound(res);
//
//   services         the DescServices whose http rules become routes; built at once, so a bad or
//                    duplicate template throws here and start-up fails
//   handlers         Connect's universal handlers (ConnectRouter.handlers), read on first use; a
//                    route whose method has no handler answers 501
//   maxRequestBytes  request bodies above this answer 413
//   contextValues    optional: the context values the RPC adapter would give this request (so the
//                    call shares its request id and log line with the HTTP layer)
//   errorDomain      ErrorInfo.domain of the transcoder's own refusals (default "rest")
//   registry         optional: resolves google.protobuf.Any in messages and error details
//
// One code path: a REST request is turned into the proto3 JSON of the request message and
// handed to the method's own Connect handler as a unary Connect JSON POST, so it runs through the
// same interceptors (auth, validation, errors, logging, deadline) as gRPC, gRPC-Web and Connect.
// The Connect response is turned back: success → proto3 JSON with unpopulated fields emitted
// (honouring response_body); failure → the HTTP status of its code and a google.rpc.Status body
// whose details are the error's details in proto3 JSON (`@type` plus fields).
import type * as http from "node:http";
import type * as http2 from "node:http2";
import {
  create,
  createRegistry,
  type DescMessage,
  type DescService,
  fromBinary,
  fromJson,
  type JsonObject,
  type JsonValue,
  type Registry,
  toJson,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, type ContextValues } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { universalRequestFromNodeRequest } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  file_google_rpc_error_details,
  RetryInfoSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import { assembleRequest, DEFAULT_MAX_JSON_DEPTH, parseJsonBody, RequestError } from "./request.js";
import { buildRouter, type RestBinding, type RestRouter } from "./router.js";
import { EscapeError } from "./template.js";

export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface RestHandlerOptions {
  services: readonly DescService[];
  handlers: () => readonly UniversalHandler[];
  maxRequestBytes: number;
  contextValues?: (req: NodeRequest) => ContextValues | undefined;
  errorDomain?: string;
  registry?: Registry;
  /** Deepest accepted JSON nesting of a request body; default 64. */
  maxJsonDepth?: number;
  /**
   * ErrorInfo reasons that mark a well-formed request with invalid field values: answered 422
   * instead of 400. Default FIELD_INVALID and FIELD_IMMUTABLE.
   */
  unprocessableReasons?: readonly string[];
}

export type RestHandler = ((req: NodeRequest, res: NodeResponse) => Promise<boolean>) & {
  readonly router: RestRouter;
};

/** google.rpc.Status in proto3 JSON. */
export interface StatusJson {
  code: number;
  message: string;
  details: JsonObject[];
}

// The standard gRPC → HTTP table (google/rpc/code.proto), as api.md fixes it.
const HTTP_STATUS: Record<Code, number> = {
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

/** Codes that say "the request is wrong", where a field-value reason turns 400 into 422. */
const CLIENT_VALUE_CODES = new Set([Code.InvalidArgument, Code.FailedPrecondition, Code.OutOfRange]);

const ERROR_DETAIL_TYPE_PREFIX = "type.googleapis.com/";

// Request headers that describe the REST hop or Connect's own framing; the inner Connect call
// sets its own. `accept-encoding` in particular must not reach Connect, or it would compress the
// response we are about to re-encode.
const HOP_HEADERS = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "te",
  "upgrade",
  "content-type",
  "content-length",
  "content-encoding",
  "accept-encoding",
]);
// Response headers that describe the inner Connect response rather than the REST one.
const INNER_RESPONSE_HEADERS = new Set(["content-type", "content-length", "content-encoding", "connection"]);

export function createRestHandler(opts: RestHandlerOptions): RestHandler {
  const router = buildRouter(opts.services);
  const domain = opts.errorDomain ?? "rest";
  const maxDepth = opts.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const unprocessable = new Set(opts.unprocessableReasons ?? ["FIELD_INVALID", "FIELD_IMMUTABLE"]);
  const registry = opts.registry ?? createRegistry(file_google_rpc_error_details);
  let byMethod: Map<string, UniversalHandler> | undefined;
  const handlerOf = (b: RestBinding) => {
    byMethod ??= new Map(opts.handlers().map((h) => [`${h.service.typeName}/${h.method.name}`, h]));
    return byMethod.get(`${b.method.parent.typeName}/${b.method.name}`);
  };

  const refuse = (res: NodeResponse, status: number, code: Code, reason: string, message: string, extra = {}) =>
    sendStatus(res, status, statusJson(code, message, domain, reason, extra));

  const handle = async (req: NodeRequest, res: NodeResponse): Promise<boolean> => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? "" : url.slice(q + 1);
    const contentType = headerOf(req, "content-type") ?? "";
    // RPC protocols are the adapter's business, even on a path that happens to match a route.
    if (/^application\/(grpc|connect\+)/i.test(contentType)) return false;

    let found: ReturnType<RestRouter["lookup"]>;
    try {
      found = router.lookup(req.method ?? "GET", path);
    } catch (e) {
      if (!(e instanceof EscapeError)) throw e;
      refuse(res, 400, Code.InvalidArgument, "REQUEST_MALFORMED", e.message);
      return true;
    }
    if (found === undefined) return false;
    if ("allow" in found) {
      res.setHeader("allow", found.allow.join(", "));
      refuse(res, 405, Code.Unimplemented, "REQUEST_MALFORMED", `method ${req.method} is not allowed on ${path}`);
      return true;
    }
    const { binding, vars } = found;

    try {
      const body = await readBody(req, res, opts.maxRequestBytes, contentType);
      if (body === "too-large") {
        // 413 is not in the gRPC→HTTP table (RESOURCE_EXHAUSTED would say 429, i.e. "retry later",
        // which is wrong for a body that will never fit); the Status code stays RESOURCE_EXHAUSTED.
        refuse(
          res,
          413,
          Code.ResourceExhausted,
          "REQUEST_TOO_LARGE",
          `request body exceeds ${opts.maxRequestBytes} bytes`,
          { limit: String(opts.maxRequestBytes) },
        );
        return true;
      }
      if (body === "unsupported") {
        refuse(res, 415, Code.InvalidArgument, "REQUEST_MALFORMED", "request bodies must be application/json");
        return true;
      }
      const json = assembleRequest(
        binding,
        vars,
        query,
        body === undefined ? undefined : parseJsonBody(body),
        maxDepth,
      );
      const handler = handlerOf(binding);
      if (!handler) {
        refuse(
          res,
          501,
          Code.Unimplemented,
          "NOT_IMPLEMENTED",
          `${binding.method.parent.typeName}/${binding.method.name} is not served`,
        );
        return true;
      }
      await invoke(req, res, binding, handler, json);
    } catch (e) {
      if (e instanceof RequestError) {
        const details = e.field ? [badRequest(e.field, e.message)] : [];
        sendStatus(res, 400, statusJson(Code.InvalidArgument, e.message, domain, "REQUEST_MALFORMED", {}, details));
      } else if (!res.headersSent) {
        // Never leak an unexpected error's text; the inner call (if any) has logged it.
        refuse(res, 500, Code.Internal, "INTERNAL_ERROR", "internal error");
      }
    }
    return true;
  };

  const invoke = async (
    req: NodeRequest,
    res: NodeResponse,
    binding: RestBinding,
    handler: UniversalHandler,
    json: JsonObject,
  ) => {
    const base = universalRequestFromNodeRequest(req, res, json, opts.contextValues?.(req));
    const uReq: UniversalServerRequest = {
      ...base,
      method: "POST",
      url: new URL(handler.requestPath, base.url).toString(),
      header: innerHeaders(req, res),
    };
    const uRes = await handler(uReq);
    const bytes = await readAll(uRes.body);
    const headers = outerHeaders(uRes.header, uRes.trailer);

    if (uRes.status === 200) {
      const output = binding.method.output;
      const msg = fromJson(output, JSON.parse(bytes.toString("utf8")) as JsonValue, {
        registry,
        ignoreUnknownFields: true,
      });
      const whole = toJson(output, msg, { alwaysEmitImplicit: true, registry }) as JsonObject;
      let out: JsonValue = whole;
      const rb = binding.responseBody;
      if (rb) {
        out = whole[rb.jsonName] ?? (rb.fieldKind === "message" ? emptyJson(rb.message, registry) : null);
      }
      send(res, 200, headers, out);
      return;
    }

    const status = errorStatusJson(bytes, uRes.status, registry);
    if (status.details.every((d) => d["@type"] !== ERROR_DETAIL_TYPE_PREFIX + ErrorInfoSchema.typeName)) {
      // Errors Connect raises before any interceptor runs (the message did not parse) carry no
      // ErrorInfo; every REST error does.
      const reason = status.code === Code.InvalidArgument ? "REQUEST_MALFORMED" : "INTERNAL_ERROR";
      status.details.unshift(errorInfo(domain, reason));
    }
    let httpStatus = HTTP_STATUS[status.code as Code] ?? 500;
    const info = status.details.find((d) => d["@type"] === ERROR_DETAIL_TYPE_PREFIX + ErrorInfoSchema.typeName);
    if (info && CLIENT_VALUE_CODES.has(status.code) && unprocessable.has(String(info.reason))) httpStatus = 422;
    if (status.code === Code.ResourceExhausted) {
      const retry = retryAfterSeconds(bytes);
      if (retry !== undefined && headers["retry-after"] === undefined) headers["retry-after"] = String(retry);
    }
    send(res, httpStatus, headers, status);
  };

  return Object.assign(handle, { router });
}

/** Writes a google.rpc.Status 404 for a path no route (and nothing else) serves. */
export function writeNotFound(res: NodeResponse, domain = "rest"): void {
  sendStatus(res, 404, statusJson(Code.NotFound, "no route for this path", domain, "ROUTE_NOT_FOUND"));
}

// --- helpers ----------------------------------------------------------------------------------------

function headerOf(req: NodeRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads the body as text; undefined when empty, or why it was refused. */
async function readBody(
  req: NodeRequest,
  res: NodeResponse,
  max: number,
  contentType: string,
): Promise<string | undefined | "too-large" | "unsupported"> {
  const length = headerOf(req, "content-length");
  const h2Empty = "stream" in req && req.stream.endAfterHeaders;
  if (h2Empty || (length === undefined && headerOf(req, "transfer-encoding") === undefined && !("stream" in req))) {
    return undefined;
  }
  const refuseRest = () => {
    // The unread rest of an HTTP/1.1 body would be parsed as the next request.
    if (!("stream" in req)) res.setHeader("connection", "close");
  };
  if (length !== undefined && Number(length) > max) {
    refuseRest();
    return "too-large";
  }
  const encoding = headerOf(req, "content-encoding");
  if (encoding !== undefined && encoding.toLowerCase() !== "identity") {
    refuseRest();
    return "unsupported";
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) {
      refuseRest();
      return "too-large";
    }
    chunks.push(chunk);
  }
  if (total === 0) return undefined;
  // JSON, a +json type, or no type at all (curl -d sends form encoding by default; accepting a
  // JSON body labelled as a form would hide client bugs, so that is refused).
  if (contentType !== "" && !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(contentType)) return "unsupported";
  return Buffer.concat(chunks, total).toString("utf8");
}

function innerHeaders(req: NodeRequest, res: NodeResponse): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || k.startsWith(":") || HOP_HEADERS.has(k)) continue;
    if (k.startsWith("grpc-") || (k.startsWith("connect-") && k !== "connect-timeout-ms")) continue;
    if (Array.isArray(v)) for (const x of v) h.append(k, x);
    else h.set(k, v);
  }
  h.set("content-type", "application/json");
  h.set("connect-protocol-version", "1");
  h.set("x-tenantd-transport", "rest"); // so the request log says `rest` (logging.ts REST_MARKER_HEADER)
  // A gRPC-style deadline is honoured too; Connect reads only its own header.
  const grpcTimeout = headerOf(req, "grpc-timeout");
  if (grpcTimeout !== undefined && !h.has("connect-timeout-ms")) {
    const ms = grpcTimeoutMs(grpcTimeout);
    if (ms !== undefined) h.set("connect-timeout-ms", String(ms));
  }
  // The HTTP layer may already have assigned this request an id; the call must use the same one.
  const id = res.getHeader("x-request-id");
  if (typeof id === "string") h.set("x-request-id", id);
  return h;
}

function grpcTimeoutMs(v: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]);
  const factor: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
  return Math.max(1, Math.ceil(n * (factor[m[2] as string] as number)));
}

function outerHeaders(header: Headers | undefined, trailer: Headers | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (k: string, v: string) => {
    if (INNER_RESPONSE_HEADERS.has(k) || k.startsWith("connect-") || k.startsWith("grpc-")) return;
    out[k] = v;
  };
  header?.forEach((v, k) => {
    // Connect's unary responses carry trailers as `trailer-` headers; REST has no trailers.
    add(k.startsWith("trailer-") ? k.slice("trailer-".length) : k, v);
  });
  trailer?.forEach((v, k) => {
    add(k, v);
  });
  return out;
}

async function readAll(body: AsyncIterable<Uint8Array> | undefined): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  for await (const c of body) chunks.push(c);
  return chunks.length === 1 ? Buffer.from(chunks[0] as Uint8Array) : Buffer.concat(chunks);
}

function emptyJson(desc: DescMessage, registry: Registry): JsonValue {
  return toJson(desc, create(desc), { alwaysEmitImplicit: true, registry });
}

function errorInfo(domain: string, reason: string, metadata: Record<string, string> = {}): JsonObject {
  return { "@type": ERROR_DETAIL_TYPE_PREFIX + ErrorInfoSchema.typeName, reason, domain, metadata };
}

function badRequest(field: string, description: string): JsonObject {
  return {
    "@type": ERROR_DETAIL_TYPE_PREFIX + BadRequestSchema.typeName,
    fieldViolations: [{ field, description }],
  };
}

function statusJson(
  code: Code,
  message: string,
  domain: string,
  reason: string,
  metadata: Record<string, string> = {},
  details: JsonObject[] = [],
): StatusJson {
  return { code, message, details: [errorInfo(domain, reason, metadata), ...details] };
}

/** The google.rpc.Status of a Connect error body; falls back on the HTTP status when unreadable. */
function errorStatusJson(bytes: Buffer, httpStatus: number, registry: Registry): StatusJson {
  let parsed: { code?: unknown; message?: unknown; details?: unknown } = {};
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch {
    // Connect answers its own protocol refusals (415, 405) without a body; the request we built
    // never earns one, so seeing it is our bug: INTERNAL below.
  }
  const code =
    (typeof parsed.code === "string" ? codeFromString(parsed.code) : undefined) ??
    (httpStatus === 408 ? Code.DeadlineExceeded : Code.Internal);
  const message = typeof parsed.message === "string" ? parsed.message : "";
  const details: JsonObject[] = [];
  if (Array.isArray(parsed.details)) {
    for (const d of parsed.details as { type?: unknown; value?: unknown }[]) {
      if (typeof d?.type !== "string" || typeof d.value !== "string") continue;
      const desc = registry.getMessage(d.type);
      if (!desc) {
        details.push({ "@type": ERROR_DETAIL_TYPE_PREFIX + d.type, value: d.value });
        continue;
      }
      try {
        const json = toJson(desc, fromBinary(desc, base64Decode(d.value)), { registry });
        details.push(
          json !== null && typeof json === "object" && !Array.isArray(json)
            ? { "@type": ERROR_DETAIL_TYPE_PREFIX + d.type, ...json }
            : { "@type": ERROR_DETAIL_TYPE_PREFIX + d.type, value: json },
        );
      } catch {
        details.push({ "@type": ERROR_DETAIL_TYPE_PREFIX + d.type, value: d.value });
      }
    }
  }
  return { code, message, details };
}

/** RetryInfo's delay, rounded up to whole seconds, for the Retry-After header. */
function retryAfterSeconds(bytes: Buffer): number | undefined {
  try {
    const parsed = JSON.parse(bytes.toString("utf8")) as { details?: { type?: string; value?: string }[] };
    const d = parsed.details?.find((x) => x.type === RetryInfoSchema.typeName);
    if (!d?.value) return undefined;
    const info = fromBinary(RetryInfoSchema, base64Decode(d.value));
    if (!info.retryDelay) return undefined;
    return Math.max(0, Math.ceil(Number(info.retryDelay.seconds) + info.retryDelay.nanos / 1e9));
  } catch {
    return undefined;
  }
}

function send(res: NodeResponse, status: number, headers: Record<string, string>, body: JsonValue | StatusJson): void {
  const text = JSON.stringify(body);
  const out = res as unknown as { writeHead(s: number, h: Record<string, string>): unknown; end(b: string): unknown };
  out.writeHead(status, {
    ...headers,
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(text)),
  });
  out.end(text);
}

function sendStatus(res: NodeResponse, status: number, body: StatusJson): void {
  if (res.headersSent) return;
  send(res, status, {}, body);
}
