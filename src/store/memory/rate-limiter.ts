import { type Clock, systemClock } from "../../domain/clock.js";
import {
  type AfterTake,
  assertAfter,
  assertBuckets,
  type BucketDecision,
  type BucketSpec,
  isStepped,
  type RateLimiter,
} from "../../services/rate-limit/types.js";

// The in-process token buckets, used when REDIS_URL is unset. The arithmetic is the Redis Lua
// script's, line for line (src/store/redis/rate-limiter.ts), so one process gets the same answers
// from either; with several processes only Redis shares the buckets. JavaScript runs `take` to
// completion without yielding, which makes each decision atomic here as EVAL makes it in Redis.
//
// Two refill forms (see BucketSpec): continuous (`refillPerSec`, tokens grow with every
// millisecond) and stepped (`refillAmount` whole tokens every `refillIntervalMs`). A stepped
// bucket's `ts` is the start of its current step: steps are counted from the moment a call takes
// from the full bucket, and once the bucket is full again nothing is counted until the next take.
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
  /** Continuous: when `tokens` was computed. Stepped: when the current step began. Clock ms. */
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

/** One bucket as read at `now`: its tokens and, for a stepped bucket, when its current step began. */
interface Level {
  tokens: number;
  anchor: number;
}

/** The bucket's tokens at `now` (and the start of its step), from its stored state. */
function levelOf(b: BucketSpec, s: State | undefined, now: number, out: Level): void {
  const cap = b.capacity;
  if (!isStepped(b)) {
    // A clock that went backwards refills nothing rather than draining the bucket.
    out.tokens = s === undefined ? cap : Math.min(cap, s.tokens + Math.max(0, now - s.ts) * (b.refillPerSec / 1000));
    out.anchor = now;
    return;
  }
  out.tokens = cap;
  out.anchor = now;
  if (s === undefined || s.tokens >= cap) return;
  const interval = b.refillIntervalMs as number;
  const steps = Math.max(0, Math.floor((now - s.ts) / interval));
  const t = Math.min(cap, s.tokens + steps * (b.refillAmount as number));
  if (t < cap) {
    out.tokens = t;
    out.anchor = s.ts + steps * interval;
  }
}

/** Milliseconds from `now` until the bucket holds `need` tokens (need ≤ capacity), unrounded. */
function waitFor(b: BucketSpec, l: Level, need: number, now: number): number {
  if (!isStepped(b)) return (need - l.tokens - EPSILON / 2) / (b.refillPerSec / 1000);
  // Half the tolerance keeps float noise from asking for one step too many.
  const steps = Math.ceil((need - l.tokens - EPSILON / 2) / (b.refillAmount as number));
  return l.anchor + steps * (b.refillIntervalMs as number) - now;
}

/** Milliseconds from `now` until the bucket is full again, unrounded. */
function untilFull(b: BucketSpec, l: Level, now: number): number {
  if (!isStepped(b)) return (b.capacity - l.tokens) / (b.refillPerSec / 1000);
  if (l.tokens >= b.capacity) return 0;
  return waitFor(b, l, b.capacity, now);
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

  /** Takes `cost` from the bucket read as `l` (the caller checked that it holds enough). */
  const charge = (key: string, b: BucketSpec, l: Level, cost: number, now: number) => {
    // A stepped bucket that was full starts its step clock with this take.
    if (isStepped(b) && l.tokens >= b.capacity) l.anchor = now;
    l.tokens -= cost;
    buckets.delete(key);
    buckets.set(key, { tokens: l.tokens, ts: l.anchor, fullAt: now + untilFull(b, l, now) });
  };

  /** The `after` part of a take: one bucket, decided on its own. */
  const takeOne = (tenantId: string, b: BucketSpec, cost: number, now: number): BucketDecision => {
    const key = `${tenantId}\u0000${b.id}`;
    const l: Level = { tokens: 0, anchor: 0 };
    levelOf(b, buckets.get(key), now, l);
    const allowed = l.tokens + EPSILON >= cost;
    const retryAfterMs = allowed ? 0 : Math.max(Math.ceil(waitFor(b, l, Math.min(cost, b.capacity), now)), 1);
    if (allowed) {
      makeRoom(now);
      charge(key, b, l, cost, now);
    }
    return {
      allowed,
      tripped: allowed ? -1 : 0,
      remaining: [Math.floor(l.tokens)],
      retryAfterMs,
      resetMs: [Math.ceil(untilFull(b, l, now))],
    };
  };

  return {
    get size() {
      return buckets.size;
    },
    sweep() {
      sweep(clock.now());
    },
    async take(tenantId: string, specs: BucketSpec[], cost: number, after?: AfterTake): Promise<BucketDecision> {
      assertBuckets(specs, cost);
      if (after !== undefined) assertAfter(after);
      const now = clock.now();
      const n = specs.length;
      const keys: string[] = new Array(n);
      const levels: Level[] = new Array(n);
      let tripped = -1;
      let retryAfterMs = 0;
      for (let i = 0; i < n; i++) {
        const b = specs[i] as BucketSpec;
        const key = `${tenantId}\u0000${b.id}`;
        keys[i] = key;
        const l: Level = { tokens: 0, anchor: 0 };
        levelOf(b, buckets.get(key), now, l);
        levels[i] = l;
        if (l.tokens + EPSILON < cost) {
          // A cost above the capacity never passes; the best the caller can hope for is a full bucket.
          const wait = Math.ceil(waitFor(b, l, Math.min(cost, b.capacity), now));
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
        const l = levels[i] as Level;
        if (allowed) charge(keys[i] as string, b, l, cost, now);
        remaining[i] = Math.floor(l.tokens);
        resetMs[i] = Math.ceil(untilFull(b, l, now));
      }
      const decision: BucketDecision = {
        allowed,
        tripped,
        remaining,
        retryAfterMs: allowed ? 0 : retryAfterMs,
        resetMs,
      };
      if (allowed && after !== undefined) decision.after = takeOne(tenantId, after.bucket, after.cost, now);
      return decision;
    },
    async close() {
      buckets.clear();
    },
  };
}
