// LimitService through a real server while src/app.ts does not mount it yet: a whole tenantd
// from startHarness provides owner keys, tenants, tenant keys and the key verifier; the
// LimitService is mounted on a second server with the interceptors app.ts builds (errors, auth
// over the same verifier and tenant store, validation), over the same database and clock. Once
// the service is wired into app.ts these tests can call the harness's own port instead.
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { LimitService } from "../../gen/tenantd/v1/limit_service_pb.js";
import { createAuditRecorder } from "../../src/services/audit.js";
import { createLimitService, type LimitServiceDeps } from "../../src/services/limit-service.js";
import { createOverrideCache, type OverrideCache } from "../../src/services/limits/override-cache.js";
import type { FailMode } from "../../src/services/rate-limit/policy.js";
import type { RateLimiter } from "../../src/services/rate-limit/types.js";
import type { QuotaStore } from "../../src/store/limit-ports.js";
import { createMemoryQuotaStore } from "../../src/store/memory/quota-store.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";
import { createLimitStore, createOverrideStore } from "../../src/store/postgres/limit-store.js";
import { createRedis, whenReady } from "../../src/store/redis/client.js";
import { createRedisQuotaStore } from "../../src/store/redis/quota-store.js";
import { createRateLimitRedis, createRedisRateLimiter } from "../../src/store/redis/rate-limiter.js";
import { authInterceptor } from "../../src/transport/interceptors/auth.js";
import { errorInterceptor } from "../../src/transport/interceptors/errors.js";
import { validationInterceptor } from "../../src/transport/interceptors/validation.js";
import { requestIdKey } from "../../src/transport/logging.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { type Harness, startHarness } from "../helpers/app.js";
import { REDIS_URL } from "./helpers.js";

export interface LimitHarness {
  h: Harness;
  server: TestServer;
  /** Connect protocol client of the LimitService server. */
  limits: Client<typeof LimitService>;
  /** gRPC protocol client of the same server. */
  limitsGrpc: Client<typeof LimitService>;
  overrideCache: OverrideCache;
  close(): Promise<void>;
}

export interface LimitHarnessOptions {
  /** Counter store; default Redis when REDIS_URL is set, else in process. */
  quota?: QuotaStore;
  rateLimiter?: RateLimiter;
  quotaFailMode?: FailMode;
  rateLimitFailMode?: FailMode;
  timeoutMs?: number;
}

/** A Redis connection to a port nothing listens on: every command fails at once. */
export function deadRedisQuotaStore(): QuotaStore {
  const redis = createRedis({ url: "redis://127.0.0.1:1", timeoutMs: 100, name: "tenantd-test-dead" });
  redis.on("error", () => {});
  return createRedisQuotaStore({ redis, ownsConnection: true });
}

export async function startLimitHarness(opts: LimitHarnessOptions = {}): Promise<LimitHarness> {
  const h = await startHarness();
  const closers: Array<() => Promise<void>> = [];
  let quota = opts.quota;
  if (!quota) {
    if (REDIS_URL) {
      const redis = createRedis({ url: REDIS_URL, timeoutMs: 2000, name: "tenantd-test-limits" });
      redis.on("error", () => {});
      await whenReady(redis, 5000);
      quota = createRedisQuotaStore({ redis, ownsConnection: true });
    } else {
      quota = createMemoryQuotaStore();
    }
  }
  let rateLimiter = opts.rateLimiter;
  if (!rateLimiter) {
    if (REDIS_URL) {
      const redis = createRateLimitRedis({ url: REDIS_URL, timeoutMs: 2000 });
      await whenReady(redis, 5000);
      rateLimiter = createRedisRateLimiter({ redis, ownsConnection: true });
    } else {
      rateLimiter = createMemoryRateLimiter({ clock: h.clock });
    }
  }
  const q = quota;
  const rl = rateLimiter;
  closers.push(
    () => q.close(),
    () => rl.close(),
  );
  const overrides = createOverrideStore(h.db.knex);
  const overrideCache = createOverrideCache({ store: overrides, clock: h.clock });
  const deps: LimitServiceDeps = {
    limits: createLimitStore(h.db.knex),
    overrides,
    quota: q,
    rateLimiter: rl,
    tenants: h.app.stores.tenants,
    clock: h.clock,
    audit: createAuditRecorder({ audit: h.app.stores.audit, clock: h.clock, onError: () => {} }),
    quotaFailMode: opts.quotaFailMode ?? "closed",
    rateLimitFailMode: opts.rateLimitFailMode ?? "closed",
    timeoutMs: opts.timeoutMs ?? 2000,
    overrideCache,
    bus: h.app.bus,
  };
  const service = createLimitService(deps);
  const server = await startTestServer({
    routes: (r) => {
      r.service(LimitService, service);
    },
    interceptors: [
      errorInterceptor(() => {}),
      authInterceptor({
        verifier: h.app.verifier,
        tenants: h.app.stores.tenants,
        requestIdOf: (values) => values.get(requestIdKey),
      }),
      validationInterceptor(),
    ],
  });
  return {
    h,
    server,
    limits: createClient(LimitService, createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1" })),
    limitsGrpc: createClient(LimitService, createGrpcTransport({ baseUrl: server.baseUrl })),
    overrideCache,
    async close() {
      await server.close(100);
      for (const c of closers) await c().catch(() => {});
      await h.close();
    },
  };
}
