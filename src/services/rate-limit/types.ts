// The rate limiter port: token buckets decided together. The services and the transport depend
// on this interface only; the composition root picks the Redis adapter (REDIS_URL set) or the
// in-process one, which give the same answers for a single process.

/** One token bucket of a call. */
export interface BucketSpec {
  /** Unique within the tenant, e.g. `key:key_<kid>` or `tenant`. */
  id: string;
  /** Most tokens the bucket holds: the burst. A positive integer. */
  capacity: number;
  /** Tokens added per second, continuously. Positive. */
  refillPerSec: number;
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
}

export interface RateLimiter {
  /**
   * Takes `cost` tokens from every bucket atomically, or from none when any lacks them. Buckets
   * are scoped by tenant (`tenantId` may be a pseudo-tenant such as `owner`). A cost above a
   * bucket's capacity can never pass. Rejects when the backend fails; callers bound the wait.
   */
  take(tenantId: string, buckets: BucketSpec[], cost: number): Promise<BucketDecision>;
  close(): Promise<void>;
}

/** Throws on buckets no limiter can decide on (a refill of 0 would never end a denial). */
export function assertBuckets(buckets: BucketSpec[], cost: number): void {
  if (buckets.length === 0) throw new RangeError("at least one bucket is needed");
  if (!(cost > 0) || !Number.isFinite(cost)) throw new RangeError(`cost must be positive, got ${cost}`);
  for (const b of buckets) {
    if (!(b.capacity > 0) || !Number.isFinite(b.capacity)) throw new RangeError(`bucket ${b.id}: bad capacity`);
    if (!(b.refillPerSec > 0) || !Number.isFinite(b.refillPerSec)) throw new RangeError(`bucket ${b.id}: bad refill`);
  }
}
