import type { Socket } from "node:net";
import { Redis } from "ioredis";
import type { Clock } from "../../domain/clock.js";
import {
  type AfterTake,
  assertAfter,
  assertBuckets,
  type BucketDecision,
  type BucketSpec,
  isStepped,
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
// The writes of one event-loop turn are coalesced: the first decision of a turn corks the
// connection's socket and a setImmediate uncorks it, so the scripts of every call that turn
// handled leave in one writev. On this VM a write to an idle Redis costs the writer the wake-up
// of the other process: the CPU profile of the server under CheckRateLimit load (h2gen, 64
// streams, 10k subjects) showed 41 µs of write syscall per call with plain writes, and 13 µs of
// writev with coalesced ones; decisions/s rose 10–35 % in alternating runs, and serial calls were
// no slower (setImmediate runs right after the poll phase that read the request). An earlier
// trial that uncorked on process.nextTick cost more CPU than plain writes: a tick ends before the
// other calls of the turn reach their write.
//
// Tokens within 1e-9 of the cost count as enough, as in the memory limiter: without that
// tolerance floating-point refill could refuse a caller who waited exactly `retryAfterMs`.
//
// Stepped buckets (`refillAmount` every `refillIntervalMs`) keep `ts` as the start of their
// current step, in microseconds: steps are counted from the take that first drew on the full
// bucket, whole steps only, and a full bucket counts none (as in the memory limiter).
//
// One script call may carry a second decision (RateLimiter.take's `after`): the last key, decided
// alone at its own cost, and only when the first n keys allowed the call and were charged. That
// is how CheckRateLimit decides the caller's per-call buckets and the requested bucket in one
// round trip.

/**
 * KEYS: the n buckets decided together, then optionally one more decided after them.
 * ARGV[1]: n; ARGV[2]: cost of the n; ARGV[3]: cost of the extra key (0 without one);
 * ARGV[4]: the time in microseconds, or empty for Redis TIME (tests inject a clock);
 * ARGV[3i+2], ARGV[3i+3], ARGV[3i+4] for key i: capacity, refill (tokens per second, or per
 * step), step length in microseconds (0: continuous).
 */
export const TAKE_TOKENS_LUA = `
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local n = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local cap, refill, step, tokens, anchor = {}, {}, {}, {}, {}

local function level(i)
  local c = tonumber(ARGV[3 * i + 2])
  local r = tonumber(ARGV[3 * i + 3])
  local st = tonumber(ARGV[3 * i + 4])
  cap[i] = c
  step[i] = st
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tk = c
  local a = now
  if st == 0 then
    refill[i] = r / 1000
    if s[1] and s[2] then
      local elapsed = (now - tonumber(s[2])) / 1000
      if elapsed < 0 then elapsed = 0 end
      tk = math.min(c, tonumber(s[1]) + elapsed * refill[i])
    end
  else
    refill[i] = r
    if s[1] and s[2] and tonumber(s[1]) < c then
      local a0 = tonumber(s[2])
      local k = math.floor((now - a0) / st)
      if k < 0 then k = 0 end
      local v = math.min(c, tonumber(s[1]) + k * r)
      if v < c then
        tk = v
        a = a0 + k * st
      end
    end
  end
  tokens[i] = tk
  anchor[i] = a
end

-- Milliseconds (unrounded) until bucket i holds need tokens.
local function wait(i, need)
  if step[i] == 0 then return (need - tokens[i] - 5e-10) / refill[i] end
  local k = math.ceil((need - tokens[i] - 5e-10) / refill[i])
  return (anchor[i] + k * step[i] - now) / 1000
end

local function toFull(i)
  if step[i] == 0 then return (cap[i] - tokens[i]) / refill[i] end
  if tokens[i] >= cap[i] then return 0 end
  return wait(i, cap[i])
end

local function charge(i, c)
  if step[i] ~= 0 and tokens[i] >= cap[i] then anchor[i] = now end
  tokens[i] = tokens[i] - c
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens[i]), 'ts', string.format('%d', anchor[i]))
  redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil(toFull(i))))
end

local tripped = -1
local retry = 0
for i = 1, n do
  level(i)
  if tokens[i] + 1e-9 < cost then
    local w = math.ceil(wait(i, math.min(cost, cap[i])))
    if tripped == -1 or w > retry then
      tripped = i - 1
      retry = math.max(w, 1)
    end
  end
end
local out = { tripped == -1 and 1 or 0, tripped, tripped == -1 and 0 or retry }
for i = 1, n do
  if tripped == -1 then charge(i, cost) end
  out[#out + 1] = math.floor(tokens[i])
  out[#out + 1] = math.ceil(toFull(i))
end
if tripped == -1 and #KEYS > n then
  local j = n + 1
  local c = tonumber(ARGV[3])
  level(j)
  local ok = tokens[j] + 1e-9 >= c
  local r = 0
  if ok then charge(j, c) else r = math.max(math.ceil(wait(j, math.min(c, cap[j]))), 1) end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = r
  out[#out + 1] = math.floor(tokens[j])
  out[#out + 1] = math.ceil(toFull(j))
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
  /**
   * For tests: decide on this clock instead of Redis `TIME`, so that the Redis and the memory
   * limiter can be run through the same exact, clock-driven model. Never set in production:
   * replicas' clocks differ, Redis' does not.
   */
  clock?: Clock;
}

export function createRedisRateLimiter(opts: RedisRateLimiterOptions | RateLimitRedisOptions): RateLimiter {
  const clock = "redis" in opts ? opts.clock : undefined;
  const redis = "redis" in opts ? opts.redis : createRateLimitRedis(opts);
  const owns = "redis" in opts ? (opts.ownsConnection ?? false) : true;
  // One command per number of buckets, with `numberOfKeys` fixed: ioredis then knows the first
  // argument is a key (the slot a cluster pipeline goes to) and adds the key count itself. The
  // script text is the same, so Redis caches it once; ioredis sends EVAL the first time on each
  // connection and EVALSHA after.
  // Coalesced writes (see above): the socket held corked until the end of this event-loop turn.
  let held: Socket | undefined;
  const release = () => {
    const s = held;
    held = undefined;
    s?.uncork();
  };
  const holdWrites = () => {
    if (held !== undefined) return;
    const s = (redis as unknown as { stream?: Socket }).stream;
    if (s === undefined || !s.writable) return;
    s.cork();
    held = s;
    setImmediate(release);
  };
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

  /** Writes a bucket's three arguments (see TAKE_TOKENS_LUA) at `at`. */
  const putBucket = (args: Array<string | number>, at: number, b: BucketSpec) => {
    args[at] = b.capacity;
    if (isStepped(b)) {
      args[at + 1] = b.refillAmount as number;
      args[at + 2] = Math.max(1, Math.round((b.refillIntervalMs as number) * 1000));
    } else {
      args[at + 1] = b.refillPerSec;
      args[at + 2] = 0;
    }
  };

  return {
    async take(tenantId: string, buckets: BucketSpec[], cost: number, after?: AfterTake): Promise<BucketDecision> {
      assertBuckets(buckets, cost);
      if (after !== undefined) assertAfter(after);
      const n = buckets.length;
      const keys = after === undefined ? n : n + 1;
      const args: Array<string | number> = new Array(keys + 4 + 3 * keys);
      for (let i = 0; i < n; i++) args[i] = bucketKey(tenantId, (buckets[i] as BucketSpec).id);
      if (after !== undefined) args[n] = bucketKey(tenantId, after.bucket.id);
      args[keys] = n;
      args[keys + 1] = cost;
      args[keys + 2] = after === undefined ? 0 : after.cost;
      args[keys + 3] = clock === undefined ? "" : Math.round(clock.now() * 1000);
      for (let i = 0; i < n; i++) putBucket(args, keys + 4 + 3 * i, buckets[i] as BucketSpec);
      if (after !== undefined) putBucket(args, keys + 4 + 3 * n, after.bucket);
      holdWrites();
      const out = await commandFor(keys)(...args);
      const remaining: number[] = new Array(n);
      const resetMs: number[] = new Array(n);
      for (let i = 0; i < n; i++) {
        remaining[i] = Number(out[3 + 2 * i]);
        resetMs[i] = Number(out[4 + 2 * i]);
      }
      const allowed = Number(out[0]) === 1;
      const decision: BucketDecision = {
        allowed,
        tripped: Number(out[1]),
        retryAfterMs: Number(out[2]),
        remaining,
        resetMs,
      };
      if (allowed && after !== undefined) {
        const at = 3 + 2 * n;
        const ok = Number(out[at]) === 1;
        decision.after = {
          allowed: ok,
          tripped: ok ? -1 : 0,
          retryAfterMs: Number(out[at + 1]),
          remaining: [Number(out[at + 2])],
          resetMs: [Number(out[at + 3])],
        };
      }
      return decision;
    },
    async close() {
      if (owns) redis.disconnect();
    },
  };
}
