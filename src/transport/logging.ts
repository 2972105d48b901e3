import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Code, ConnectError, type ContextValues, createContextKey, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

// A small structured logger: one JSON object per line, so that log shippers need no parsing
// rules, and a request interceptor that gives every call an id and exactly one log line.
//
// Secrets must never reach the log, whoever builds the fields: API keys and authorization values
// are redacted at the single place every line goes through (`write`), not at call sites.

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

export type LogFieldValue = string | number | boolean | null | undefined | LogFieldValue[] | { [k: string]: unknown };

export interface Logger {
  readonly level: LogLevel;
  enabled(level: Exclude<LogLevel, "silent">): boolean;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line it writes. */
  child(fields: Record<string, unknown>): Logger;
}

/** Anything with a `write(line)`: process.stdout, a file stream, or an array-backed sink in tests. */
export interface LogSink {
  write(line: string): unknown;
}

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

const REDACTED = "[REDACTED]";
// The tenantd key format (src/domain/key-format.ts). Matched anywhere inside a string, so a key
// pasted into an error message or a URL is caught too.
const API_KEY_RE = /tdk_[a-z]+_[a-z]+_[0-9A-Za-z]{16}_[0-9A-Za-z]{38}/g;
// Bearer credentials of any shape, for tokens that are not tenantd keys.
const BEARER_RE = /\b(Bearer|Basic)\s+[^\s"',;]+/gi;
// Field names whose values are credentials whatever their shape.
const SECRET_FIELD_RE = /^(authorization|proxy-authorization|cookie|set-cookie|password|secret|x-api-key)$/i;

export function redactString(s: string): string {
  return s.replace(API_KEY_RE, REDACTED).replace(BEARER_RE, `$1 ${REDACTED}`);
}

/** Deep copy with secrets removed; also turns Errors, bigints and cycles into JSON-safe values. */
export function redact(value: unknown, seen = new WeakSet<object>(), depth = 0): unknown {
  if (typeof value === "string") return redactString(value);
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") {
    return typeof value === "function" || typeof value === "symbol" ? String(value) : value;
  }
  if (seen.has(value) || depth > 8) return "[…]";
  seen.add(value);
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: redactString(value.message) };
    if (value instanceof ConnectError) out.code = codeToString(value.code);
    if (value.cause !== undefined) out.cause = redact(value.cause, seen, depth + 1);
    return out;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, seen, depth + 1));
  if (value instanceof Headers) {
    const out: Record<string, unknown> = {};
    value.forEach((v, k) => {
      out[k] = SECRET_FIELD_RE.test(k) ? REDACTED : redactString(v);
    });
    return out;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue;
    out[k] = SECRET_FIELD_RE.test(k) ? REDACTED : redact(v, seen, depth + 1);
  }
  return out;
}

export function createLogger(
  level: LogLevel,
  sink: LogSink = process.stdout,
  base: Record<string, unknown> = {},
): Logger {
  const threshold = rank[level];
  const write = (lvl: Exclude<LogLevel, "silent">, msg: string, fields?: Record<string, unknown>) => {
    if (rank[lvl] < threshold) return;
    const line = redact({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }) as object;
    let text: string;
    try {
      text = JSON.stringify(line);
    } catch {
      // Only exotic values (getters that throw) get here; never let logging fail a call.
      text = JSON.stringify({ time: new Date().toISOString(), level: lvl, msg: redactString(msg) });
    }
    sink.write(`${text}\n`);
  };
  return {
    level,
    enabled: (lvl) => rank[lvl] >= threshold,
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
    child: (fields) => createLogger(level, sink, { ...base, ...fields }),
  };
}

// ---------------------------------------------------------------------------------------------
// Request id and the per-call log line.

/** The call's request id (`req_…` or a valid incoming `x-request-id`). Empty outside a call. */
export const requestIdKey = createContextKey<string>("", { description: "tenantd request id" });

/**
 * Fields other interceptors add to the call's single log line (tenant_id, key_id, …). The request
 * log interceptor puts a fresh object into every call; the frozen default makes a write outside
 * a logged call fail loudly instead of leaking into the next call. Prefer `addLogFields`.
 */
export interface LogFields {
  tenant_id?: string;
  key_id?: string;
  [field: string]: string | number | boolean | undefined;
}
export const logFieldsKey = createContextKey<LogFields>(Object.freeze({}) as LogFields, {
  description: "tenantd per-call log fields",
});

/** Adds fields to the current call's log line; a no-op when the call is not being logged. */
export function addLogFields(values: ContextValues, fields: LogFields): void {
  const target = values.get(logFieldsKey);
  if (!Object.isFrozen(target)) Object.assign(target, fields);
}

/**
 * State shared between the server's HTTP layer and the interceptor for one call: the HTTP layer
 * assigns the request id before Connect parses anything (so that calls failing before any
 * interceptor runs, like an oversized body, still get an id and a log line) and logs the call
 * itself only if the interceptor never saw it.
 * @internal used by server.ts
 */
export interface CallState {
  requestId: string;
  /** Set when the interceptor takes the call over; it then writes the line, however it ends. */
  intercepted: boolean;
}
/** @internal */
export const callStateKey = createContextKey<CallState | undefined>(undefined, { description: "tenantd call state" });

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

// Random bytes are drawn in blocks: one getrandom call per id cost more than the rest of a
// trivial call's request-id handling (12 % of CPU under gRPC load). The ids stay unpredictable;
// they just come from a shared block.
const ID_BYTES = 12;
const ID_POOL_IDS = 512;
let idPool = Buffer.alloc(0);
let idOffset = 0;

export function newRequestId(): string {
  if (idOffset + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_BYTES * ID_POOL_IDS);
    idOffset = 0;
  }
  const id = idPool.toString("base64url", idOffset, idOffset + ID_BYTES);
  idOffset += ID_BYTES;
  return `req_${id}`;
}

/** Honours a well-formed incoming id (so a caller can correlate across services); else a new one. */
export function requestIdFrom(incoming: string | string[] | null | undefined): string {
  const v = Array.isArray(incoming) ? incoming[0] : incoming;
  return v !== undefined && v !== null && REQUEST_ID_RE.test(v) ? v : newRequestId();
}

export type RpcProtocol = "grpc" | "grpc-web" | "connect" | "rest";

/** gRPC-Web must be tested first: its content types start with `application/grpc` too. */
export function protocolOf(contentType: string | null | undefined): RpcProtocol {
  const ct = (contentType ?? "").toLowerCase();
  if (ct.startsWith("application/grpc-web")) return "grpc-web";
  if (ct.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/**
 * Set by the REST transcoder (rest/handler.ts, innerHeaders) on the Connect JSON request it
 * builds for a REST call. The content type cannot tell the two apart (the transcoder speaks
 * Connect JSON to the handler), and the transcoder overwrites whatever the client sent under this
 * name, so every REST call is labelled `rest`.
 */
export const REST_MARKER_HEADER = "x-tenantd-transport";

/**
 * The protocol a call arrived with. The marker is honoured only on Connect JSON, the one protocol
 * the transcoder produces: a gRPC or gRPC-Web client that sends it keeps its true label. (A
 * Connect JSON client could label its own line `rest`; the label is diagnostic only and decides
 * nothing.)
 */
export function callProtocolOf(header: Headers): RpcProtocol {
  const protocol = protocolOf(header.get("content-type"));
  return protocol === "connect" && header.get(REST_MARKER_HEADER) === "rest" ? "rest" : protocol;
}

/** Codes that point at the server rather than the caller are logged at error level. */
const SERVER_FAULTS = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);

/** The same conversion Connect applies to non-Connect errors, so the log shows the sent code. */
function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  return new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}

const requestLogInterceptors = new WeakSet<Interceptor>();
/** @internal lets createServer refuse a second copy, which would log every call twice. */
export function isRequestLogInterceptor(i: Interceptor): boolean {
  return requestLogInterceptors.has(i);
}

/**
 * Assigns the request id, returns it as `x-request-id` on success and on errors, and writes one
 * line per call when the call ends (for streams: when the response stream ends). Must be the
 * outermost interceptor so that the line carries the code the client receives and the fields
 * inner interceptors (auth, tenant) add.
 */
export function requestLogInterceptor(log: Logger): Interceptor {
  const interceptor: Interceptor = (next) => async (req) => {
    const start = performance.now();
    const state = req.contextValues.get(callStateKey);
    if (state) state.intercepted = true;
    const requestId = state?.requestId || requestIdFrom(req.header.get("x-request-id"));
    const fields: LogFields = {};
    req.contextValues.set(requestIdKey, requestId);
    req.contextValues.set(logFieldsKey, fields);

    const finish = (err: ConnectError | undefined, canceled = false) => {
      const fault = err !== undefined && SERVER_FAULTS.has(err.code);
      // Below the logger's level (LOG_LEVEL=warn drops the info lines of answered calls), the
      // line is not even built.
      if (!log.enabled(fault ? "error" : "info")) return;
      const code = canceled ? "canceled" : err ? codeToString(err.code) : "ok";
      const line: Record<string, unknown> = {
        request_id: requestId,
        procedure: `${req.service.typeName}/${req.method.name}`,
        protocol: callProtocolOf(req.header),
        code,
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        ...fields,
      };
      if (err) {
        line.error = err.rawMessage;
        // The cause of an internal error is for operators only; clients never see it.
        if (err.cause !== undefined && SERVER_FAULTS.has(err.code)) line.cause = err.cause;
      }
      if (fault) log.error("rpc", line);
      else log.info("rpc", line);
    };
    const fail = (e: unknown): ConnectError => {
      const err = toConnectError(e);
      // Under createServer the HTTP layer already sent the id as a response header; repeating it
      // in the metadata would put it into the gRPC trailers as well, and clients, which merge
      // headers and trailers, would read "id, id".
      if (!state) err.metadata.set("x-request-id", requestId);
      return err;
    };

    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (e) {
      const err = fail(e);
      finish(err);
      throw err;
    }
    res.header.set("x-request-id", requestId);
    if (!res.stream) {
      finish(undefined);
      return res;
    }
    const messages = res.message;
    // The call is over only when the response stream is: log then, with the final outcome.
    async function* tap() {
      let done = false;
      try {
        yield* messages;
        done = true;
        // A handler that stops streaming because its signal fired (client gone, client deadline)
        // returns normally; the log should still say why the stream ended.
        finish(req.signal.aborted ? ConnectError.from(req.signal.reason) : undefined);
      } catch (e) {
        done = true;
        const err = fail(e);
        finish(err);
        throw err;
      } finally {
        // The consumer stopped early: Connect does that when the client went away.
        if (!done) finish(undefined, true);
      }
    }
    return { ...res, message: tap() };
  };
  requestLogInterceptors.add(interceptor);
  return interceptor;
}
