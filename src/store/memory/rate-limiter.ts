import { type Clock, systemClock } from "../../domain/clock.js";
import {
  assertBuckets,
  type BucketDecision,
  type BucketSpec,
  type RateLimiter,
} from "../../services/rate-limit/types.js";

// The in-process token buckets, used when REDIS_URL is unset. The arithmetic is the Redis Lua
// script's, line for line (src/store/redis/rate-limiter.ts), so one process gets the same answers
// from either; with several processes only Redis shares the buckets. JavaScript runs `take` to
// completion without yielding, which makes each decision atomic here as EVAL makes it in Redis.
//
// Memory is bounded: a bucket that has refilled completely carries no information (an absent
// bucket is a full one, as a Redis key that has expired), so full buckets are dropped first; past
// `maxBuckets` the least recently charged buckets go too, which can only hand a caller tokens it
// would have had back soon anyway (a brief over-admission under memory pressure, never a hang).

/**
 * Tokens this close to the cost count as enough: refill is computed in floating point, and
 * without the tolerance a caller who waited exactly the reported `retryAfterMs` could be refused
 * for want of 1e-13 of a token. The deficit is carried in the bucket (it goes that far below
 * zero), so the tolerance never adds up to a token.
 */
const EPSILON = 1e-9;

interface State {
  tokens: number;
  /** When `tokens` was computed (clock ms). */
  ts: number;
  /** When the bucket is full again; after this the entry can be dropped. */
  fullAt: number;
}

export interface MemoryRateLimiterOptions {
  clock?: Clock;
  /** Most buckets kept; default 100,000 (about 10 MB). */
  maxBuckets?: number;
}

export interface MemoryRateLimiter extends RateLimiter {
  /** Buckets held right now; for tests and metrics. */
  readonly size: number;
  /** Drops every bucket that is full again. */
  sweep(): void;
}

export function createMemoryRateLimiter(opts: MemoryRateLimiterOptions = {}): MemoryRateLimiter {
  const clock = opts.clock ?? systemClock;
  const maxBuckets = opts.maxBuckets ?? 100_000;
  const buckets = new Map<string, State>();

  const sweep = (now: number) => {
    for (const [k, s] of buckets) if (s.fullAt <= now) buckets.delete(k);
  };
  const makeRoom = (now: number) => {
    if (buckets.size < maxBuckets) return;
    sweep(now);
    // Still full of busy buckets: drop the least recently charged tenth, so that this cost is
    // paid once per many inserts rather than on every one. Map iteration follows insertion
    // order, and every charge re-inserts its bucket.
    if (buckets.size >= maxBuckets) {
      let drop = buckets.size - Math.floor(maxBuckets * 0.9);
      for (const k of buckets.keys()) {
        if (drop-- <= 0) break;
        buckets.delete(k);
      }
    }
  };

  return {
    get size() {
      return buckets.size;
    },
    sweep() {
      sweep(clock.now());
    },
    async take(tenantId: string, specs: BucketSpec[], cost: number): Promise<BucketDecision> {
      assertBuckets(specs, cost);
      const now = clock.now();
      const n = specs.length;
      const keys: string[] = new Array(n);
      const tokens: number[] = new Array(n);
      let tripped = -1;
      let retryAfterMs = 0;
      for (let i = 0; i < n; i++) {
        const b = specs[i] as BucketSpec;
        const key = `${tenantId}\u0000${b.id}`;
        keys[i] = key;
        const ratePerMs = b.refillPerSec / 1000;
        const s = buckets.get(key);
        // A clock that went backwards refills nothing rather than draining the bucket.
        const t = s === undefined ? b.capacity : Math.min(b.capacity, s.tokens + Math.max(0, now - s.ts) * ratePerMs);
        tokens[i] = t;
        if (t + EPSILON < cost) {
          // A cost above the capacity never passes; the best the caller can hope for is a full bucket.
          // Half the tolerance off the shortfall keeps float noise from adding a whole
          // millisecond, while the wait still brings the bucket within tolerance of the cost.
          const wait = Math.ceil((Math.min(cost, b.capacity) - t - EPSILON / 2) / ratePerMs);
          if (tripped === -1 || wait > retryAfterMs) {
            tripped = i;
            retryAfterMs = Math.max(wait, 1);
          }
        }
      }
      const allowed = tripped === -1;
      const remaining: number[] = new Array(n);
      const resetMs: number[] = new Array(n);
      if (allowed) makeRoom(now);
      for (let i = 0; i < n; i++) {
        const b = specs[i] as BucketSpec;
        const ratePerMs = b.refillPerSec / 1000;
        let t = tokens[i] as number;
        if (allowed) {
          t -= cost;
          const key = keys[i] as string;
          const toFull = (b.capacity - t) / ratePerMs;
          buckets.delete(key);
          buckets.set(key, { tokens: t, ts: now, fullAt: now + toFull });
        }
        remaining[i] = Math.floor(t);
        resetMs[i] = Math.ceil((b.capacity - t) / ratePerMs);
      }
      return { allowed, tripped, remaining, retryAfterMs: allowed ? 0 : retryAfterMs, resetMs };
    },
    async close() {
      buckets.clear();
    },
  };
}
