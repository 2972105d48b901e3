// Composition root: the only place that picks concrete adapters. It builds the stores, the
// cache-invalidation bus, the key verifier, the services and the transport, and returns an App
// with listen() and close(). main.ts reads the config and handles signals; tests build an App
// with an injected clock and a test database.
import { randomBytes } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.js";
import { ConfigService } from "../gen/tenantd/v1/config_service_pb.js";
import { KeyService } from "../gen/tenantd/v1/key_service_pb.js";
import { LimitService } from "../gen/tenantd/v1/limit_service_pb.js";
import { TenantService } from "../gen/tenantd/v1/tenant_service_pb.js";
import { UsageService } from "../gen/tenantd/v1/usage_service_pb.js";
import type { Config } from "./config.js";
import { type Clock, systemClock } from "./domain/clock.js";
import { PageTokens } from "./domain/page-token.js";
import { createAuditRecorder } from "./services/audit.js";
import { bootstrapOwnerKey } from "./services/bootstrap.js";
import { createLocalInvalidationBus, type InvalidationBus } from "./services/invalidation.js";
import { createKeyService } from "./services/key-service.js";
import { KeyVerifier } from "./services/key-verifier.js";
import { createLimitService } from "./services/limit-service.js";
import { createOverrideCache } from "./services/limits/override-cache.js";
import { PLAIN_REQUEST_CHECKS } from "./services/plain-requests.js";
import { createPlanCache } from "./services/rate-limit/policy.js";
import type { RateLimiter } from "./services/rate-limit/types.js";
import { createTenantService } from "./services/tenant-service.js";
import { unimplementedService } from "./services/unimplemented.js";
import { createDirectUsageSink, UsagePipeline, type UsageSink } from "./services/usage/pipeline.js";
import { createUsageService } from "./services/usage-service.js";
import { createMemoryQuotaStore } from "./store/memory/quota-store.js";
import { createMemoryRateLimiter } from "./store/memory/rate-limiter.js";
import type { Stores } from "./store/ports.js";
import { type Database, openDatabase } from "./store/postgres/database.js";
import { createPostgresStores } from "./store/postgres/index.js";
import { createLimitStore, createOverrideStore } from "./store/postgres/limit-store.js";
import { migrateAll } from "./store/postgres/migrate.js";
import { createUsageStore } from "./store/postgres/usage-store.js";
import { createRedis, whenReady } from "./store/redis/client.js";
import { createRedisInvalidationBus } from "./store/redis/invalidation-bus.js";
import { createRedisQuotaStore } from "./store/redis/quota-store.js";
import { createRateLimitRedis, createRedisRateLimiter } from "./store/redis/rate-limiter.js";
import { purgeTenantKeys } from "./store/redis/tenant-keys.js";
import { createRedisUsageBuffer } from "./store/redis/usage-buffer.js";
import { assertAccessDeclared } from "./transport/access.js";
import { type HealthService, registerHealth } from "./transport/health.js";
import { authInterceptor, trustedCallerInterceptor } from "./transport/interceptors/auth.js";
import { ERROR_DOMAIN, errorInterceptor } from "./transport/interceptors/errors.js";
import { createRateLimiting, type RateLimiting } from "./transport/interceptors/rate-limit.js";
import { usageInterceptor } from "./transport/interceptors/usage.js";
import { validationInterceptor } from "./transport/interceptors/validation.js";
import { createLogger, type Logger, requestIdKey } from "./transport/logging.js";
import { registerReflection } from "./transport/reflection.js";
import { createDocsHandler } from "./transport/rest/docs.js";
import { tenantdOpenApi } from "./transport/rest/document.js";
import { createRestHandler, writeNotFound } from "./transport/rest/handler.js";
import { createServer, type Server } from "./transport/server.js";
import { installShortAsciiTextEncoding } from "./transport/text-encoding.js";

/** The five tenantd services, in the order reflection lists them. */
export const TENANTD_SERVICES: DescService[] = [TenantService, KeyService, ConfigService, LimitService, UsageService];
/** Declared in the contract, answering UNIMPLEMENTED until built (see the README's table). */
export const PENDING_SERVICES: DescService[] = [ConfigService];

export interface AppOptions {
  clock?: Clock;
  log?: Logger;
  /** An already open (and migrated) database, e.g. a test database. */
  database?: Database;
  /** Where the bootstrap banner goes; default stdout. */
  print?: (text: string) => void;
  /**
   * For the bench's "authenticated call vs the same call with auth disabled" baseline only
   * (bench/unauthenticated-main.ts); never set from configuration. Each caller is verified once,
   * then trusted: no key verification, per-call rate limit or usage count on later calls
   * (trustedCallerInterceptor). A server started so says so in its log.
   */
  benchTrustCallers?: boolean;
}

export interface App {
  readonly config: Readonly<Config>;
  readonly stores: Stores;
  readonly verifier: KeyVerifier;
  readonly bus: InvalidationBus;
  /** Usage metering: the in-process meter and its flush / roll-up cycle (tests call flush()). */
  readonly usage: UsagePipeline;
  /** The owner key created by this start's bootstrap, if any (tests use it). */
  readonly bootstrapKey: string | undefined;
  listen(port?: number, host?: string): Promise<{ port: number }>;
  /** Graceful: stops accepting, drains in-flight calls, flushes batches, closes pools. */
  close(): Promise<void>;
}

export async function createApp(config: Readonly<Config>, opts: AppOptions = {}): Promise<App> {
  installShortAsciiTextEncoding();
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createLogger(config.logLevel);
  const print = opts.print ?? ((t: string) => process.stdout.write(t));

  const ownsDatabase = opts.database === undefined;
  const db =
    opts.database ??
    (await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, dbTimeoutMs: config.dbTimeoutMs }));
  let redis: Redis | undefined;
  let subscriber: Redis | undefined;
  let limiterRedis: Redis | undefined;
  let rateLimiting: RateLimiting | undefined;
  try {
    if (ownsDatabase) {
      await migrateAll(db, {
        // One line per phase: start-up with many tenants should not print one line per schema.
        onProgress: (p) => {
          if (p.done === p.total) log.info("migrated", { ...p });
        },
      });
    }
    const stores = createPostgresStores(db);

    let bus: InvalidationBus;
    if (config.redisUrl) {
      redis = createRedis({ url: config.redisUrl, timeoutMs: config.redisTimeoutMs, name: "tenantd" });
      subscriber = createRedis({ url: config.redisUrl, timeoutMs: config.redisTimeoutMs, name: "tenantd-sub" });
      redis.on("error", (err) => log.debug("redis error", { error: String(err) }));
      await whenReady(redis, 5000).catch((err) => log.warn("redis not ready at start", { error: String(err) }));
      bus = createRedisInvalidationBus({
        publisher: redis,
        subscriber,
        onError: (err) => log.warn("invalidation bus", { error: String(err) }),
      });
    } else {
      bus = createLocalInvalidationBus();
    }

    const pageSecret = await stores.settings.getOrCreate("page_token_secret", () => randomBytes(32).toString("hex"));
    const pageTokens = new PageTokens(Buffer.from(pageSecret, "hex"), () => clock.now());
    const verifier = new KeyVerifier({
      keys: stores.keys,
      bus,
      clock,
      ttlMs: config.keyCacheTtlMs,
      flushMs: config.lastUsedFlushMs,
      onFlushError: (err) => log.warn("last-used flush failed", { error: String(err) }),
    });
    const audit = createAuditRecorder({
      audit: stores.audit,
      clock,
      onError: (err) => log.error("audit write failed", { error: String(err) }),
    });

    const cleanupRedis = redis;
    const tenantService = createTenantService({
      tenants: stores.tenants,
      clock,
      pageTokens,
      bus,
      audit,
      afterDelete: cleanupRedis
        ? async (tenantId) => {
            await purgeTenantKeys(cleanupRedis, tenantId);
          }
        : undefined,
      onCleanupError: (err) => log.warn("removing a deleted tenant's Redis keys failed", { error: String(err) }),
    });
    // Rate limits on every authenticated call (key and tenant buckets in one decision), and the
    // LimitService's quotas and buckets. The limiter has a Redis connection of its own so that
    // the hot path never queues behind pub/sub or slower commands.
    let limiter: RateLimiter;
    let limiterClock: Clock;
    if (config.redisUrl) {
      limiterRedis = createRateLimitRedis({ url: config.redisUrl, timeoutMs: config.redisTimeoutMs });
      limiterRedis.on("error", (err) => log.debug("rate-limit redis error", { error: String(err) }));
      await whenReady(limiterRedis, 5000).catch((err) =>
        log.warn("rate-limit redis not ready at start", { error: String(err) }),
      );
      limiter = createRedisRateLimiter({ redis: limiterRedis, ownsConnection: true });
      // Redis decides with its own TIME, so retry times are real time.
      limiterClock = systemClock;
    } else {
      limiter = createMemoryRateLimiter({ clock });
      limiterClock = clock;
    }
    const planCache = createPlanCache({
      load: async (id) => (await stores.tenants.get(id))?.plan ?? null,
      clock,
      ttlMs: config.rateLimitPlanCacheMs,
      onError: (err) => log.warn("plan lookup failed; the default plan applies", { error: String(err) }),
    });
    bus.subscribe((e) => {
      if (e.kind === "tenant") planCache.invalidate(e.tenantId);
      else if (e.kind === "all") planCache.invalidate();
    });
    const overrideStore = createOverrideStore(db.knex);
    const overrideCache = createOverrideCache({
      store: overrideStore,
      clock,
      onError: (err) => log.warn("rate-limit override load failed", { error: String(err) }),
    });
    const limiting = createRateLimiting({
      limiter,
      limiterClock,
      clock,
      planOf: planCache.planOf,
      overrides: overrideCache,
      plans: config.rateLimitPlans,
      failMode: config.rateLimitFailMode,
      timeoutMs: config.rateLimitTimeoutMs,
      // Leases save round trips; the in-process limiter has none to save.
      leaseMax: redis ? config.rateLimitLeaseMax : 1,
      onError: (err, failures) =>
        log.warn("rate limiter unavailable", { error: String(err), failures, fail_mode: config.rateLimitFailMode }),
    });
    rateLimiting = limiting;
    const quota = redis ? createRedisQuotaStore({ redis }) : createMemoryQuotaStore();
    const limitService = createLimitService({
      limits: createLimitStore(db.knex),
      overrides: overrideStore,
      quota,
      rateLimiter: limiter,
      tenants: stores.tenants,
      clock,
      audit,
      bus,
      quotaFailMode: config.quotaFailMode,
      rateLimitFailMode: config.rateLimitFailMode,
      timeoutMs: config.redisTimeoutMs,
      plans: config.rateLimitPlans,
      overrideCache,
      onBackendError: (err, what) => log.warn("limit backend failed", { what, error: String(err) }),
      // CheckRateLimit's bucket is decided with the caller's per-call buckets, in one Redis call.
      perCallFolds: limiting,
    });

    // Usage: counted in process, flushed every cycle to Redis (rolled up into Postgres by the
    // replica holding the roll-up lock) or, without Redis, straight to Postgres.
    const usageStore = createUsageStore(db.knex);
    let zoneOf: (tenantId: string) => Promise<string | null> = async () => null;
    const zoneOfLate = (tenantId: string) => zoneOf(tenantId);
    const usageRedis = redis;
    const usageSink: UsageSink = usageRedis
      ? createRedisUsageBuffer({
          redis: usageRedis,
          store: usageStore,
          zoneOf: zoneOfLate,
          lockTtlMs: Math.max(10_000, config.usageFlushMs * 5),
          namespace: await stores.settings.getOrCreate("usage_namespace", () => randomBytes(8).toString("hex")),
        })
      : createDirectUsageSink(usageStore, zoneOfLate);
    const usagePipeline = new UsagePipeline({
      sink: usageSink,
      store: usageStore,
      clock,
      flushMs: config.usageFlushMs,
      retentionDays: config.usageRetentionDays,
      onError: (what, err) => log.warn(`${what} failed`, { error: String(err) }),
    });
    const usage = createUsageService({
      store: usageStore,
      pipeline: usagePipeline,
      tenants: stores.tenants,
      limits: createLimitStore(db.knex),
      clock,
      pageTokens,
      bus,
    });
    zoneOf = usage.zoneOf;
    usagePipeline.start();

    const keyService = createKeyService({
      keys: stores.keys,
      tenants: stores.tenants,
      verifier,
      clock,
      pageTokens,
      bus,
      audit,
    });
    assertAccessDeclared(TENANTD_SERVICES);

    const probes: Record<string, () => Promise<void>> = { postgres: () => stores.ping() };
    if (redis) {
      const r = redis;
      probes.redis = async () => {
        await r.ping();
      };
    }
    let health!: HealthService;
    let connectRouter: ConnectRouter | undefined;
    const routes = (router: ConnectRouter) => {
      connectRouter = router;
      router.service(TenantService, tenantService);
      router.service(KeyService, keyService);
      router.service(LimitService, limitService);
      router.service(UsageService, usage.service);
      for (const s of PENDING_SERVICES) router.service(s, unimplementedService(s));
      health = registerHealth(router, { probes, log, services: TENANTD_SERVICES.map((s) => s.typeName) });
      registerReflection(router, { extraFiles: [file_google_rpc_error_details] });
    };
    const authDeps = {
      verifier,
      tenants: stores.tenants,
      requestIdOf: (values: { get<T>(key: { id: symbol; defaultValue: T }): T }) => values.get(requestIdKey),
    };
    if (opts.benchTrustCallers) log.warn("authentication disabled after each caller's first call (bench baseline)");
    const server: Server = createServer({
      routes,
      interceptors: [
        errorInterceptor((err, procedure) => log.error("internal error", { procedure, error: errorText(err) })),
        ...(opts.benchTrustCallers
          ? [trustedCallerInterceptor(authDeps)]
          : [
              authInterceptor(authDeps),
              limiting.interceptor,
              ...(config.usageCounting ? [usageInterceptor(usagePipeline.meter, () => clock.now())] : []),
            ]),
        validationInterceptor(PLAIN_REQUEST_CHECKS),
      ],
      maxRequestBytes: config.maxRequestBytes,
      requestTimeoutMs: config.requestTimeoutMs,
      corsOrigins: config.corsOrigins,
      grpcFastPath: config.grpcFastPath,
      log,
      // Not an RPC path: the health probes, the OpenAPI document and its reference page, then the
      // REST routes of the same handlers (so REST runs through the interceptors above), then a
      // google.rpc.Status 404.
      fallback: (req, res) => {
        if (health.handleHttp(req, res)) return;
        if (docs(req, res)) return;
        rest(req, res).then(
          (handled) => {
            if (!handled) writeNotFound(res, ERROR_DOMAIN);
          },
          (err) => {
            log.error("rest fallback failed", { error: errorText(err) });
            if (!res.headersSent) res.writeHead(500);
            res.end();
          },
        );
      },
    });
    // Built after createServer has run `routes`: start-up fails here on a bad or duplicate route.
    const rest = createRestHandler({
      services: TENANTD_SERVICES,
      handlers: () => connectRouter?.handlers ?? [],
      maxRequestBytes: config.maxRequestBytes,
      contextValues: (req) => server.contextValues(req),
      errorDomain: ERROR_DOMAIN,
    });
    const docs = createDocsHandler({
      title: "tenantd API reference",
      document: () => tenantdOpenApi(TENANTD_SERVICES),
    });
    // The document is generated now, so that an unreadable descriptor set stops start-up.
    docs.warm();

    const boot = await bootstrapOwnerKey({ keys: stores.keys, clock, ownerKeyFile: config.ownerKeyFile, print });

    let closing: Promise<void> | undefined;
    return {
      config,
      stores,
      verifier,
      bus,
      usage: usagePipeline,
      bootstrapKey: boot.apiKey,
      listen: (port = config.port, host = config.host) => server.listen(port, host),
      close() {
        closing ??= (async () => {
          await server.close(config.shutdownGraceMs);
          await verifier.close().catch((err) => log.warn("last-used flush at close failed", { error: String(err) }));
          await usagePipeline.close().catch((err) => log.warn("usage flush at close failed", { error: String(err) }));
          await limiting.close();
          await quota.close();
          await bus.close();
          redis?.disconnect();
          if (ownsDatabase) await stores.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    await rateLimiting?.close().catch(() => {});
    limiterRedis?.disconnect();
    subscriber?.disconnect();
    redis?.disconnect();
    if (ownsDatabase) await db.close();
    throw err;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.stack ?? err.message;
  return String(err);
}
