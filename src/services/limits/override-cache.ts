import type { Clock } from "../../domain/clock.js";
import type { OverrideBucket, OverrideStore, RateLimitOverrideRecord } from "../../store/limit-ports.js";
import type { BucketLimit, OverrideSource, RateLimitOverride } from "../rate-limit/policy.js";

// The per-call rate limit (src/services/rate-limit/policy.ts) asks for a tenant's override on
// every call. This cache answers synchronously while an entry is fresh, so the hot path has no
// await; a miss loads once, however many calls wait for it. Entries live `ttlMs` (default one
// second), which is the "in force on every replica within a second" of SetRateLimitOverride:
// the replica that sets an override drops its entry at once, the others see it on their next
// load. A failed load answers "no override" (the plan applies) and is retried after a second,
// so a database hiccup never fails calls.

export interface OverrideCache extends OverrideSource {
  /** Forgets one tenant's override (after a change), or every one. */
  invalidate(tenantId?: string): void;
}

export function bucketLimitOf(b: OverrideBucket): BucketLimit {
  return { capacity: b.capacity, refillPerSec: b.refillPerSecond };
}

/** The policy's view of a stored override. */
export function policyOverrideOf(r: RateLimitOverrideRecord): RateLimitOverride {
  return {
    ...(r.perKey ? { key: bucketLimitOf(r.perKey) } : {}),
    ...(r.perTenant ? { tenant: bucketLimitOf(r.perTenant) } : {}),
    expiresAt: r.expiresAt,
  };
}

export function createOverrideCache(opts: {
  store: Pick<OverrideStore, "get">;
  clock: Clock;
  ttlMs?: number;
  maxEntries?: number;
  onError?: (err: unknown) => void;
}): OverrideCache {
  const ttlMs = opts.ttlMs ?? 1000;
  const maxEntries = opts.maxEntries ?? 100_000;
  const entries = new Map<string, { value: RateLimitOverride | null; until: number }>();
  const loading = new Map<string, Promise<RateLimitOverride | null>>();
  // Bumped by invalidate, so that a load started before an invalidation does not store its
  // (possibly stale) answer after it.
  let generation = 0;

  return {
    get(tenantId) {
      const e = entries.get(tenantId);
      if (e !== undefined && e.until > opts.clock.now()) return e.value;
      let p = loading.get(tenantId);
      if (p === undefined) {
        const gen = generation;
        p = opts.store.get(tenantId).then(
          (r) => {
            const value = r === null ? null : policyOverrideOf(r);
            if (gen === generation) {
              if (entries.size >= maxEntries) entries.clear();
              entries.set(tenantId, { value, until: opts.clock.now() + ttlMs });
            }
            loading.delete(tenantId);
            return value;
          },
          (err) => {
            opts.onError?.(err);
            if (gen === generation) entries.set(tenantId, { value: null, until: opts.clock.now() + 1000 });
            loading.delete(tenantId);
            return null;
          },
        );
        loading.set(tenantId, p);
      }
      return p;
    },
    invalidate(tenantId) {
      generation++;
      if (tenantId === undefined) {
        entries.clear();
        loading.clear();
      } else {
        entries.delete(tenantId);
        loading.delete(tenantId);
      }
    },
  };
}
