import { Redis } from "ioredis";
import {
  assertBuckets,
  type BucketDecision,
  type BucketSpec,
  type RateLimiter,
} from "../../services/rate-limit/types.js";

// Token buckets in Redis: every bucket of a call (the key's and the tenant's) is decided by ONE
// Lua script in one round trip, so two replicas can never both spend the last token, and either
// every bucket is charged or none is. Keys are hash-tagged by tenant (`rl:{ten_…}:<bucket>`) so
// that Redis Cluster keeps a tenant's buckets on one slot, which a multi-key script needs.
//
// Time comes from Redis `TIME` inside the script: decisions do not depend on the clocks of the
// replicas asking. (Redis 7 replicates scripts by their effects, so a non-deterministic command
// before writes needs no `redis.replicate_commands()`.) A bucket is a hash {tokens, ts}; it
// expires when it would be full again, because an absent bucket *is* a full one, so idle
// tenants cost no memory. Timestamps are kept as integer microseconds in strings, and tokens
// with 17 significant digits: Lua's default number formatting (14 digits) would round away
// sub-millisecond time and let rounding errors add up to extra tokens.
//
// Auto-pipelining is an option, off by default, because it measured no gain here
// (bench/limiter.ts, ioredis 6 and Redis 7 on one 2-core machine): ioredis defers each
// auto-pipelined command to setImmediate and keeps one pipeline in flight at a time. On a quiet
// machine it gave 0.95× the decisions/s at 4 and at 64 callers and a serial p50 of 69 µs
// against 58 µs; with other suites loading the machine, 170 µs against 66 µs and 2–2.5× fewer
// decisions/s at 4 callers. Without it ioredis still writes every command at once, without
// waiting for earlier replies, which is all the pipelining concurrent calls need. Every command
// is bounded by `commandTimeout`, and with no offline queue a dead Redis fails calls at
// once; the caller adds its own hard bound on top (src/services/rate-limit/policy.ts).
//
// Tokens within 1e-9 of the cost count as enough, as in the memory limiter: without that
// tolerance floating-point refill could refuse a caller who waited exactly `retryAfterMs`.

/** KEYS: the buckets. ARGV[1]: cost; ARGV[2i], ARGV[2i+1]: capacity and refill per second of bucket i. */
export const TAKE_TOKENS_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local n = #KEYS
local tokens = {}
local tripped = -1
local retry = 0
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1]) / 1000
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tk = cap
  if s[1] and s[2] then
    local elapsed = (now - tonumber(s[2])) / 1000
    if elapsed < 0 then elapsed = 0 end
    tk = math.min(cap, tonumber(s[1]) + elapsed * rate)
  end
  tokens[i] = tk
  if tk + 1e-9 < cost then
    local wait = math.ceil((math.min(cost, cap) - tk - 5e-10) / rate)
    if tripped == -1 or wait > retry then
      tripped = i - 1
      retry = math.max(wait, 1)
    end
  end
end
local out = { tripped == -1 and 1 or 0, tripped, tripped == -1 and 0 or retry }
local nowText = string.format('%d', now)
for i = 1, n do
  local cap = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1]) / 1000
  local tk = tokens[i]
  if tripped == -1 then
    tk = tk - cost
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tk), 'ts', nowText)
    redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((cap - tk) / rate)))
  end
  out[#out + 1] = math.floor(tk)
  out[#out + 1] = math.ceil((cap - tk) / rate)
end
return out
`;

/** The Redis key of a bucket; the braces make the tenant id the cluster hash tag. */
export function bucketKey(tenantId: string, bucketId: string): string {
  return `rl:{${tenantId}}:${bucketId}`;
}

export interface RateLimitRedisOptions {
  url: string;
  /** Bound on every command (ioredis `commandTimeout`). */
  timeoutMs: number;
  name?: string;
  /** ioredis `enableAutoPipelining`; default false (see above). */
  autoPipelining?: boolean;
}

/**
 * A connection for the limiter: the options of src/store/redis/client.ts (command timeout, no
 * offline queue, endless background reconnects), optionally auto-pipelining. It is its own
 * connection so that the hot path never queues behind pub/sub publishes or slower commands.
 */
export function createRateLimitRedis(opts: RateLimitRedisOptions): Redis {
  const redis = new Redis(opts.url, {
    commandTimeout: opts.timeoutMs,
    connectTimeout: Math.max(1000, opts.timeoutMs * 10),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    enableAutoPipelining: opts.autoPipelining ?? false,
    connectionName: opts.name ?? "tenantd-ratelimit",
    // Reconnect attempts are capped at 500 ms apart (the shared client waits up to 2 s): a
    // connection attempt is cheap, and every second without the limiter is a second of calls
    // let through unlimited (fail-open) or refused (fail-closed).
    retryStrategy: (times) => Math.min(25 * 2 ** Math.min(times, 5), 500),
  });
  // Failures reach callers through their commands; without a listener ioredis prints every
  // failed reconnect.
  redis.on("error", () => {});
  return redis;
}

type TakeCommand = (...args: Array<string | number>) => Promise<number[]>;

export interface RedisRateLimiterOptions {
  redis: Redis;
  /** Whether close() disconnects the connection (true when the limiter created it). */
  ownsConnection?: boolean;
}

export function createRedisRateLimiter(opts: RedisRateLimiterOptions | RateLimitRedisOptions): RateLimiter {
  const redis = "redis" in opts ? opts.redis : createRateLimitRedis(opts);
  const owns = "redis" in opts ? (opts.ownsConnection ?? false) : true;
  // One command per number of buckets, with `numberOfKeys` fixed: ioredis then knows the first
  // argument is a key (the slot a cluster pipeline goes to) and adds the key count itself. The
  // script text is the same, so Redis caches it once; ioredis sends EVAL the first time on each
  // connection and EVALSHA after.
  const commands = new Map<number, TakeCommand>();
  const commandFor = (n: number): TakeCommand => {
    let c = commands.get(n);
    if (c === undefined) {
      const name = `tenantdTakeTokens${n}`;
      redis.defineCommand(name, { numberOfKeys: n, lua: TAKE_TOKENS_LUA });
      const fn = (redis as unknown as Record<string, TakeCommand>)[name] as TakeCommand;
      c = fn.bind(redis);
      commands.set(n, c);
    }
    return c;
  };

  return {
    async take(tenantId: string, buckets: BucketSpec[], cost: number): Promise<BucketDecision> {
      assertBuckets(buckets, cost);
      const n = buckets.length;
      const args: Array<string | number> = new Array(n + 1 + 2 * n);
      for (let i = 0; i < n; i++) args[i] = bucketKey(tenantId, (buckets[i] as BucketSpec).id);
      args[n] = cost;
      for (let i = 0; i < n; i++) {
        const b = buckets[i] as BucketSpec;
        args[n + 1 + 2 * i] = b.capacity;
        args[n + 2 + 2 * i] = b.refillPerSec;
      }
      const out = await commandFor(n)(...args);
      const remaining: number[] = new Array(n);
      const resetMs: number[] = new Array(n);
      for (let i = 0; i < n; i++) {
        remaining[i] = Number(out[3 + 2 * i]);
        resetMs[i] = Number(out[4 + 2 * i]);
      }
      return {
        allowed: Number(out[0]) === 1,
        tripped: Number(out[1]),
        retryAfterMs: Number(out[2]),
        remaining,
        resetMs,
      };
    },
    async close() {
      if (owns) redis.disconnect();
    },
  };
}
