import { setMaxListeners } from "node:events";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  createContextKey,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { codeFromHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { type ConnectNodeAdapterOptions, connectNodeAdapter } from "@connectrpc/connect-node";
import { createCors } from "./cors.js";
import { deadlineInterceptor } from "./deadline.js";
import { createGrpcFastPath, type GrpcFastPath } from "./grpc-fast.js";
import {
  type CallState,
  callStateKey,
  createLogger,
  isRequestLogInterceptor,
  type Logger,
  protocolOf,
  requestIdFrom,
  requestLogInterceptor,
} from "./logging.js";

// One plaintext TCP port for every protocol. HTTP/2 without TLS (h2c) is only spoken by clients
// that know in advance ("prior knowledge"): gRPC clients, `buf curl --http2-prior-knowledge`. Every
// such connection starts with the fixed HTTP/2 preface, which no HTTP/1.x request can start with,
// so the first bytes decide which Node server gets the socket. Both servers share one Connect
// handler, so every protocol sees the same routes, interceptors and limits.

export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface ServerOptions {
  routes: (router: ConnectRouter) => void;
  /**
   * Interceptors in order, outermost first. The server adds two of its own in front of them:
   * the request log (request id, one line per call) and the deadline ceiling, so every interceptor
   * given here already sees the call's request id and effective deadline.
   */
  interceptors: Interceptor[];
  /** Largest accepted request message (per message for streams), in bytes. */
  maxRequestBytes: number;
  /** Longest a unary or client-streaming call may run; a client's shorter deadline wins. */
  requestTimeoutMs: number;
  log: Logger;
  /**
   * Browser origins allowed to call cross-origin (see cors.ts); applied to every request before
   * any protocol handler, so Connect, gRPC-Web and REST share one policy. Default: none, no CORS.
   */
  corsOrigins?: readonly string[];
  /**
   * Serve unary gRPC calls over HTTP/2 on the fast path (grpc-fast.ts) instead of connect-node,
   * with the same interceptors and implementations and the same bytes on the wire. The services
   * it serves are captured from the `router.service` calls `routes` makes. Default: true.
   */
  grpcFastPath?: boolean;
  /** Handles every request that is not an RPC path: /healthz, /readyz, REST. Default: 404. */
  fallback?: (req: NodeRequest, res: NodeResponse) => void;
}

export interface Server {
  /** Starts listening; port 0 picks a free port, which the result reports. */
  listen(port: number, host?: string): Promise<{ port: number }>;
  /**
   * Stops accepting connections at once, lets in-flight calls finish for up to `graceMs`, then
   * aborts what is left and destroys every connection. Resolves when all connections are gone;
   * calling it again returns the same promise.
   */
  close(graceMs: number): Promise<void>;
  /** Aborted when `close` starts: long-lived streams (health Watch) end on it. */
  readonly draining: AbortSignal;
  /**
   * The context values an RPC on this request gets. A fallback that dispatches into Connect's
   * handlers itself (the REST transcoder) passes them on, so that the call keeps the request id
   * the HTTP layer assigned and is logged once, by the request log interceptor.
   */
  contextValues(req: NodeRequest): ContextValues;
}

/**
 * Aborted when the server starts draining. Handlers of long-lived streams read it from their
 * context values (`ctx.values.get(drainSignalKey)`) and end the stream, so that shutdown does not
 * have to wait out the grace period for them. Unary calls ignore it and finish normally.
 */
export const drainSignalKey = createContextKey<AbortSignal>(new AbortController().signal, {
  description: "tenantd server draining",
});

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** A connection that has sent no complete preface or request line by then is dropped. */
const SNIFF_TIMEOUT_MS = 10_000;
/** Probes are frequent and uninteresting; their lines only show at debug level. */
const QUIET_PATHS = new Set(["/healthz", "/readyz"]);

export function createServer(opts: ServerOptions): Server {
  const { log } = opts;
  if (opts.interceptors.some(isRequestLogInterceptor)) {
    throw new Error("createServer installs the request log interceptor itself; remove it from `interceptors`");
  }
  const draining = new AbortController();
  // Aborted at the end of the grace period: Connect then aborts every handler's `ctx.signal`,
  // giving work that honours it a last chance to stop before its connection is destroyed.
  const shutdown = new AbortController();
  // Every running call listens to both signals (Connect links each call's signal to `shutdown`),
  // so hundreds of listeners are normal here, not the leak Node's default warning suspects.
  setMaxListeners(0, draining.signal, shutdown.signal);

  const cors = createCors({ origins: opts.corsOrigins ?? [] });
  let rpcPaths = new Set<string>();
  const states = new WeakMap<NodeRequest, CallState>();
  const contextValuesOf = (req: NodeRequest): ContextValues => {
    const values = createContextValues();
    values.set(callStateKey, states.get(req));
    values.set(drainSignalKey, draining.signal);
    return values;
  };
  const interceptors = [requestLogInterceptor(log), deadlineInterceptor(opts.requestTimeoutMs), ...opts.interceptors];
  const fast: GrpcFastPath | undefined =
    opts.grpcFastPath === false
      ? undefined
      : createGrpcFastPath({
          interceptors,
          maxRequestBytes: opts.maxRequestBytes,
          shutdownSignal: shutdown.signal,
          log,
          requestIdFrom,
          contextValues: (state) => {
            const values = createContextValues();
            values.set(callStateKey, state);
            values.set(drainSignalKey, draining.signal);
            return values;
          },
        });
  const handler = connectNodeAdapter({
    routes: (router) => {
      // The fast path needs the implementations themselves, which the router keeps only wrapped in
      // its protocol handlers: it sees every registration on the way through.
      opts.routes(fast ? capturingRouter(router, fast) : router);
      rpcPaths = new Set(router.handlers.map((h) => h.requestPath));
    },
    interceptors,
    readMaxBytes: opts.maxRequestBytes,
    grpc: true,
    grpcWeb: true,
    connect: true,
    shutdownSignal: shutdown.signal,
    contextValues: (req) => contextValuesOf(req),
    // Connect types its responses loosely; both Node response kinds are what it passes.
    fallback: (opts.fallback ?? notFound) as unknown as ConnectNodeAdapterOptions["fallback"],
  });

  // --- connection bookkeeping, so that close() can drain and never hang -----------------------
  const sniffing = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  /** HTTP/1 sockets and how many requests each is serving right now. */
  const h1Sockets = new Map<net.Socket, number>();
  let closing = false;

  const onRequest = (req: NodeRequest, res: NodeResponse) => {
    const state: CallState = { requestId: requestIdFrom(req.headers["x-request-id"]), intercepted: false };
    states.set(req, state);
    // Set at the HTTP layer so every response carries it, including the ones Connect produces
    // before any interceptor runs (unknown path, oversized body) and the fallback's.
    res.setHeader("x-request-id", state.requestId);
    if (closing && res instanceof http.ServerResponse) res.setHeader("connection", "close");
    watchForFallbackLog(req, res, state);
    // Before Connect: it would answer a preflight OPTIONS with 405/404, and its responses must
    // already carry the CORS headers set here (Node merges them into its writeHead).
    if (cors(req, res)) return;
    try {
      (handler as (req: NodeRequest, res: NodeResponse) => void)(req, res);
    } catch (e) {
      // Connect throws synchronously for requests it cannot even describe (an HTTP/1.0 request
      // without a Host header); inside the 'request' event that would crash the process.
      log.debug("request refused before routing", { request_id: state.requestId, error: e });
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader("connection", "close");
      }
      res.end();
    }
  };

  // When the request log interceptor did not see the call (Connect failed it while parsing, or it
  // is not an RPC at all), log it here from what went over the wire.
  const watchForFallbackLog = (req: NodeRequest, res: NodeResponse, state: CallState) => {
    const start = performance.now();
    let grpcStatus: string | undefined;
    let lastChunk: unknown;
    const addTrailers = res.addTrailers.bind(res);
    res.addTrailers = (trailers: http.OutgoingHttpHeaders | readonly [string, string][]) => {
      const s = Array.isArray(trailers) ? undefined : (trailers as http.OutgoingHttpHeaders)["grpc-status"];
      if (s !== undefined) grpcStatus = String(s);
      addTrailers(trailers as http.OutgoingHttpHeaders);
    };
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    (res as { write: (...args: unknown[]) => boolean }).write = (...args: unknown[]) => {
      lastChunk = args[0];
      return write(...args);
    };
    res.once("close", () => {
      if (state.intercepted) return;
      const path = (req.url ?? "").split("?", 1)[0] ?? "";
      const isRpc = rpcPaths.has(path);
      const code = !res.writableEnded ? "canceled" : wireCode(res, grpcStatus, lastChunk);
      const line = {
        request_id: state.requestId,
        procedure: isRpc ? path.slice(1) : `${req.method} ${path}`,
        protocol: isRpc ? protocolOf(req.headers["content-type"]) : "http",
        code,
        http_status: res.statusCode,
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
      };
      if (!isRpc && QUIET_PATHS.has(path)) log.debug("http", line);
      else log.info(isRpc ? "rpc" : "http", line);
    });
  };

  const h1 = http.createServer(onRequest);
  const h2 = http2.createServer({}, onRequest);
  if (fast) {
    // Node's compatibility layer (Http2ServerRequest/Response, then 'request') is itself a
    // 'stream' listener. It is taken off and called only for the streams the fast path leaves, so
    // that fast-path calls pay for neither the compatibility objects nor connect's plumbing.
    const compat = h2.listeners("stream");
    if (compat.length !== 1) throw new Error(`expected one http2 'stream' listener, found ${compat.length}`);
    const onCompatStream = compat[0] as (...args: unknown[]) => void;
    h2.removeListener("stream", onCompatStream);
    h2.on(
      "stream",
      (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, raw: string[]) => {
        if (fast.handle(stream, headers)) return;
        onCompatStream.call(h2, stream, headers, flags, raw);
      },
    );
  }

  h1.on("connection", (socket: net.Socket) => {
    h1Sockets.set(socket, 0);
    socket.once("close", () => h1Sockets.delete(socket));
  });
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    h1Sockets.set(socket, (h1Sockets.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const n = (h1Sockets.get(socket) ?? 1) - 1;
      if (h1Sockets.has(socket)) h1Sockets.set(socket, n);
      // A keep-alive connection whose response began before shutdown carries no
      // `connection: close`; end it once it has nothing left to send.
      if (closing && n === 0) socket.end();
    });
  });
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // Session errors (a client resetting the connection) are the client's business; without a
    // listener they would be rethrown as uncaught exceptions.
    session.on("error", (err) => log.debug("http2 session error", { error: err }));
    if (closing) session.close();
  });

  const tcp = net.createServer((socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    sniffing.add(socket);
    let buffered: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), SNIFF_TIMEOUT_MS);
    const cleanup = () => {
      clearTimeout(timer);
      sniffing.delete(socket);
      socket.off("data", onData);
      socket.off("error", onError);
      socket.off("close", cleanup);
    };
    const onError = () => socket.destroy();
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, PREFACE.length);
      const isH2 = buffered.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && n < PREFACE.length) return; // could still be HTTP/2: wait for more bytes
      cleanup();
      // Hand the bytes back and let the chosen server read them as if it had accepted the socket.
      // Pausing keeps them in the socket's buffer: the HTTP/2 session drains that buffer itself
      // on the next tick (and then reads the socket's handle directly), while the HTTP/1 server
      // reads through 'data' events and needs the stream flowing again.
      socket.pause();
      socket.unshift(buffered);
      if (isH2) {
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", onError);
    socket.once("close", cleanup);
  });

  let closed: Promise<void> | undefined;

  return {
    draining: draining.signal,
    contextValues: contextValuesOf,

    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen({ port, host }, () => {
          tcp.off("error", reject);
          // Node's HTTP/1 server enforces headersTimeout and requestTimeout (slow-client defences)
          // from a timer it starts on 'listening', which it never sees since `tcp` listens for it.
          h1.emit("listening");
          const addr = tcp.address() as net.AddressInfo;
          log.debug("listening", { port: addr.port, host: addr.address });
          resolve({ port: addr.port });
        });
      });
    },

    close(graceMs) {
      if (closed) return closed;
      closing = true;
      draining.abort();
      closed = new Promise<void>((resolve) => {
        // The listener closes now (new connections are refused); the callback fires once the
        // last accepted connection is gone.
        if (tcp.listening) tcp.close(() => resolve());
        else resolve();
        for (const s of sniffing) s.destroy();
        // GOAWAY: the client opens no new streams here, running streams finish, then the session
        // closes itself. Idle sessions close at once.
        for (const s of sessions) s.close();
        for (const [socket, active] of h1Sockets) if (active === 0) socket.end();
        // Stops the HTTP/1 timeout timer; the server itself never listened, so the error that
        // closing a non-listening server reports is expected.
        h1.close(() => {});

        const force = setTimeout(() => {
          log.warn("shutdown grace period over; aborting calls still running", {
            http2_sessions: sessions.size,
            http1_connections: h1Sockets.size,
          });
          shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
          // One macrotask lets handlers that honour the signal write their error first.
          setImmediate(() => {
            for (const s of sessions) s.destroy();
            for (const socket of h1Sockets.keys()) socket.destroy();
          });
        }, graceMs);
        force.unref();
      }).then(() => {
        log.debug("server closed");
      });
      return closed;
    },
  };
}

/** A router that reports every registration to the fast path before making it. */
function capturingRouter(router: ConnectRouter, fast: GrpcFastPath): ConnectRouter {
  const wrapped: ConnectRouter = {
    get handlers() {
      return router.handlers;
    },
    service(service, impl, options) {
      router.service(service, impl, options);
      fast.addService(service, impl, options);
      return wrapped;
    },
    rpc(method, impl, options) {
      router.rpc(method, impl, options);
      fast.addRpc(method, impl, options);
      return wrapped;
    },
  };
  return wrapped;
}

function notFound(_req: NodeRequest, res: NodeResponse): void {
  res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
  res.end("not found\n");
}

/** The RPC code as sent: a gRPC trailer, a gRPC-Web trailer frame, a Connect error body, or the HTTP status. */
function wireCode(res: NodeResponse, grpcStatus: string | undefined, lastChunk: unknown): string {
  const header = res.getHeader("grpc-status");
  const status = grpcStatus ?? (header !== undefined ? String(header) : undefined);
  if (status !== undefined) return status === "0" ? "ok" : codeToString(Number(status) as Code);
  if (lastChunk instanceof Uint8Array || typeof lastChunk === "string") {
    const text = typeof lastChunk === "string" ? lastChunk : Buffer.from(lastChunk).toString("latin1");
    const web = /grpc-status:\s*(\d+)/.exec(text);
    if (web?.[1] !== undefined) return web[1] === "0" ? "ok" : codeToString(Number(web[1]) as Code);
    const connect = /"code"\s*:\s*"([a-z_]+)"/.exec(text);
    if (connect?.[1] !== undefined) return connect[1];
  }
  if (res.statusCode >= 200 && res.statusCode < 300) return "ok";
  return codeToString(codeFromHttpStatus(res.statusCode));
}

// ---------------------------------------------------------------------------------------------

export interface TestServer {
  server: Server;
  port: number;
  /** `http://127.0.0.1:<port>`: the base URL for every transport. */
  baseUrl: string;
  close(graceMs?: number): Promise<void>;
}

/**
 * Starts a server on a free loopback port with quiet, small defaults; for tests. Each test file
 * gets its own server, so tests never share ports or state.
 */
export async function startTestServer(
  opts: Pick<ServerOptions, "routes"> & Partial<Omit<ServerOptions, "routes">>,
): Promise<TestServer> {
  const server = createServer({
    interceptors: [],
    maxRequestBytes: 1024 * 1024,
    requestTimeoutMs: 30_000,
    log: createLogger("silent"),
    ...opts,
  });
  const { port } = await server.listen(0, "127.0.0.1");
  return { server, port, baseUrl: `http://127.0.0.1:${port}`, close: (graceMs = 1000) => server.close(graceMs) };
}
