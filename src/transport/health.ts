import type * as http from "node:http";
import type * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import type { Logger } from "./logging.js";
import { drainSignalKey } from "./server.js";

// grpc.health.v1.Health (what gRPC load balancers and `grpc_health_probe` ask) and the plain HTTP
// probes docker-compose and Kubernetes use, both answered from the same readiness probes.
//
// Service names:
//   ""                       the whole server: SERVING when every probe passes
//   "tenantd.<component>"    one probe, e.g. "tenantd.postgres"
//   every served service     e.g. "tenantd.v1.TenantService": same as "" (each needs every backend)
// Anything else is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, as the protocol says.

export type Probe = () => Promise<void>;
export type ComponentState = "ok" | "failing" | "timeout";

export interface Readiness {
  ready: boolean;
  components: Record<string, ComponentState>;
}

export interface HealthOptions {
  /** Readiness probes by component name; each resolves when its backend answers. */
  probes: Record<string, Probe>;
  /** A probe slower than this counts as failing. Default 1 s. */
  probeTimeoutMs?: number;
  /** How often Watch re-evaluates. Default 1 s. */
  pollIntervalMs?: number;
  /**
   * Probe results are reused for this long, so that many Watch streams and health checkers cost
   * one probe round per interval, not one each. Default 500 ms.
   */
  cacheMs?: number;
  /** Logs component state changes (with the failure) at warn; optional. */
  log?: Logger;
  /** More service names that answer like "" (those registered on the router always do). */
  services?: string[];
  /**
   * Another drain signal for Watch, read per call. Not needed under createServer, whose
   * `drainSignalKey` context value already ends Watch streams on close.
   */
  draining?: () => AbortSignal;
}

export interface HealthService {
  /** Registers grpc.health.v1.Health. Services registered on the same router answer too. */
  register(router: ConnectRouter): void;
  /** Runs (or reuses) the probes. */
  readiness(): Promise<Readiness>;
  /**
   * Serves `GET /healthz` (liveness: 200 while the process serves HTTP) and `GET /readyz`
   * (200 or 503 with the component states). Returns false for any other path, so a fallback can
   * chain it: `(req, res) => health.handleHttp(req, res) || rest(req, res)`.
   */
  handleHttp(
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ): boolean;
}

export const COMPONENT_PREFIX = "tenantd.";

export function createHealthService(opts: HealthOptions): HealthService {
  const probeTimeoutMs = opts.probeTimeoutMs ?? 1000;
  const pollIntervalMs = opts.pollIntervalMs ?? 1000;
  const cacheMs = opts.cacheMs ?? 500;
  const names = Object.keys(opts.probes);
  let router: ConnectRouter | undefined;

  let cached: { at: number; value: Readiness } | undefined;
  let inFlight: Promise<Readiness> | undefined;
  const lastStates = new Map<string, ComponentState>();

  const runProbe = async (name: string, probe: Probe): Promise<ComponentState> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), probeTimeoutMs);
    });
    try {
      const r = await Promise.race([probe().then(() => "ok" as const), timeout]);
      if (r === "timeout") note(name, "timeout", new Error(`no answer within ${probeTimeoutMs} ms`));
      else note(name, "ok");
      return r;
    } catch (e) {
      note(name, "failing", e);
      return "failing";
    } finally {
      clearTimeout(timer);
    }
  };
  const note = (name: string, state: ComponentState, error?: unknown) => {
    const prev = lastStates.get(name);
    lastStates.set(name, state);
    if (prev === state) return;
    if (state === "ok") {
      if (prev !== undefined) opts.log?.info("component recovered", { component: name });
    } else {
      opts.log?.warn("component not ready", { component: name, state, error });
    }
  };

  const readiness = (): Promise<Readiness> => {
    if (cached && performance.now() - cached.at < cacheMs) return Promise.resolve(cached.value);
    // Concurrent callers share one probe round.
    inFlight ??= (async () => {
      const states = await Promise.all(names.map((n) => runProbe(n, opts.probes[n] as Probe)));
      const components: Record<string, ComponentState> = {};
      names.forEach((n, i) => {
        components[n] = states[i] as ComponentState;
      });
      const value = { ready: states.every((s) => s === "ok"), components };
      cached = { at: performance.now(), value };
      return value;
    })().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  /** The status of a service name, or undefined when the name is unknown. */
  const statusOf = async (service: string): Promise<ServingStatus | undefined> => {
    const serving = (ok: boolean) => (ok ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
    if (service.startsWith(COMPONENT_PREFIX)) {
      const component = service.slice(COMPONENT_PREFIX.length);
      if (Object.hasOwn(opts.probes, component)) {
        return serving((await readiness()).components[component] === "ok");
      }
    }
    if (service === "" || servedServices().has(service)) return serving((await readiness()).ready);
    return undefined;
  };

  // Read on every call, not at registration: services registered after health count too.
  const servedServices = () =>
    new Set([...(router?.handlers.map((h) => h.service.typeName) ?? []), ...(opts.services ?? [])]);

  const allNames = () => ["", ...names.map((n) => COMPONENT_PREFIX + n), ...servedServices()];

  const impl = {
    async check(req: { service: string }) {
      const status = await statusOf(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status };
    },

    async *watch(req: { service: string }, ctx: HandlerContext) {
      const extra = opts.draining?.();
      const drain = extra ? AbortSignal.any([ctx.values.get(drainSignalKey), extra]) : ctx.values.get(drainSignalKey);
      let last: ServingStatus | undefined;
      while (!ctx.signal.aborted && !drain.aborted) {
        const status = (await statusOf(req.service)) ?? ServingStatus.SERVICE_UNKNOWN;
        if (status !== last) {
          last = status;
          yield { status };
        }
        await sleep(pollIntervalMs, ctx.signal, drain);
      }
      // A draining server tells watchers to go elsewhere before the stream ends (as grpc-go's
      // health server does on Shutdown); the client reconnects to another instance.
      if (drain.aborted && !ctx.signal.aborted && last !== ServingStatus.NOT_SERVING) {
        yield { status: ServingStatus.NOT_SERVING };
      }
    },

    async list() {
      const statuses: Record<string, HealthCheckResponse> = {};
      for (const name of allNames()) {
        statuses[name] = create(HealthCheckResponseSchema, { status: (await statusOf(name)) ?? ServingStatus.UNKNOWN });
      }
      return { statuses };
    },
  };

  return {
    register(r) {
      router = r;
      r.service(Health, impl);
    },
    readiness,
    handleHttp(req, res) {
      const path = (req.url ?? "").split("?", 1)[0];
      if (path !== "/healthz" && path !== "/readyz") return false;
      // The HTTP/1 and HTTP/2 response types share these two methods but not their overloads.
      const out = res as unknown as {
        writeHead(status: number, headers: Record<string, string>): unknown;
        end(body?: string): unknown;
      };
      if (req.method !== "GET" && req.method !== "HEAD") {
        out.writeHead(405, { allow: "GET, HEAD" });
        out.end();
        return true;
      }
      const send = (status: number, body: unknown) => {
        out.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
        out.end(req.method === "HEAD" ? undefined : `${JSON.stringify(body)}\n`);
      };
      if (path === "/healthz") {
        send(200, { status: "ok" });
        return true;
      }
      readiness().then(
        (r) => send(r.ready ? 200 : 503, { status: r.ready ? "ready" : "not_ready", components: r.components }),
        () => send(503, { status: "not_ready" }),
      );
      return true;
    },
  };
}

/** Creates the health service and registers it on `router` in one step. */
export function registerHealth(router: ConnectRouter, opts: HealthOptions): HealthService {
  const health = createHealthService(opts);
  health.register(router);
  return health;
}

/**
 * A complete fallback handler: /healthz and /readyz from `health` (or from a health service built
 * on `probes`), 404 for everything else. Pass the service `registerHealth` returned so that gRPC
 * and HTTP share one probe cache.
 */
export function healthHttpHandler(
  healthOrProbes: HealthService | Record<string, Probe>,
): (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void {
  const health =
    typeof (healthOrProbes as HealthService).handleHttp === "function"
      ? (healthOrProbes as HealthService)
      : createHealthService({ probes: healthOrProbes as Record<string, Probe> });
  return (req, res) => {
    if (health.handleHttp(req, res)) return;
    const out = res as unknown as {
      writeHead(status: number, headers: Record<string, string>): unknown;
      end(body?: string): unknown;
    };
    out.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    out.end("not found\n");
  };
}

/** Resolves after `ms` or as soon as any signal aborts, leaving no timer behind. */
function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) return done();
      s.addEventListener("abort", done, { once: true });
    }
  });
}
