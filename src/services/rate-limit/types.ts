// The rate limiter port: token buckets decided together. The services and the transport depend
// on this interface only; the composition root picks the Redis adapter (REDIS_URL set) or the
// in-process one, which give the same answers for a single process.

/** One token bucket of a call. */
export interface BucketSpec {
  /** Unique within the tenant, e.g. `key:key_<kid>` or `tenant`. */
  id: string;
  /** Most tokens the bucket holds: the burst. A positive integer. */
  capacity: number;
  /**
   * Tokens added per second. Positive. For a continuous bucket this is the refill itself; for a
   * stepped one (`refillIntervalMs` set) it is only the average, used in messages.
   */
  refillPerSec: number;
  /**
   * Stepped refill: `refillAmount` whole tokens arrive every `refillIntervalMs`, instead of
   * `refillPerSec` continuously. The steps of a bucket are counted from the moment a call first
   * takes from it while it is full (a full bucket has no clock running): if that happens at T,
   * tokens arrive at T + I, T + 2I, … until it is full again. Both or neither are set.
   */
  refillAmount?: number;
  refillIntervalMs?: number;
}

/**
 * The decision on one call. Arrays follow the order of the buckets asked for. When denied, no
 * bucket was charged: `remaining` and `resetMs` then describe the buckets as they are.
 */
export interface BucketDecision {
  allowed: boolean;
  /**
   * Index of the bucket that refused the call, or -1 when allowed. When several lack tokens, the
   * one that needs the longest wait, so that `retryAfterMs` is enough for every bucket.
   */
  tripped: number;
  /** Whole tokens left in each bucket after this call. */
  remaining: number[];
  /** When denied: milliseconds until every bucket holds `cost` tokens again; 0 when allowed. */
  retryAfterMs: number;
  /** Milliseconds until each bucket is full again. */
  resetMs: number[];
  /**
   * The decision on the `after` bucket of `take`, present only when one was asked for and the
   * buckets themselves allowed the call (otherwise it was neither decided nor charged).
   */
  after?: BucketDecision;
}

/**
 * A second decision riding on the first (see RateLimiter.take): one bucket and its own cost,
 * decided only when every bucket of the first allowed the call.
 */
export interface AfterTake {
  bucket: BucketSpec;
  cost: number;
}

export interface RateLimiter {
  /**
   * Takes `cost` tokens from every bucket atomically, or from none when any lacks them. Buckets
   * are scoped by tenant (`tenantId` may be a pseudo-tenant such as `owner`). A cost above a
   * bucket's capacity can never pass. Rejects when the backend fails; callers bound the wait.
   *
   * With `after`, the same atomic step goes on, when and only when `buckets` allowed the call
   * (and were charged), to decide `after.bucket` (same tenant) on its own: it is charged
   * `after.cost` if it holds that many tokens, and its answer is `decision.after`. Its refusal does
   * not undo the charge of `buckets`: this is two decisions in one round trip, in order, not one
   * all-or-nothing decision over every bucket.
   */
  take(tenantId: string, buckets: BucketSpec[], cost: number, after?: AfterTake): Promise<BucketDecision>;
  close(): Promise<void>;
}

/** Whether a bucket refills in steps (see BucketSpec). */
export function isStepped(b: BucketSpec): boolean {
  return b.refillIntervalMs !== undefined && b.refillIntervalMs > 0;
}

/** Throws on buckets no limiter can decide on (a refill of 0 would never end a denial). */
export function assertBuckets(buckets: BucketSpec[], cost: number): void {
  if (buckets.length === 0) throw new RangeError("at least one bucket is needed");
  if (!(cost > 0) || !Number.isFinite(cost)) throw new RangeError(`cost must be positive, got ${cost}`);
  for (const b of buckets) assertBucket(b);
}

function assertBucket(b: BucketSpec): void {
  if (!(b.capacity > 0) || !Number.isFinite(b.capacity)) throw new RangeError(`bucket ${b.id}: bad capacity`);
  if (b.refillIntervalMs !== undefined || b.refillAmount !== undefined) {
    const i = b.refillIntervalMs ?? 0;
    const a = b.refillAmount ?? 0;
    if (!(i > 0) || !Number.isFinite(i) || !(a > 0) || !Number.isFinite(a)) {
      throw new RangeError(`bucket ${b.id}: a stepped refill needs a positive amount and interval`);
    }
    return;
  }
  if (!(b.refillPerSec > 0) || !Number.isFinite(b.refillPerSec)) throw new RangeError(`bucket ${b.id}: bad refill`);
}

/** assertBuckets for the `after` part of a take. */
export function assertAfter(after: AfterTake): void {
  if (!(after.cost > 0) || !Number.isFinite(after.cost))
    throw new RangeError(`cost must be positive, got ${after.cost}`);
  assertBucket(after.bucket);
}
