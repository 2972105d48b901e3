import type * as http2 from "node:http2";
import { constants as h2 } from "node:http2";
import type { DescMethodUnary, DescService } from "@bufbuild/protobuf";
import { create, isMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextKey,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  compressionNegotiate,
  createAsyncIterable,
  createMethodSerializationLookup,
  envelopeCompress,
  pipe,
  type Serialization,
  transformDecompressEnvelope,
  transformParseEnvelope,
  transformSplitEnvelope,
} from "@connectrpc/connect/protocol";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { Logger } from "./logging.js";

// A fast path for unary gRPC over HTTP/2 (see docs/architecture.md, "gRPC fast path").
//
// connect-node runs every call, unary or not, through its streaming machinery: the body is an
// async generator over the Node request, which a chain of async-iterable transforms splits,
// parses, invokes and serializes, each step a generator with its own promises; every call gets
// three to four AbortControllers (request, deadline, linked, ours), several Headers objects, and
// an abort at the end of the call that builds a DOMException (and, through our deadline
// interceptor's listener, a ConnectError with a stack trace). Under load that is mostly garbage
// collection. Here a unary call is: collect the body, parse one frame, run the same interceptor
// chain (composed once per method), write one DATA frame and the trailers.
//
// Everything the client can observe is produced the way connect produces it, mostly with
// connect's own exported helpers: the error trailers (setTrailerStatus: grpc-status, the
// percent-encoded grpc-message, grpc-status-details-bin), grpc-timeout parsing (parseTimeout),
// response compression negotiation (compressionNegotiate, envelopeCompress), message parsing and
// serialization (createMethodSerializationLookup). A request body that is not exactly one plain
// frame within the size limit is handed to connect's own envelope pipeline, so that malformed,
// oversized, compressed-without-encoding or multi-message bodies fail with connect's exact error.
//
// Not taken here (connect-node serves them, unchanged): streaming methods, gRPC-Web, Connect,
// HTTP/1.1, REST, JSON codec, compressed requests, requests with an Origin (CORS), paths with a
// query string, services registered with per-service handler options.

/** What the server gives the fast path for one call. */
export interface FastCallState {
  requestId: string;
  intercepted: boolean;
}

export interface GrpcFastPathOptions {
  /** The server's whole chain: request log, deadline, then the app's interceptors. */
  interceptors: Interceptor[];
  maxRequestBytes: number;
  /** Aborted at the end of the shutdown grace period; running calls are aborted with its reason. */
  shutdownSignal: AbortSignal;
  log: Logger;
  /** The context values connect would get for this call (request id state, drain signal). */
  contextValues(state: FastCallState): ContextValues;
  /** A fresh request id for a call (same rules as the HTTP layer). */
  requestIdFrom(incoming: string | string[] | undefined): string;
}

export interface GrpcFastPath {
  /** Records a service registered on the router (same arguments as ConnectRouter.service). */
  addService(service: DescService, impl: object, options: unknown): void;
  /** Records a single method registered on the router (ConnectRouter.rpc). */
  addRpc(method: { methodKind: string; parent: DescService; localName: string }, impl: unknown, options: unknown): void;
  /**
   * Serves the stream if it is a unary gRPC call this path handles; false leaves it untouched
   * (no listener added, no data read) for connect-node.
   */
  handle(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean;
  /** Whether the request path names a method served here; for tests and diagnostics. */
  hasPath(path: string): boolean;
}

type AnyImpl = (input: unknown, ctx: HandlerContext) => unknown;

interface MethodEntry {
  method: DescMethodUnary;
  service: DescService;
  impl: AnyImpl;
  input: Serialization<unknown>;
  output: Serialization<unknown>;
  /** The interceptor chain around the implementation, composed once (interceptors are stateless). */
  chain: (req: UnaryRequest) => Promise<UnaryResponse>;
}

/** Per-call state the innermost function needs; carried in the call's context values. */
interface CallContext {
  responseHeader: Headers;
  responseTrailer: Headers;
  timeoutMs: () => number | undefined;
  abort: (reason?: unknown) => void;
}
const callContextKey = createContextKey<CallContext | undefined>(undefined, {
  description: "tenantd grpc fast path call",
});

const CONTENT_TYPE_PROTO = "application/grpc+proto";
/** connect-node's defaults (connectNodeAdapter: acceptCompression [gzip, br], compressMinBytes 1 KiB). */
const ACCEPT_COMPRESSION = [compressionGzip, compressionBrotli];
const COMPRESS_MIN_BYTES = 1024;
const noTimeout = () => undefined;

/** The reset codes connect-node's connectErrorFromH2ResetCode maps, with the same codes. */
const RESET_CODES: ReadonlyMap<number, [string, Code]> = new Map([
  [h2.NGHTTP2_PROTOCOL_ERROR, ["PROTOCOL_ERROR", Code.Internal]],
  [h2.NGHTTP2_INTERNAL_ERROR, ["INTERNAL_ERROR", Code.Internal]],
  [h2.NGHTTP2_FLOW_CONTROL_ERROR, ["FLOW_CONTROL_ERROR", Code.Internal]],
  [h2.NGHTTP2_SETTINGS_TIMEOUT, ["SETTINGS_TIMEOUT", Code.Internal]],
  [h2.NGHTTP2_FRAME_SIZE_ERROR, ["FRAME_SIZE_ERROR", Code.Internal]],
  [h2.NGHTTP2_COMPRESSION_ERROR, ["COMPRESSION_ERROR", Code.Internal]],
  [h2.NGHTTP2_CONNECT_ERROR, ["CONNECT_ERROR", Code.Internal]],
  [h2.NGHTTP2_REFUSED_STREAM, ["REFUSED_STREAM", Code.Unavailable]],
  [h2.NGHTTP2_CANCEL, ["CANCEL", Code.Canceled]],
  [h2.NGHTTP2_ENHANCE_YOUR_CALM, ["ENHANCE_YOUR_CALM", Code.ResourceExhausted]],
  [h2.NGHTTP2_INADEQUATE_SECURITY, ["INADEQUATE_SECURITY", Code.PermissionDenied]],
  [h2.NGHTTP2_HTTP_1_1_REQUIRED, ["HTTP_1_1_REQUIRED", Code.PermissionDenied]],
]);

/** The same errors (messages and codes) as connect-node's connectErrorFromH2ResetCode. */
function errorFromResetCode(rstCode: number): ConnectError | undefined {
  const e = RESET_CODES.get(rstCode);
  if (!e) return undefined;
  return new ConnectError(`http/2 stream closed with error code ${e[0]} (0x${rstCode.toString(16)})`, e[1]);
}

/** connect's applyInterceptors (not exported): the first interceptor is the outermost. */
function applyInterceptors(
  next: (req: UnaryRequest) => Promise<UnaryResponse>,
  interceptors: Interceptor[],
): (req: UnaryRequest) => Promise<UnaryResponse> {
  let fn = next;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    fn = (interceptors[i] as Interceptor)(fn as never) as unknown as typeof fn;
  }
  return fn;
}

/** Headers → Node header object, as connect-node's webHeaderToNodeHeaders does. */
function toNodeHeaders(target: Record<string, string | string[]>, headers: Headers): void {
  headers.forEach((value, key) => {
    const prev = target[key];
    if (prev === undefined || key === "x-request-id") target[key] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else target[key] = [prev, value];
  });
}

export function createGrpcFastPath(opts: GrpcFastPathOptions): GrpcFastPath {
  const methods = new Map<string, MethodEntry>();
  const limits = {
    readMaxBytes: opts.maxRequestBytes,
    writeMaxBytes: 0xffffffff,
    compressMinBytes: COMPRESS_MIN_BYTES,
  };
  /** Calls running now, aborted with the shutdown reason (one listener instead of one per call). */
  const running = new Set<AbortController>();
  opts.shutdownSignal.addEventListener(
    "abort",
    () => {
      for (const c of running) c.abort(opts.shutdownSignal.reason);
    },
    { once: true },
  );
  /** `new URL(path, "http://" + authority)` per authority, bounded: authorities are client input. */
  const origins = new Map<string, string>();
  const originOf = (authority: string): string => {
    let o = origins.get(authority);
    if (o === undefined) {
      o = new URL(`http://${authority}`).origin;
      if (origins.size < 64) origins.set(authority, o);
    }
    return o;
  };

  const addMethod = (method: DescMethodUnary, service: DescService, impl: AnyImpl) => {
    const ser = createMethodSerializationLookup(method, undefined, undefined, limits);
    // The innermost call, as connect's invokeUnaryImplementation builds it.
    const invoke = async (req: UnaryRequest): Promise<UnaryResponse> => {
      const call = req.contextValues.get(callContextKey) as CallContext;
      const ctx: HandlerContext & { abort: (reason?: unknown) => void } = {
        method,
        service: req.service,
        requestMethod: req.requestMethod,
        protocolName: "grpc",
        url: req.url,
        timeoutMs: call.timeoutMs,
        signal: req.signal,
        requestHeader: req.header,
        responseHeader: call.responseHeader,
        responseTrailer: call.responseTrailer,
        values: req.contextValues,
        abort: call.abort,
      };
      const out = await impl(req.message, ctx);
      const message = isMessage(out, method.output) ? out : create(method.output, out as never);
      return {
        stream: false,
        message,
        method,
        service,
        header: call.responseHeader,
        trailer: call.responseTrailer,
      } as UnaryResponse;
    };
    methods.set(`/${service.typeName}/${method.name}`, {
      method,
      service,
      impl,
      input: ser.getI(true) as Serialization<unknown>,
      output: ser.getO(true) as Serialization<unknown>,
      chain: applyInterceptors(invoke, opts.interceptors),
    });
  };

  const unimplemented = (service: DescService, name: string): AnyImpl => {
    const message = `${service.typeName}.${name} is not implemented`;
    return () => {
      throw new ConnectError(message, Code.Unimplemented);
    };
  };

  return {
    hasPath: (p) => methods.has(p),

    addService(service, impl, options) {
      // Per-service handler options (interceptors, limits) would have to be mirrored here; no
      // tenantd service uses them, so such a service simply stays on connect-node.
      if (options !== undefined) return;
      const obj = impl as Record<string, unknown>;
      for (const m of service.methods) {
        if (m.methodKind !== "unary") continue;
        const fn = obj[m.localName];
        addMethod(
          m as DescMethodUnary,
          service,
          typeof fn === "function" ? (fn.bind(impl) as AnyImpl) : unimplemented(service, m.name),
        );
      }
    },

    addRpc(method, impl, options) {
      if (options !== undefined || method.methodKind !== "unary" || typeof impl !== "function") return;
      addMethod(method as DescMethodUnary, method.parent, impl as AnyImpl);
    },

    handle(stream, headers) {
      if (headers[":method"] !== "POST") return false;
      const ct = headers["content-type"];
      if (ct !== "application/grpc" && ct !== CONTENT_TYPE_PROTO) return false;
      const path = headers[":path"];
      if (path === undefined) return false;
      const entry = methods.get(path);
      if (entry === undefined) return false;
      const encoding = headers["grpc-encoding"];
      if (encoding !== undefined && encoding !== "identity") return false;
      if (headers.origin !== undefined) return false;
      serve(entry, stream, headers, path);
      return true;
    },
  };

  function serve(
    entry: MethodEntry,
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    path: string,
  ): void {
    const start = performance.now();
    const state: FastCallState = { requestId: opts.requestIdFrom(headers["x-request-id"]), intercepted: false };
    const responseHeader = new Headers({ "content-type": CONTENT_TYPE_PROTO });
    const responseTrailer = new Headers({ "grpc-status": "0" });
    const accept = headers["grpc-accept-encoding"];
    const compression = compressionNegotiate(
      ACCEPT_COMPRESSION,
      null,
      typeof accept === "string" ? accept : null,
      "grpc-accept-encoding",
    );
    if (compression.response) responseHeader.set("grpc-encoding", compression.response.name);
    const timeout = parseTimeout(
      typeof headers["grpc-timeout"] === "string" ? headers["grpc-timeout"] : null,
      Number.MAX_SAFE_INTEGER,
    );

    const controller = new AbortController();
    running.add(controller);
    let timer: NodeJS.Timeout | undefined;
    let timeoutMs: () => number | undefined = noTimeout;
    let finished = false;
    const abort = (reason?: unknown) => {
      clearTimeout(timer);
      if (!controller.signal.aborted) controller.abort(reason);
    };
    // Like connect: the signal fires when the client resets the stream (with the reset's code) and
    // in any case when the call is over, so handlers' cleanup hooked to it runs.
    stream.on("error", () => {});
    stream.once("close", () => {
      running.delete(controller);
      if (!finished && !state.intercepted) logUnintercepted(state, path, "canceled", start);
      abort(errorFromResetCode(stream.rstCode) ?? CALL_OVER);
    });

    const values = opts.contextValues(state);
    values.set(callContextKey, { responseHeader, responseTrailer, timeoutMs: () => timeoutMs(), abort });

    const respond = (body: Uint8Array | undefined, trailer: Headers) => {
      finished = true;
      if (stream.destroyed || stream.closed) return;
      const h: Record<string, string | string[] | number> = { "x-request-id": state.requestId };
      toNodeHeaders(h as Record<string, string | string[]>, responseHeader);
      h[":status"] = 200;
      const t: Record<string, string | string[]> = {};
      toNodeHeaders(t, trailer);
      stream.respond(h, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(t));
      if (body === undefined) stream.end();
      else stream.end(body);
    };
    /** A failure before any interceptor ran: trailers straight from the error, as connect does. */
    const failEarly = (e: unknown) => {
      const err =
        e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
      abort(err);
      setTrailerStatus(responseTrailer, err);
      respond(undefined, responseTrailer);
      if (!state.intercepted) logUnintercepted(state, path, err.code, start);
      // The client may still be sending (an oversized body): read and drop the rest, as connect
      // does, so that the stream can close instead of waiting on flow control.
      if (!stream.readableEnded) {
        stream.removeAllListeners("data");
        stream.on("data", () => {});
        stream.resume();
      }
    };

    // connect raises these before it reads the body.
    if (timeout.error) {
      failEarly(timeout.error);
      return;
    }
    if (timeout.timeoutMs !== undefined) {
      const ms = timeout.timeoutMs;
      const deadline = Date.now() + ms;
      timeoutMs = () => deadline - Date.now();
      const expire = () => abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      if (ms <= 0) expire();
      else timer = setTimeout(expire, ms);
    }

    const run = (message: unknown) => {
      const req: UnaryRequest = {
        stream: false,
        message: message as never,
        method: entry.method,
        requestMethod: "POST",
        url: originOf(String(headers[":authority"] ?? headers.host ?? "")) + path,
        signal: controller.signal,
        header: requestHeaders(headers),
        service: entry.service,
        contextValues: values,
      } as UnaryRequest;
      entry.chain(req).then(
        async (res) => {
          let bytes: Uint8Array = entry.output.serialize(res.message);
          let flags = 0;
          if (compression.response) {
            const env = await envelopeCompress({ flags: 0, data: bytes }, compression.response, COMPRESS_MIN_BYTES);
            bytes = env.data;
            flags = env.flags;
          }
          if (res.header !== responseHeader) replaceHeaders(responseHeader, res.header);
          const trailer = res.trailer;
          const frame = Buffer.allocUnsafe(5 + bytes.byteLength);
          frame[0] = flags;
          frame.writeUInt32BE(bytes.byteLength, 1);
          frame.set(bytes, 5);
          respond(frame, trailer);
          abort(CALL_OVER);
        },
        (e: unknown) => {
          const err =
            e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
          abort(err);
          setTrailerStatus(responseTrailer, err);
          respond(undefined, responseTrailer);
          if (!state.intercepted) logUnintercepted(state, path, err.code, start);
        },
      );
    };

    // The body: one frame, collected without async iteration. Anything else (oversized, more than
    // one frame, a truncated frame, the compressed flag) goes through connect's own pipeline.
    const limit = opts.maxRequestBytes + 5;
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      total += chunk.length;
      if (total > limit) {
        stream.off("data", onData);
        stream.off("end", onEnd);
        stream.pause();
        slowPath(chunks, stream);
      }
    };
    const onEnd = () => {
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
      if (total >= 5 && body[0] === 0 && body.readUInt32BE(1) === total - 5) {
        let message: unknown;
        try {
          message = entry.input.parse(body.subarray(5));
        } catch (e) {
          failEarly(e);
          return;
        }
        run(message);
      } else {
        slowPath(chunks, undefined);
      }
    };
    const slowPath = (collected: Buffer[], rest: http2.ServerHttp2Stream | undefined) => {
      firstMessage(collected, rest, entry.input, opts.maxRequestBytes).then(run, failEarly);
    };
    stream.on("data", onData);
    stream.once("end", onEnd);
  }

  function logUnintercepted(state: FastCallState, path: string, code: Code | "canceled", start: number) {
    // What server.ts's watchForFallbackLog writes for calls connect fails before any interceptor.
    state.intercepted = true;
    opts.log.info("rpc", {
      request_id: state.requestId,
      procedure: path.slice(1),
      protocol: "grpc",
      code: code === "canceled" ? code : codeToString(code),
      http_status: 200,
      duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
    });
  }
}

/** Set as the abort reason when a call ends normally (connect aborts with a DOMException). */
const CALL_OVER = new ConnectError("the call is over", Code.Canceled);

/** nodeHeaderToWebHeader: every non-pseudo header, arrays appended. */
function requestHeaders(headers: http2.IncomingHttpHeaders): Headers {
  const h = new Headers();
  for (const k in headers) {
    if (k.charCodeAt(0) === 58 /* ':' */) continue;
    const v = headers[k];
    if (v === undefined) continue;
    if (typeof v === "string") h.append(k, v);
    else for (const e of v) h.append(k, e);
  }
  return h;
}

function replaceHeaders(to: Headers, from: Headers): void {
  for (const k of [...to.keys()]) to.delete(k);
  from.forEach((v, k) => {
    to.set(k, v);
  });
}

/**
 * connect's own envelope pipeline and unary "exactly one message" rule, for bodies that are not
 * one plain frame: same errors (codes and messages) as connect-node gives.
 */
async function firstMessage(
  collected: Buffer[],
  rest: http2.ServerHttp2Stream | undefined,
  input: Serialization<unknown>,
  readMaxBytes: number,
): Promise<unknown> {
  async function* source(): AsyncIterable<Uint8Array> {
    for (const c of collected) yield c;
    if (rest) for await (const c of rest) yield c as Buffer;
  }
  const parsed = pipe(
    rest ? source() : createAsyncIterable<Uint8Array>(collected),
    transformSplitEnvelope(readMaxBytes),
    transformDecompressEnvelope(null, readMaxBytes),
    transformParseEnvelope(input),
  );
  const it = parsed[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) {
    throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
  }
  const second = await it.next();
  if (second.done !== true) {
    throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
  }
  return first.value;
}
