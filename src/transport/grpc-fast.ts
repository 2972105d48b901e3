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
import { keepBytes, reusedBytes } from "../services/reused-responses.js";
import { type CallLifetime, callLifetimeKey } from "./deadline.js";
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
//
// Per-call cost. A trivial call cost about twice a bare grpc-js server's CPU; besides connect's
// machinery, which this path leaves out, the profile showed per-call objects that most calls never
// use. So:
//   - the call's AbortSignal is made only when something reads `req.signal` or `ctx.signal`; the
//     call itself (FastCall) is the CallLifetime the deadline interceptor listens to
//     (deadline.ts), and the end of the call, a client reset, its grpc-timeout and the shutdown
//     abort it (and the signal, if one was made);
//   - request headers are read from Node's header object, and copied into the Headers only if
//     something iterates or changes them (NodeRequestHeaders); response headers and trailers
//     live in a Map until something unusual (set-cookie, a value Headers would normalise or
//     refuse) hands them to the Headers itself (LiteHeaders); both are real `Headers` objects;
//   - the call is one object whose methods are the stream listeners (no closures per call), and
//     compression negotiation is cached per `grpc-accept-encoding` value.

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

const CONTENT_TYPE_PROTO = "application/grpc+proto";
/** connect-node's defaults (connectNodeAdapter: acceptCompression [gzip, br], compressMinBytes 1 KiB). */
const ACCEPT_COMPRESSION = [compressionGzip, compressionBrotli];
const COMPRESS_MIN_BYTES = 1024;

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

// ---- headers ----------------------------------------------------------------------------------

/**
 * Headers' methods, as methods: the DOM typings declare them as properties, which a subclass
 * cannot override through `super`. At run time this is Headers itself.
 */
interface HeadersMethods {
  get(name: string): string | null;
  has(name: string): boolean;
  set(name: string, value: string): void;
  append(name: string, value: string): void;
  delete(name: string): void;
  getSetCookie(): string[];
  forEach(cb: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}
const HeadersBase = Headers as unknown as new () => HeadersMethods;

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Values Headers would refuse (NUL, CR, LF) or change (leading or trailing HTTP whitespace). */
const UNUSUAL_VALUE_RE = /[\0\r\n]|^[\t ]|[\t ]$/;

/**
 * A request's headers as `Headers`, read from Node's header object. Lookups (`get`, `has`) read
 * it directly; anything else (iteration, changes) first copies it into the Headers, as
 * connect-node's nodeHeaderToWebHeader would have (every non-pseudo header, arrays appended), and
 * from then on the Headers answers. Exported for tests.
 */
export class NodeRequestHeaders extends HeadersBase {
  private src: http2.IncomingHttpHeaders | undefined;

  constructor(src: http2.IncomingHttpHeaders) {
    super();
    this.src = src;
  }

  private own(): void {
    const s = this.src;
    if (s === undefined) return;
    this.src = undefined;
    for (const k in s) {
      if (k.charCodeAt(0) === 58 /* ':' */) continue;
      const v = s[k];
      if (v === undefined) continue;
      if (typeof v === "string") super.append(k, v);
      else for (const e of v) super.append(k, e);
    }
  }

  /** The raw value of a well-formed name, or undefined when the Headers must answer. */
  private raw(name: string): string | string[] | null | undefined {
    if (this.src === undefined || !TOKEN_RE.test(name)) return undefined;
    const v = this.src[name.toLowerCase()];
    if (v === undefined) return null;
    if (typeof v === "string" ? UNUSUAL_VALUE_RE.test(v) : v.some((e) => UNUSUAL_VALUE_RE.test(e))) {
      this.own();
      return undefined;
    }
    return v;
  }

  override get(name: string): string | null {
    const v = this.raw(name);
    if (v === undefined) return super.get(name);
    return v === null || typeof v === "string" ? v : v.join(", ");
  }

  override has(name: string): boolean {
    const v = this.raw(name);
    return v === undefined ? super.has(name) : v !== null;
  }

  override set(name: string, value: string): void {
    this.own();
    super.set(name, value);
  }

  override append(name: string, value: string): void {
    this.own();
    super.append(name, value);
  }

  override delete(name: string): void {
    this.own();
    super.delete(name);
  }

  override getSetCookie(): string[] {
    this.own();
    return super.getSetCookie();
  }

  override forEach(cb: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    this.own();
    super.forEach(cb, thisArg);
  }

  override entries(): IterableIterator<[string, string]> {
    this.own();
    return super.entries();
  }

  override keys(): IterableIterator<string> {
    this.own();
    return super.keys();
  }

  override values(): IterableIterator<string> {
    this.own();
    return super.values();
  }

  override [Symbol.iterator](): IterableIterator<[string, string]> {
    this.own();
    return super[Symbol.iterator]();
  }
}

/**
 * Response headers and trailers as `Headers`, kept in a Map of lower-case names while every name
 * is a token, every value plain and no `set-cookie` is involved; the first operation outside that
 * moves them into the Headers, which then answers everything (normalising or refusing as it does).
 * Iteration follows the Headers' order (sorted names). Exported for tests.
 */
export class LiteHeaders extends HeadersBase {
  /** Values per lower-case name, in the order appended; undefined once the Headers holds them. */
  private map: Map<string, string[]> | undefined = new Map();

  constructor(name?: string, value?: string) {
    super();
    if (name !== undefined && value !== undefined) this.map?.set(name, [value]);
  }

  /** The Map, or undefined once the Headers holds everything (or must, for this name and value). */
  private plain(name: string, value?: string): Map<string, string[]> | undefined {
    const m = this.map;
    if (m === undefined) return undefined;
    if (!TOKEN_RE.test(name) || (value !== undefined && UNUSUAL_VALUE_RE.test(value))) {
      this.spill();
      return undefined;
    }
    if (name.length === 10 && name.toLowerCase() === "set-cookie") {
      this.spill();
      return undefined;
    }
    return m;
  }

  private spill(): void {
    const m = this.map;
    if (m === undefined) return;
    this.map = undefined;
    for (const [k, vs] of m) for (const v of vs) super.append(k, v);
  }

  /** Copies every header into a Node header object, overwriting what is there. */
  copyTo(target: Record<string, string | string[] | number>): void {
    if (this.map !== undefined) {
      for (const [k, vs] of this.map) target[k] = vs.length === 1 ? (vs[0] as string) : vs.join(", ");
      return;
    }
    const cookies = super.getSetCookie();
    super.forEach((v, k) => {
      if (k !== "set-cookie") target[k] = v;
    });
    if (cookies.length > 0) target["set-cookie"] = cookies;
  }

  override get(name: string): string | null {
    const m = this.plain(name);
    if (m === undefined) return super.get(name);
    const vs = m.get(name.toLowerCase());
    return vs === undefined ? null : vs.length === 1 ? (vs[0] as string) : vs.join(", ");
  }

  override has(name: string): boolean {
    const m = this.plain(name);
    return m === undefined ? super.has(name) : m.has(name.toLowerCase());
  }

  override set(name: string, value: string): void {
    const m = this.plain(name, value);
    if (m === undefined) super.set(name, value);
    else m.set(name.toLowerCase(), [value]);
  }

  override append(name: string, value: string): void {
    const m = this.plain(name, value);
    if (m === undefined) {
      super.append(name, value);
      return;
    }
    const k = name.toLowerCase();
    const vs = m.get(k);
    if (vs === undefined) m.set(k, [value]);
    else vs.push(value);
  }

  override delete(name: string): void {
    const m = this.plain(name);
    if (m === undefined) super.delete(name);
    else m.delete(name.toLowerCase());
  }

  override getSetCookie(): string[] {
    return this.map === undefined ? super.getSetCookie() : [];
  }

  override forEach(cb: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    this.spill();
    super.forEach(cb, thisArg);
  }

  override entries(): IterableIterator<[string, string]> {
    this.spill();
    return super.entries();
  }

  override keys(): IterableIterator<string> {
    this.spill();
    return super.keys();
  }

  override values(): IterableIterator<string> {
    this.spill();
    return super.values();
  }

  override [Symbol.iterator](): IterableIterator<[string, string]> {
    this.spill();
    return super[Symbol.iterator]();
  }
}

/** Headers (of any kind) into a Node header object, as connect-node's webHeaderToNodeHeaders does. */
function copyHeaders(target: Record<string, string | string[] | number>, headers: Headers): void {
  if ((headers as unknown) instanceof LiteHeaders) {
    (headers as unknown as LiteHeaders).copyTo(target);
    return;
  }
  headers.forEach((value, key) => {
    const prev = target[key];
    if (prev === undefined || key === "x-request-id") target[key] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else target[key] = [String(prev), value];
  });
}

// ---- the fast path ----------------------------------------------------------------------------

/** What every call of one fast path shares. */
interface Shared {
  opts: GrpcFastPathOptions;
  running: Set<FastCall>;
  originOf(authority: string): string;
  compressionFor(accept: string | undefined): ReturnType<typeof compressionNegotiate>;
}

const kCall = Symbol("tenantd fast call");
type StreamWithCall = http2.ServerHttp2Stream & { [kCall]?: FastCall };

function ignore(): void {}
function onStreamData(this: StreamWithCall, chunk: Buffer): void {
  this[kCall]?.data(chunk);
}
function onStreamEnd(this: StreamWithCall): void {
  this[kCall]?.end();
}
function onStreamClose(this: StreamWithCall): void {
  this[kCall]?.closed();
}
function onWantTrailers(this: StreamWithCall): void {
  const call = this[kCall];
  if (call !== undefined) this.sendTrailers(call.trailerOut);
}

/** A request as the interceptors see it; `signal` is the call's, made when first read. */
class FastRequest {
  readonly stream = false;
  readonly requestMethod = "POST";
  constructor(
    readonly call: FastCall,
    readonly message: unknown,
    readonly method: DescMethodUnary,
    readonly service: DescService,
    readonly url: string,
    readonly header: Headers,
    readonly contextValues: ContextValues,
  ) {}
  get signal(): AbortSignal {
    return this.call.signal;
  }
}

/** The handler context, as connect's invokeUnaryImplementation builds it; `signal` read when asked. */
class FastHandlerContext {
  readonly protocolName = "grpc";
  constructor(
    readonly method: DescMethodUnary,
    private readonly req: UnaryRequest,
    private readonly call: FastCall,
  ) {}
  get service(): DescService {
    return this.req.service;
  }
  get requestMethod(): string {
    return this.req.requestMethod;
  }
  get url(): string {
    return this.req.url;
  }
  get signal(): AbortSignal {
    return this.req.signal;
  }
  get requestHeader(): Headers {
    return this.req.header;
  }
  get responseHeader(): Headers {
    return this.call.responseHeader;
  }
  get responseTrailer(): Headers {
    return this.call.responseTrailer;
  }
  get values(): ContextValues {
    return this.req.contextValues;
  }
  timeoutMs(): number | undefined {
    return this.call.timeoutMs();
  }
  abort(reason?: unknown): void {
    this.call.abort(reason);
  }
}

/** One unary call on the fast path: the stream's listeners, the call's lifetime, its response. */
class FastCall implements CallLifetime {
  readonly state: FastCallState;
  readonly responseHeader = new LiteHeaders("content-type", CONTENT_TYPE_PROTO) as unknown as Headers;
  readonly responseTrailer = new LiteHeaders("grpc-status", "0") as unknown as Headers;
  /** The trailers as sent (a Node header object), for the wantTrailers listener. */
  trailerOut: Record<string, string | string[]> = {};
  abortReason: unknown = undefined;
  private controller: AbortController | undefined;
  private listener: ((reason: unknown) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private deadline: number | undefined;
  private finished = false;
  private readonly chunks: Buffer[] = [];
  private total = 0;
  private readonly compression: ReturnType<typeof compressionNegotiate>;
  private readonly values: ContextValues;

  constructor(
    private readonly shared: Shared,
    private readonly entry: MethodEntry,
    private readonly stream: StreamWithCall,
    private readonly headers: http2.IncomingHttpHeaders,
    private readonly path: string,
    private readonly start: number,
  ) {
    const opts = shared.opts;
    this.state = { requestId: opts.requestIdFrom(headers["x-request-id"]), intercepted: false };
    const accept = headers["grpc-accept-encoding"];
    this.compression = shared.compressionFor(typeof accept === "string" ? accept : undefined);
    if (this.compression.response) this.responseHeader.set("grpc-encoding", this.compression.response.name);
    this.values = opts.contextValues(this.state);
    this.values.set(callLifetimeKey, this);
    this.values.set(callContextKey, this);
  }

  // ---- CallLifetime, and the signal made on demand ----

  get signal(): AbortSignal {
    let c = this.controller;
    if (c === undefined) {
      c = new AbortController();
      this.controller = c;
      if (this.abortReason !== undefined) c.abort(this.abortReason);
    }
    return c.signal;
  }

  abort(reason?: unknown): void {
    if (this.abortReason !== undefined) return;
    // What AbortController.abort() uses when given no reason.
    const r = reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
    this.abortReason = r;
    clearTimeout(this.timer);
    this.controller?.abort(r);
    const l = this.listener;
    this.listener = undefined;
    l?.(r);
  }

  onAbort(fn: (reason: unknown) => void): void {
    if (this.abortReason !== undefined) fn(this.abortReason);
    else this.listener = fn;
  }

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - Date.now();
  }

  // ---- the stream ----

  begin(): void {
    const stream = this.stream;
    stream[kCall] = this;
    this.shared.running.add(this);
    // Like connect: the call is aborted when the client resets the stream (with the reset's code)
    // and in any case when the call is over, so handlers' cleanup hooked to its signal runs.
    stream.on("error", ignore);
    stream.on("close", onStreamClose);

    // connect raises these before it reads the body.
    const t = this.headers["grpc-timeout"];
    const timeout = parseTimeout(typeof t === "string" ? t : null, Number.MAX_SAFE_INTEGER);
    if (timeout.error) {
      this.failEarly(timeout.error);
      return;
    }
    if (timeout.timeoutMs !== undefined) {
      const ms = timeout.timeoutMs;
      this.deadline = Date.now() + ms;
      if (ms <= 0) this.expire();
      else this.timer = setTimeout(expireCall, ms, this);
    }
    stream.on("data", onStreamData);
    stream.on("end", onStreamEnd);
  }

  expire(): void {
    this.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
  }

  closed(): void {
    this.shared.running.delete(this);
    if (!this.finished && !this.state.intercepted) this.logUnintercepted("canceled");
    this.abort(errorFromResetCode(this.stream.rstCode) ?? CALL_OVER);
    this.stream[kCall] = undefined;
  }

  // The body: one frame, collected without async iteration. Anything else (oversized, more than
  // one frame, a truncated frame, the compressed flag) goes through connect's own pipeline.
  data(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.total += chunk.length;
    if (this.total > this.shared.opts.maxRequestBytes + 5) {
      const stream = this.stream;
      stream.off("data", onStreamData);
      stream.off("end", onStreamEnd);
      stream.pause();
      this.slowPath(stream);
    }
  }

  end(): void {
    const { chunks, total } = this;
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
    if (total >= 5 && body[0] === 0 && body.readUInt32BE(1) === total - 5) {
      let message: unknown;
      try {
        message = this.entry.input.parse(body.subarray(5));
      } catch (e) {
        this.failEarly(e);
        return;
      }
      this.run(message);
    } else {
      this.slowPath(undefined);
    }
  }

  private slowPath(rest: http2.ServerHttp2Stream | undefined): void {
    firstMessage(this.chunks, rest, this.entry.input, this.shared.opts.maxRequestBytes).then(
      (m) => this.run(m),
      (e) => this.failEarly(e),
    );
  }

  private run(message: unknown): void {
    const { entry, headers } = this;
    const url = this.shared.originOf(String(headers[":authority"] ?? headers.host ?? "")) + this.path;
    const req = new FastRequest(
      this,
      message,
      entry.method,
      entry.service,
      url,
      new NodeRequestHeaders(headers) as unknown as Headers,
      this.values,
    ) as unknown as UnaryRequest;
    // Inline arrows rather than arrow fields or bound methods: tsx names every named function it
    // creates (esbuild keepNames), a defineProperty per call.
    entry.chain(req).then(
      (res) => this.succeeded(res),
      (e) => this.failed(e),
    );
  }

  private succeeded(res: UnaryResponse): void {
    let bytes: Uint8Array;
    try {
      // A reused response (services/reused-responses.ts) is encoded once.
      const reused = reusedBytes(res.message);
      bytes = reused || this.entry.output.serialize(res.message);
      if (reused === null) keepBytes(res.message, bytes);
      if (res.header !== this.responseHeader) replaceHeaders(this.responseHeader, res.header);
    } catch (e) {
      this.failed(e);
      return;
    }
    const compression = this.compression.response;
    if (compression) {
      envelopeCompress({ flags: 0, data: bytes }, compression, COMPRESS_MIN_BYTES).then(
        (env) => this.sendMessage(env.data, env.flags, res.trailer),
        (e) => this.failed(e),
      );
      return;
    }
    this.sendMessage(bytes, 0, res.trailer);
  }

  private sendMessage(bytes: Uint8Array, flags: number, trailer: Headers): void {
    const frame = Buffer.allocUnsafe(5 + bytes.byteLength);
    frame[0] = flags;
    frame.writeUInt32BE(bytes.byteLength, 1);
    frame.set(bytes, 5);
    this.respond(frame, trailer);
    this.abort(CALL_OVER);
  }

  private failed(e: unknown): void {
    const err =
      e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
    this.abort(err);
    setTrailerStatus(this.responseTrailer, err);
    this.respond(undefined, this.responseTrailer);
    if (!this.state.intercepted) this.logUnintercepted(err.code);
  }

  /** A failure before any interceptor ran: trailers straight from the error, as connect does. */
  private failEarly(e: unknown): void {
    this.failed(e);
    // The client may still be sending (an oversized body): read and drop the rest, as connect
    // does, so that the stream can close instead of waiting on flow control.
    const stream = this.stream;
    if (!stream.readableEnded) {
      stream.off("data", onStreamData);
      stream.off("end", onStreamEnd);
      stream.on("data", ignore);
      stream.resume();
    }
  }

  private respond(body: Uint8Array | undefined, trailer: Headers): void {
    this.finished = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    const h: Record<string, string | string[] | number> = { "x-request-id": this.state.requestId };
    copyHeaders(h, this.responseHeader);
    h[":status"] = 200;
    const t: Record<string, string | string[] | number> = {};
    copyHeaders(t, trailer);
    this.trailerOut = t as Record<string, string | string[]>;
    stream.respond(h, { waitForTrailers: true });
    stream.once("wantTrailers", onWantTrailers);
    if (body === undefined) stream.end();
    else stream.end(body);
  }

  private logUnintercepted(code: Code | "canceled"): void {
    // What server.ts's watchForFallbackLog writes for calls connect fails before any interceptor.
    this.state.intercepted = true;
    this.shared.opts.log.info("rpc", {
      request_id: this.state.requestId,
      procedure: this.path.slice(1),
      protocol: "grpc",
      code: code === "canceled" ? code : codeToString(code),
      http_status: 200,
      duration_ms: Math.round((performance.now() - this.start) * 1000) / 1000,
    });
  }
}

function expireCall(call: FastCall): void {
  call.expire();
}

/** The call of the innermost function (whatever request object the interceptors pass on). */
const callContextKey = createContextKey<FastCall | undefined>(undefined, {
  description: "tenantd grpc fast path call",
});

export function createGrpcFastPath(opts: GrpcFastPathOptions): GrpcFastPath {
  const methods = new Map<string, MethodEntry>();
  const limits = {
    readMaxBytes: opts.maxRequestBytes,
    writeMaxBytes: 0xffffffff,
    compressMinBytes: COMPRESS_MIN_BYTES,
  };
  /** Calls running now, aborted with the shutdown reason (one listener instead of one per call). */
  const running = new Set<FastCall>();
  opts.shutdownSignal.addEventListener(
    "abort",
    () => {
      for (const c of running) c.abort(opts.shutdownSignal.reason);
    },
    { once: true },
  );
  /** `new URL(path, "http://" + authority)` per authority, bounded: authorities are client input. */
  const origins = new Map<string, string>();
  /** compressionNegotiate per grpc-accept-encoding value, bounded likewise. */
  const negotiated = new Map<string, ReturnType<typeof compressionNegotiate>>();
  const noAccept = compressionNegotiate(ACCEPT_COMPRESSION, null, null, "grpc-accept-encoding");
  const shared: Shared = {
    opts,
    running,
    originOf(authority) {
      let o = origins.get(authority);
      if (o === undefined) {
        o = new URL(`http://${authority}`).origin;
        if (origins.size < 64) origins.set(authority, o);
      }
      return o;
    },
    compressionFor(accept) {
      if (accept === undefined) return noAccept;
      let c = negotiated.get(accept);
      if (c === undefined) {
        c = compressionNegotiate(ACCEPT_COMPRESSION, null, accept, "grpc-accept-encoding");
        if (negotiated.size < 64) negotiated.set(accept, c);
      }
      return c;
    },
  };

  const addMethod = (method: DescMethodUnary, service: DescService, impl: AnyImpl) => {
    const ser = createMethodSerializationLookup(method, undefined, undefined, limits);
    // The innermost call, as connect's invokeUnaryImplementation builds it.
    const invoke = async (req: UnaryRequest): Promise<UnaryResponse> => {
      const call = req.contextValues.get(callContextKey) as FastCall;
      const ctx = new FastHandlerContext(method, req, call) as unknown as HandlerContext;
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
      new FastCall(shared, entry, stream, headers, path, performance.now()).begin();
      return true;
    },
  };
}

/** Set as the abort reason when a call ends normally (connect aborts with a DOMException). */
const CALL_OVER = new ConnectError("the call is over", Code.Canceled);

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
