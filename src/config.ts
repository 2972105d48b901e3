// The only reader of process.env. Values are validated once at start-up and frozen; a bad value
// stops the process with a message naming the variable.

import type { FailMode, RateLimitPlans } from "./services/rate-limit/policy.js";

export interface Config {
  /** TCP port for every protocol (gRPC, gRPC-Web, Connect, REST). PORT, default 8080. */
  port: number;
  /** Listen address. HOST, default 0.0.0.0. */
  host: string;
  /** Postgres connection string. DATABASE_URL; unset selects embedded PGlite. */
  databaseUrl: string | undefined;
  /** PGlite data folder when DATABASE_URL is unset. TENANTD_DATA_DIR, default ./data. */
  dataDir: string;
  /** Redis connection string. REDIS_URL; unset selects the in-process limiter and counters. */
  redisUrl: string | undefined;
  /** Where the bootstrap owner key is written (mode 0600) instead of stdout. TENANTD_OWNER_KEY_FILE. */
  ownerKeyFile: string | undefined;
  /** Largest accepted request body. TENANTD_MAX_REQUEST_BYTES, default 1 MiB. */
  maxRequestBytes: number;
  /** Longest a request may run; a client's shorter deadline wins. TENANTD_REQUEST_TIMEOUT_MS, default 10 s. */
  requestTimeoutMs: number;
  /** How long shutdown waits for in-flight calls. TENANTD_SHUTDOWN_GRACE_MS, default 10 s. */
  shutdownGraceMs: number;
  /** Bound on every SQL statement. TENANTD_DB_TIMEOUT_MS, default 5 s. */
  dbTimeoutMs: number;
  /** Bound on every Redis command. TENANTD_REDIS_TIMEOUT_MS, default 100 ms. */
  redisTimeoutMs: number;
  /** How long a verified key stays in the in-process cache. TENANTD_KEY_CACHE_TTL_MS, default 30 s. */
  keyCacheTtlMs: number;
  /** How often batched last-used times are written. TENANTD_LAST_USED_FLUSH_MS, default 5 s. */
  lastUsedFlushMs: number;
  /** debug | info | warn | error | silent. LOG_LEVEL, default info. */
  logLevel: LogLevel;
  /**
   * Browser origins allowed to call every protocol cross-origin (CORS). TENANTD_CORS_ORIGINS,
   * comma-separated exact origins (`https://app.example.com`), or `*` for any site (unsafe for an
   * API reached with credentials: any page a key holder visits could use a key it obtains).
   * Default empty: no CORS headers at all.
   */
  corsOrigins: readonly string[];
  /**
   * What a call gets when the per-call rate limiter (Redis) fails or times out: `open` lets it
   * through, `closed` answers UNAVAILABLE. TENANTD_RATE_LIMIT_FAIL_MODE, default open.
   */
  rateLimitFailMode: FailMode;
  /**
   * What quota decisions (LimitService check/track/consume/reserve) answer when the counter store
   * fails. TENANTD_QUOTA_FAIL_MODE, default closed: a quota is usually money.
   */
  quotaFailMode: FailMode;
  /** Bound on each rate-limit decision. TENANTD_RATE_LIMIT_TIMEOUT_MS, default TENANTD_REDIS_TIMEOUT_MS. */
  rateLimitTimeoutMs: number;
  /**
   * Largest batch of per-call tokens one limiter call takes for a busy key, spent in process
   * (services/rate-limit/policy.ts, "Leases"); with Redis only. TENANTD_RATE_LIMIT_LEASE_MAX,
   * default 64; 1 takes each call's token on its own.
   */
  rateLimitLeaseMax: number;
  /** How long a tenant's plan is cached for rate limits. TENANTD_RATE_LIMIT_PLAN_CACHE_MS, default 30 s. */
  rateLimitPlanCacheMs: number;
  /**
   * Per-plan token buckets, replacing the built-in table in part or whole. TENANTD_RATE_LIMIT_PLANS,
   * JSON such as {"plans":{"free":{"key":{"capacity":20,"refillPerSec":10},"tenant":{…}}}}.
   */
  rateLimitPlans: Partial<RateLimitPlans> | undefined;
  /**
   * Unary gRPC over HTTP/2 served by tenantd's own fast path (src/transport/grpc-fast.ts) rather
   * than connect-node; same interceptors, same bytes on the wire. TENANTD_GRPC_FAST_PATH, 1 or 0,
   * default 1. Switch it off to compare, or if a client ever sees a difference.
   */
  grpcFastPath: boolean;
  /**
   * How often usage counted in process is flushed (to Redis, then rolled up into Postgres; or
   * straight to Postgres without Redis). TENANTD_USAGE_FLUSH_MS, default 1000 ms.
   */
  usageFlushMs: number;
  /** Daily usage rows older than this are compacted into monthly rows. TENANTD_USAGE_RETENTION_DAYS, default 400. */
  usageRetentionDays: number;
  /** Count `api_calls` of every call made with a tenant's key. TENANTD_USAGE_COUNTING, 1 or 0, default 1. */
  usageCounting: boolean;
}

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

function int(env: NodeJS.ProcessEnv, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  }
  return n;
}

function str(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === "" ? undefined : v;
}

/**
 * Checks a CORS origin list: `*` alone, or origins in the exact form browsers send in `Origin`
 * (`scheme://host[:port]`, lower case, no path, no default port), since anything else would never
 * match. Returns a message for the first bad entry, or undefined.
 */
export function invalidCorsOrigin(origins: readonly string[]): string | undefined {
  if (origins.includes("*")) return origins.length === 1 ? undefined : "`*` must be the only entry";
  for (const o of origins) {
    let url: URL;
    try {
      url = new URL(o);
    } catch {
      return `"${o}" is not an origin (scheme://host[:port])`;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") return `"${o}" must use http or https`;
    if (url.origin !== o) return `"${o}" is not an origin as browsers send it; use "${url.origin}"`;
  }
  return undefined;
}

function origins(env: NodeJS.ProcessEnv, name: string): readonly string[] {
  const list = (str(env, name) ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const bad = invalidCorsOrigin(list);
  if (bad !== undefined) throw new Error(`${name}: ${bad}`);
  return Object.freeze(list);
}

function failMode(env: NodeJS.ProcessEnv, name: string, def: FailMode): FailMode {
  const v = str(env, name) ?? def;
  if (v !== "open" && v !== "closed") throw new Error(`${name} must be "open" or "closed", got "${v}"`);
  return v;
}

function bucketOk(b: unknown): boolean {
  const o = b as { capacity?: unknown; refillPerSec?: unknown } | null;
  return (
    typeof o === "object" &&
    o !== null &&
    typeof o.capacity === "number" &&
    o.capacity > 0 &&
    typeof o.refillPerSec === "number" &&
    o.refillPerSec > 0
  );
}

function plans(env: NodeJS.ProcessEnv, name: string): Partial<RateLimitPlans> | undefined {
  const raw = str(env, name);
  if (raw === undefined) return undefined;
  let v: Partial<RateLimitPlans>;
  try {
    v = JSON.parse(raw) as Partial<RateLimitPlans>;
  } catch {
    throw new Error(`${name} must be JSON`);
  }
  const planEntries = Object.entries(v.plans ?? {});
  const ok =
    typeof v === "object" &&
    planEntries.every(([, p]) => bucketOk(p?.key) && bucketOk(p?.tenant)) &&
    (v.owner === undefined || bucketOk(v.owner)) &&
    (v.defaultPlan === undefined || typeof v.defaultPlan === "string");
  if (!ok) {
    throw new Error(`${name}: every plan needs key and tenant buckets with positive capacity and refillPerSec`);
  }
  return v;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const logLevel = (str(env, "LOG_LEVEL") ?? "info") as LogLevel;
  if (!["debug", "info", "warn", "error", "silent"].includes(logLevel)) {
    throw new Error(`LOG_LEVEL must be one of debug, info, warn, error, silent, got "${logLevel}"`);
  }
  const databaseUrl = str(env, "DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new Error("DATABASE_URL must start with postgres:// or postgresql://");
  }
  const redisUrl = str(env, "REDIS_URL");
  if (redisUrl !== undefined && !/^rediss?:\/\//.test(redisUrl)) {
    throw new Error("REDIS_URL must start with redis:// or rediss://");
  }
  const redisTimeoutMs = int(env, "TENANTD_REDIS_TIMEOUT_MS", 100, 5, 60_000);
  return Object.freeze({
    port: int(env, "PORT", 8080, 0, 65535),
    host: str(env, "HOST") ?? "0.0.0.0",
    databaseUrl,
    dataDir: str(env, "TENANTD_DATA_DIR") ?? "./data",
    redisUrl,
    ownerKeyFile: str(env, "TENANTD_OWNER_KEY_FILE"),
    maxRequestBytes: int(env, "TENANTD_MAX_REQUEST_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    requestTimeoutMs: int(env, "TENANTD_REQUEST_TIMEOUT_MS", 10_000, 100, 600_000),
    shutdownGraceMs: int(env, "TENANTD_SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    dbTimeoutMs: int(env, "TENANTD_DB_TIMEOUT_MS", 5_000, 50, 600_000),
    redisTimeoutMs,
    keyCacheTtlMs: int(env, "TENANTD_KEY_CACHE_TTL_MS", 30_000, 0, 3_600_000),
    lastUsedFlushMs: int(env, "TENANTD_LAST_USED_FLUSH_MS", 5_000, 10, 600_000),
    logLevel,
    corsOrigins: origins(env, "TENANTD_CORS_ORIGINS"),
    rateLimitFailMode: failMode(env, "TENANTD_RATE_LIMIT_FAIL_MODE", "open"),
    quotaFailMode: failMode(env, "TENANTD_QUOTA_FAIL_MODE", "closed"),
    rateLimitTimeoutMs: int(env, "TENANTD_RATE_LIMIT_TIMEOUT_MS", redisTimeoutMs, 5, 60_000),
    rateLimitLeaseMax: int(env, "TENANTD_RATE_LIMIT_LEASE_MAX", 64, 1, 10_000),
    rateLimitPlanCacheMs: int(env, "TENANTD_RATE_LIMIT_PLAN_CACHE_MS", 30_000, 0, 3_600_000),
    rateLimitPlans: plans(env, "TENANTD_RATE_LIMIT_PLANS"),
    grpcFastPath: int(env, "TENANTD_GRPC_FAST_PATH", 1, 0, 1) === 1,
    usageFlushMs: int(env, "TENANTD_USAGE_FLUSH_MS", 1000, 50, 600_000),
    usageRetentionDays: int(env, "TENANTD_USAGE_RETENTION_DAYS", 400, 35, 36_500),
    usageCounting: int(env, "TENANTD_USAGE_COUNTING", 1, 0, 1) === 1,
  });
}
