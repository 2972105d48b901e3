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
// Decisions are batched per event-loop turn: take() queues its decision, and a setImmediate
// sends the turn's decisions of each tenant (one Cluster slot) as ONE script call (at most
// MAX_BATCH decisions; more are split), which decides them in the order they were taken, each
// exactly as its own call would, with the socket corked so that every tenant's batch leaves in
// one writev. A batch shares one reply and one fate: when the call fails or times out, each of
// its decisions fails the way its own call would have. A serial caller waits for nothing:
// setImmediate runs right after the poll phase that read the request.
//   Why: on this VM a write to an idle Redis costs the writer the wake-up of the other process
// (the CPU profile of the server under CheckRateLimit load, h2gen with 64 streams and 10k
// subjects, showed 41 µs of write syscall per call with one write per command, 13 µs with the
// writes corked per turn), and each script call costs Redis its own call overhead and ioredis a
// command object, a timer and a reply to parse. An earlier trial that uncorked on
// process.nextTick cost more CPU than plain writes: a tick ends before the other calls of the
// turn reach the limiter.
//
// Tokens within 1e-9 of the cost count as enough, as in the memory limiter: without that
// tolerance floating-point refill could refuse a caller who waited exactly `retryAfterMs`.
//
// Stepped buckets (`refillAmount` every `refillIntervalMs`) keep `ts` as the start of their
// current step, in microseconds: steps are counted from the take that first drew on the full
// bucket, whole steps only, and a full bucket counts none (as in the memory limiter).
//
// A decision may carry a second one (RateLimiter.take's `after`): the last key, decided alone at
// its own cost, and only when the first n keys allowed the call and were charged. That is how
// CheckRateLimit decides the caller's per-call buckets and the requested bucket in one decision.

/**
 * One script call decides a batch of decisions, in order (each as if it were its own call; the
 * batch is atomic as a whole). KEYS: the keys of every decision, one decision after the other.
 * ARGV[1]: the time in microseconds, or empty for Redis TIME (tests inject a clock). Then per
 * decision: its key count k, n (the buckets decided together: the first n of its k keys),
 * the cost of the n, the cost of the extra key (0 without one), then 3 arguments per key:
 * capacity, refill (tokens per second, or per step), step length in microseconds (0:
 * continuous). A decision has k = n, or k = n + 1 for one more bucket decided after the n.
 *
 * Reply, per decision: allowed (1/0), the tripped bucket (index, or -1), retry-after ms, then
 * remaining and ms-to-full of each of the n; with an extra key, 4 more: allowed (1/0; 0 as well
 * when the n refused and it was not decided), retry-after ms, remaining, ms-to-full.
 */
export const TAKE_TOKENS_LUA = `
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local key, cap, refill, step, tokens, anchor = {}, {}, {}, {}, {}, {}
local out = {}

-- Reads bucket i (its key and its 3 arguments from ARGV[at]).
local function level(i, k, at)
  local c = tonumber(ARGV[at])
  local r = tonumber(ARGV[at + 1])
  local st = tonumber(ARGV[at + 2])
  key[i] = k
  cap[i] = c
  step[i] = st
  local s = redis.call('HMGET', k, 'tokens', 'ts')
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
  redis.call('HSET', key[i], 'tokens', string.format('%.17g', tokens[i]), 'ts', string.format('%d', anchor[i]))
  redis.call('PEXPIRE', key[i], math.max(1, math.ceil(toFull(i))))
end

local ki, ai = 0, 2
while ai <= #ARGV do
  local k = tonumber(ARGV[ai])
  local n = tonumber(ARGV[ai + 1])
  local cost = tonumber(ARGV[ai + 2])
  local extra = tonumber(ARGV[ai + 3])
  local at = ai + 4
  local tripped = -1
  local retry = 0
  for i = 1, n do
    level(i, KEYS[ki + i], at + 3 * (i - 1))
    if tokens[i] + 1e-9 < cost then
      local w = math.ceil(wait(i, math.min(cost, cap[i])))
      if tripped == -1 or w > retry then
        tripped = i - 1
        retry = math.max(w, 1)
      end
    end
  end
  out[#out + 1] = tripped == -1 and 1 or 0
  out[#out + 1] = tripped
  out[#out + 1] = tripped == -1 and 0 or retry
  for i = 1, n do
    if tripped == -1 then charge(i, cost) end
    out[#out + 1] = math.floor(tokens[i])
    out[#out + 1] = math.ceil(toFull(i))
  end
  if k > n then
    if tripped == -1 then
      local j = n + 1
      level(j, KEYS[ki + j], at + 3 * n)
      local ok = tokens[j] + 1e-9 >= extra
      local r = 0
      if ok then charge(j, extra) else r = math.max(math.ceil(wait(j, math.min(extra, cap[j]))), 1) end
      out[#out + 1] = ok and 1 or 0
      out[#out + 1] = r
      out[#out + 1] = math.floor(tokens[j])
      out[#out + 1] = math.ceil(toFull(j))
    else
      for _ = 1, 4 do out[#out + 1] = 0 end
    end
  end
  ki = ki + k
  ai = at + 3 * k
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

/** Most decisions one script call carries; a bigger batch is split. */
export const MAX_BATCH = 32;

/** A decision waiting for the end of the event-loop turn. */
interface Pending {
  n: number;
  after: boolean;
  resolve(d: BucketDecision): void;
  reject(e: unknown): void;
}

/** One script call being filled: its keys and ARGV (the time, then each decision's part). */
interface Batch {
  keys: string[];
  args: Array<string | number>;
  pending: Pending[];
}

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
  // The script is defined once with the key count as its first argument. Its text never
  // changes, so Redis caches it once; ioredis sends EVAL the first time on each connection and
  // EVALSHA after.
  redis.defineCommand("tenantdTakeTokens", { lua: TAKE_TOKENS_LUA });
  const command = (redis as unknown as { tenantdTakeTokens: TakeCommand }).tenantdTakeTokens.bind(redis);

  // Batches (see above): the decisions of this event-loop turn, per tenant (one Cluster slot) and
  // injected time, sent by one setImmediate; the socket is corked while they are written.
  const filling = new Map<string, Batch>();
  const ready: Batch[] = [];
  let scheduled = false;
  /** The batch a decision of `group` joins: the group's open one, or a new one once it is full. */
  const batchFor = (group: string, now: string | number): Batch => {
    let batch = filling.get(group);
    if (batch === undefined || batch.pending.length === MAX_BATCH) {
      batch = { keys: [], args: [now], pending: [] };
      filling.set(group, batch);
      ready.push(batch);
    }
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
    return batch;
  };
  const flush = () => {
    scheduled = false;
    const socket = (redis as unknown as { stream?: Socket }).stream;
    const corked = socket?.writable === true ? socket : undefined;
    corked?.cork();
    for (const batch of ready) send(batch);
    ready.length = 0;
    filling.clear();
    corked?.uncork();
  };
  const send = ({ keys, args, pending }: Batch) => {
    command(keys.length, ...keys, ...args).then(
      (out) => {
        let at = 0;
        for (const p of pending) at = answer(p, out, at);
      },
      (e: unknown) => {
        for (const p of pending) p.reject(e);
      },
    );
  };
  /** Resolves `p` from its part of the reply, starting at `at`; returns where the next one starts. */
  const answer = (p: Pending, out: number[], at: number): number => {
    const n = p.n;
    const remaining: number[] = new Array(n);
    const resetMs: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      remaining[i] = Number(out[at + 3 + 2 * i]);
      resetMs[i] = Number(out[at + 4 + 2 * i]);
    }
    const allowed = Number(out[at]) === 1;
    const decision: BucketDecision = {
      allowed,
      tripped: Number(out[at + 1]),
      retryAfterMs: Number(out[at + 2]),
      remaining,
      resetMs,
    };
    let next = at + 3 + 2 * n;
    if (p.after) {
      if (allowed) {
        const ok = Number(out[next]) === 1;
        decision.after = {
          allowed: ok,
          tripped: ok ? -1 : 0,
          retryAfterMs: Number(out[next + 1]),
          remaining: [Number(out[next + 2])],
          resetMs: [Number(out[next + 3])],
        };
      }
      next += 4;
    }
    p.resolve(decision);
    return next;
  };

  /** Appends a bucket's three arguments (see TAKE_TOKENS_LUA). */
  const putBucket = (args: Array<string | number>, b: BucketSpec) => {
    if (isStepped(b)) {
      args.push(b.capacity, b.refillAmount as number, Math.max(1, Math.round((b.refillIntervalMs as number) * 1000)));
    } else {
      args.push(b.capacity, b.refillPerSec, 0);
    }
  };

  return {
    async take(tenantId: string, buckets: BucketSpec[], cost: number, after?: AfterTake): Promise<BucketDecision> {
      assertBuckets(buckets, cost);
      if (after !== undefined) assertAfter(after);
      const n = buckets.length;
      const now = clock === undefined ? "" : Math.round(clock.now() * 1000);
      const { keys, args, pending } = batchFor(`${now}|${tenantId}`, now);
      for (const b of buckets) keys.push(bucketKey(tenantId, b.id));
      if (after !== undefined) keys.push(bucketKey(tenantId, after.bucket.id));
      args.push(after === undefined ? n : n + 1, n, cost, after === undefined ? 0 : after.cost);
      for (const b of buckets) putBucket(args, b);
      if (after !== undefined) putBucket(args, after.bucket);
      return new Promise<BucketDecision>((resolve, reject) => {
        pending.push({ n, after: after !== undefined, resolve, reject });
      });
    },
    async close() {
      if (owns) redis.disconnect();
    },
  };
}
