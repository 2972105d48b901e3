import type { Clock } from "../../domain/clock.js";
import { DomainError, unavailable } from "../../domain/errors.js";
import { FixedDelayTimer, withinDelay } from "./fixed-timer.js";
import type { AfterTake, BucketDecision, BucketSpec, RateLimiter } from "./types.js";

// What the per-call limit is for a caller, and what happens when the limiter cannot answer.
//
// Limits: every tenant key has a bucket of its own and shares its tenant's bucket; both come
// from the tenant's plan unless the tenant has an override, which may expire (the plan then
// applies again without anyone having to remove it). Owner keys acting on the collection have no
// tenant; they get a generous bucket of their own under the pseudo-tenant `owner`. An owner acting
// on behalf of a tenant is charged to that same owner bucket, not to the tenant's: operators
// repairing a tenant that is at its limit must not be locked out by it, nor spend its budget.
//
// Denial cache (envoy ratelimit's over-limit cache): once the limiter says a bucket lacks tokens
// until T, this process refuses calls on that bucket until T without asking Redis. Tokens only
// grow by refill, so the refusal is exactly what Redis would answer; it takes the load of a
// client hammering past its limit off Redis and off the round trip.
//
// Leases: with a remote limiter, a busy key's per-call tokens are taken in batches. A call finds
// its key's lease (tokens taken from the key and tenant buckets together, in one atomic limiter
// call, by this process) and spends one token from it without a round trip; when the lease is
// empty the next call takes a new one, and calls arriving meanwhile wait for that one limiter
// call instead of each making their own. A lease starts at one token, doubles when the next one
// is needed within 50 ms of the previous, halves when that took over 200 ms or tokens expired
// unspent, and is never more than `leaseMax` or an eighth of the smallest bucket's capacity; a
// lease that the buckets cannot fill falls back to a single token, so the last tokens of a
// bucket are still handed out one at a time. Leased tokens left unspent after `leaseTtlMs` are dropped. Every
// token is still taken from the buckets by the atomic script, so no lease admits a call the
// buckets would refuse (0 over-admission); what a lease costs is that tokens one replica holds
// are not available to another until spent or dropped: at most one lease per key per replica.
// A key called at a low rate keeps leases of one token: one limiter call per call, exactly as
// without leases. The RateLimit headers count the lease's unspent tokens as remaining.
//
// Faults: every limiter call is bounded by `timeoutMs` (on top of the Redis command timeout, so a
// stalled connection, a slow script or a bug in a client library cannot hold a request). When
// the limiter fails or times out, fail-open lets the call through unlimited and fail-closed
// refuses it with UNAVAILABLE BACKEND_UNAVAILABLE. There is no circuit breaker and no other
// state about failures, so enforcement resumes with the first call after Redis answers again.

export type FailMode = "open" | "closed";

export interface BucketLimit {
  /** Burst: the most calls that can pass at once. */
  capacity: number;
  /** Sustained calls per second (for a stepped bucket, the average). */
  refillPerSec: number;
  /** Stepped refill (see BucketSpec): `refillAmount` calls every `refillIntervalMs`; both or neither. */
  refillAmount?: number;
  refillIntervalMs?: number;
}

export interface PlanLimits {
  /** Each key of the tenant. */
  key: BucketLimit;
  /** All keys of the tenant together. */
  tenant: BucketLimit;
}

export interface RateLimitPlans {
  plans: Record<string, PlanLimits>;
  /** The plan of tenants whose plan is unknown or not in `plans`. */
  defaultPlan: string;
  /** Each owner key, whatever tenant it acts on. */
  owner: BucketLimit;
}

/** Built-in plan limits; deployments pass their own table through the factory. */
export const DEFAULT_RATE_LIMIT_PLANS: RateLimitPlans = {
  plans: {
    free: { key: { capacity: 20, refillPerSec: 10 }, tenant: { capacity: 40, refillPerSec: 20 } },
    pro: { key: { capacity: 200, refillPerSec: 100 }, tenant: { capacity: 1000, refillPerSec: 500 } },
    enterprise: { key: { capacity: 2000, refillPerSec: 1000 }, tenant: { capacity: 10_000, refillPerSec: 5000 } },
  },
  defaultPlan: "free",
  owner: { capacity: 10_000, refillPerSec: 5000 },
};

/** A tenant's own limits, replacing its plan's until `expiresAt`. */
export interface RateLimitOverride {
  key?: BucketLimit;
  tenant?: BucketLimit;
  /** Epoch ms after which the override no longer applies; absent or null: never expires. */
  expiresAt?: number | null;
}

/**
 * Where overrides come from. The LimitService will persist them; a synchronous answer (a cache)
 * keeps the hot path free of awaits.
 */
export interface OverrideSource {
  get(tenantId: string): RateLimitOverride | null | Promise<RateLimitOverride | null>;
}

export interface MemoryOverrideSource extends OverrideSource {
  set(tenantId: string, override: RateLimitOverride): void;
  delete(tenantId: string): void;
}

export function createMemoryOverrideSource(): MemoryOverrideSource {
  const map = new Map<string, RateLimitOverride>();
  return {
    get: (tenantId) => map.get(tenantId) ?? null,
    set: (tenantId, override) => {
      map.set(tenantId, override);
    },
    delete: (tenantId) => {
      map.delete(tenantId);
    },
  };
}

/** The plan name of a tenant; null or undefined selects the default plan. */
export type PlanOf = (tenantId: string) => string | null | undefined | Promise<string | null | undefined>;

export interface PlanCache {
  planOf: PlanOf;
  /** Forgets one tenant's plan (after an update), or every plan. */
  invalidate(tenantId?: string): void;
}

/**
 * Caches tenant plans for the hot path: a fresh entry answers synchronously; a miss loads once,
 * however many calls wait for it. A failed load answers the default plan and is retried after a
 * second, so a database hiccup neither fails calls nor pins a tenant to the wrong plan for long.
 */
export function createPlanCache(opts: {
  load: (tenantId: string) => Promise<string | null>;
  clock: Clock;
  ttlMs?: number;
  maxEntries?: number;
  onError?: (err: unknown) => void;
}): PlanCache {
  const ttlMs = opts.ttlMs ?? 30_000;
  const maxEntries = opts.maxEntries ?? 100_000;
  const entries = new Map<string, { plan: string | null; until: number }>();
  const loading = new Map<string, Promise<string | null>>();
  return {
    planOf(tenantId) {
      const e = entries.get(tenantId);
      if (e !== undefined && e.until > opts.clock.now()) return e.plan;
      let p = loading.get(tenantId);
      if (p === undefined) {
        p = opts.load(tenantId).then(
          (plan) => {
            if (entries.size >= maxEntries) entries.clear();
            entries.set(tenantId, { plan, until: opts.clock.now() + ttlMs });
            loading.delete(tenantId);
            return plan;
          },
          (err) => {
            opts.onError?.(err);
            entries.set(tenantId, { plan: null, until: opts.clock.now() + 1000 });
            loading.delete(tenantId);
            return null;
          },
        );
        loading.set(tenantId, p);
      }
      return p;
    },
    invalidate(tenantId) {
      if (tenantId === undefined) entries.clear();
      else entries.delete(tenantId);
    },
  };
}

/** Which limit a bucket stands for. */
export type BucketKind = "key" | "tenant";

/** One bucket of a call, as reported to the caller. */
export interface BucketReport {
  kind: BucketKind;
  /** `key:<key id>` or `tenant:<tenant id>`: the QuotaFailure subject. */
  subject: string;
  limit: BucketLimit;
  remaining: number;
  /** Until the bucket is full again. */
  resetMs: number;
}

export type LimitOutcome =
  /** Within the limits; `tightest` is the bucket closest to refusing (for the RateLimit headers). */
  | { allowed: true; tightest: BucketReport }
  /** Over a limit: `tripped` refused the call; the caller may retry after `retryAfterMs`. */
  | { allowed: false; tripped: BucketReport; retryAfterMs: number }
  /** The limiter failed and the policy is fail-open: allowed, but nothing is known. */
  | { allowed: true; tightest: null };

/** Who is calling, as far as limits care. */
export interface LimitSubject {
  /** The key id (`key_<kid>`). */
  keyId: string;
  /** True for owner keys. */
  owner: boolean;
  /** The tenant a tenant key belongs to; ignored for owner keys. */
  tenantId: string | null;
}

export interface RateLimitPolicyDeps {
  limiter: RateLimiter;
  overrides: OverrideSource;
  /** Application time: when overrides expire. */
  clock: Clock;
  /**
   * The time the limiter's answers are measured in (its `retryAfterMs`), which the denial cache
   * and the error-report throttle run on: real time for the Redis limiter (which reads Redis
   * `TIME`), the limiter's own clock for the in-process one. Defaults to `clock`.
   */
  limiterClock?: Clock;
  failMode: FailMode;
  /** Hard bound on each limiter call, in ms. */
  timeoutMs: number;
  /** Limiter failures, at most one report per second (with the count of the ones folded in). */
  onError: (err: unknown, failuresSinceLastReport: number) => void;
  plans?: Partial<RateLimitPlans>;
  planOf?: PlanOf;
  /** Most denials remembered; default 10,000. */
  maxCachedDenials?: number;
  /**
   * Largest lease of per-call tokens taken from the limiter in one call (see "Leases" above);
   * default 1, which takes every call's token on its own. A lease is also never more than an
   * eighth of the smallest bucket's capacity.
   */
  leaseMax?: number;
  /** How long leased tokens may be spent, in limiter-clock ms; default 1000. */
  leaseTtlMs?: number;
}

export interface RateLimitStats {
  /** Calls that reached the limiter. */
  limiterCalls: number;
  /** Calls refused from the denial cache, without the limiter. */
  cachedDenials: number;
  /** Limiter calls that failed or timed out. */
  failures: number;
}

/**
 * The answer on a `after` bucket decided with the per-call buckets: the limiter's decision, or
 * the error that kept it from deciding (the policy failed open; the caller applies its own fail
 * mode to this part).
 */
export type AfterResult = { ok: true; decision: BucketDecision } | { ok: false; error: unknown };

export interface RateLimitPolicy {
  /**
   * Decides a call of cost 1. Throws UNAVAILABLE BACKEND_UNAVAILABLE when failing closed.
   *
   * With `after` (tenant keys only: the bucket lives under the caller's tenant), the same limiter
   * call goes on to decide `after` once the per-call buckets have allowed the call (see
   * RateLimiter.take); its answer is `after` in the outcome. A refused call (from the denial
   * cache or the limiter) leaves `after` undecided and untouched. With leases, an allowed call
   * paid from its key's lease makes no limiter call and comes back without `after`: the caller
   * decides that bucket itself (one limiter call either way); only the call that takes a new lease
   * carries `after` on it.
   */
  check(subject: LimitSubject, after?: AfterTake): Promise<LimitOutcome & { after?: AfterResult }>;
  /** The refusal the denial cache gives the subject right now, without the limiter; else null. */
  cachedDenial(subject: LimitSubject): Promise<LimitOutcome | null>;
  /**
   * The outcome of a call of cost 1 when it can be given at once, with no limiter call and no
   * wait: the subject's limits are cached and the denial cache refuses it or its key's lease pays
   * for it. Otherwise undefined, and nothing is taken: the caller uses `check`.
   */
  checkNow(subject: LimitSubject): LimitOutcome | undefined;
  /** The limits that apply to the subject right now. */
  limitsFor(subject: LimitSubject): Promise<{ tenantId: string; buckets: Array<BucketSpec & { kind: BucketKind }> }>;
  stats(): RateLimitStats;
}

/** The pseudo-tenant owner keys' buckets live under. */
export const OWNER_SCOPE = "owner";

export class LimiterTimeoutError extends Error {
  constructor(ms: number) {
    super(`rate limiter did not answer within ${ms} ms`);
    this.name = "LimiterTimeoutError";
  }
}

interface CachedDenial {
  /** Clock ms until which the bucket lacks `cost` tokens. */
  until: number;
  /** Clock ms when the bucket is full again. */
  fullAt: number;
  cost: number;
  capacity: number;
  refillPerSec: number;
  refillIntervalMs: number | undefined;
}

export function createRateLimitPolicy(deps: RateLimitPolicyDeps): RateLimitPolicy {
  const plans: RateLimitPlans = { ...DEFAULT_RATE_LIMIT_PLANS, ...deps.plans };
  const defaultLimits = plans.plans[plans.defaultPlan];
  if (defaultLimits === undefined)
    throw new Error(`rate limit plans: default plan ${plans.defaultPlan} is not defined`);
  const maxDenials = deps.maxCachedDenials ?? 10_000;
  const limiterClock = deps.limiterClock ?? deps.clock;
  const denials = new Map<string, CachedDenial>();
  const stats: RateLimitStats = { limiterCalls: 0, cachedDenials: 0, failures: 0 };
  let lastReport = Number.NEGATIVE_INFINITY;
  let unreported = 0;

  const report = (err: unknown) => {
    stats.failures++;
    unreported++;
    const now = limiterClock.now();
    if (now - lastReport >= 1000) {
      lastReport = now;
      const n = unreported;
      unreported = 0;
      deps.onError(err, n);
    }
  };

  type Limits = { tenantId: string; buckets: Array<BucketSpec & { kind: BucketKind }> };

  /** A tenant key's buckets under its plan and override. */
  const tenantBuckets = (
    s: LimitSubject,
    tenantId: string,
    planName: string | null | undefined,
    o: RateLimitOverride | null,
  ): Limits => {
    const plan = (planName ? plans.plans[planName] : undefined) ?? defaultLimits;
    const l =
      o === null || (o.expiresAt != null && deps.clock.now() >= o.expiresAt)
        ? plan
        : { key: o.key ?? plan.key, tenant: o.tenant ?? plan.tenant };
    return {
      tenantId,
      buckets: [
        { kind: "key", id: `key:${s.keyId}`, ...l.key },
        { kind: "tenant", id: "tenant", ...l.tenant },
      ],
    };
  };

  const ownerBuckets = (s: LimitSubject): Limits => ({
    tenantId: OWNER_SCOPE,
    buckets: [{ kind: "key", id: `key:${s.keyId}`, ...plans.owner }],
  });

  const limitsFor: RateLimitPolicy["limitsFor"] = async (s) => {
    if (s.owner || s.tenantId === null) return ownerBuckets(s);
    const planName = deps.planOf ? await deps.planOf(s.tenantId) : null;
    return tenantBuckets(s, s.tenantId, planName, await deps.overrides.get(s.tenantId));
  };

  /** limitsFor when the plan and override are cached (answered synchronously); else undefined. */
  const limitsNow = (s: LimitSubject): Limits | undefined => {
    if (s.owner || s.tenantId === null) return ownerBuckets(s);
    const planName = deps.planOf ? deps.planOf(s.tenantId) : null;
    if (planName instanceof Promise) return undefined;
    const o = deps.overrides.get(s.tenantId);
    if (o instanceof Promise) return undefined;
    return tenantBuckets(s, s.tenantId, planName, o);
  };

  const subjectOf = (kind: BucketKind, s: LimitSubject, tenantId: string) =>
    kind === "key" ? `key:${s.keyId}` : `tenant:${tenantId}`;

  const remember = (key: string, d: CachedDenial) => {
    if (denials.size >= maxDenials) {
      const now = limiterClock.now();
      for (const [k, v] of denials) if (v.until <= now) denials.delete(k);
      // Every entry still live: forget them all rather than scan on each insert. Forgetting a
      // denial only costs a Redis call that gives the same answer.
      if (denials.size >= maxDenials) denials.clear();
    }
    denials.set(key, d);
  };

  // Every decision's bound has the same length: one shared timer (fixed-timer.ts).
  const bound = new FixedDelayTimer(deps.timeoutMs);
  const timedOut = () => new LimiterTimeoutError(deps.timeoutMs);
  const withTimeout = <T>(p: Promise<T>): Promise<T> => withinDelay(bound, p, timedOut);

  const leaseMax = Math.max(1, Math.floor(deps.leaseMax ?? 1));
  const leaseTtlMs = deps.leaseTtlMs ?? 1000;
  const leases = new Map<string, Lease>();
  const maxLeases = 100_000;

  /** A cached refusal of one of the buckets, or null; drops entries that no longer apply. */
  const denialOf = (
    s: LimitSubject,
    tenantId: string,
    buckets: Array<BucketSpec & { kind: BucketKind }>,
    cost: number,
  ): LimitOutcome | null => {
    if (denials.size === 0) return null;
    const now = limiterClock.now();
    for (const b of buckets) {
      const key = `${tenantId}\u0000${b.id}`;
      const d = denials.get(key);
      if (d === undefined) continue;
      // A denial recorded under other limits (an override since) says nothing about these.
      if (
        d.until <= now ||
        d.capacity !== b.capacity ||
        d.refillPerSec !== b.refillPerSec ||
        d.refillIntervalMs !== b.refillIntervalMs
      ) {
        denials.delete(key);
        continue;
      }
      if (cost < d.cost) continue;
      stats.cachedDenials++;
      return {
        allowed: false,
        retryAfterMs: d.until - now,
        tripped: {
          kind: b.kind,
          subject: subjectOf(b.kind, s, tenantId),
          limit: { capacity: b.capacity, refillPerSec: b.refillPerSec },
          remaining: 0,
          resetMs: Math.max(0, d.fullAt - now),
        },
      };
    }
    return null;
  };

  return {
    limitsFor,
    stats: () => ({ ...stats }),
    checkNow(s) {
      const limits = limitsNow(s);
      if (limits === undefined) return undefined;
      const { tenantId, buckets } = limits;
      const denied = denialOf(s, tenantId, buckets, 1);
      if (denied !== null) return denied;
      if (leaseMax <= 1) return undefined;
      const lease = leases.get(`${tenantId}\u0000${s.keyId}`);
      if (lease === undefined || lease.tokens <= 0) return undefined;
      const now = limiterClock.now();
      if (now >= lease.expiresAt || lease.sig !== signatureOf(buckets)) return undefined;
      lease.tokens--;
      if (lease.tokens === 0) lease.spentAt = now;
      return leaseOutcome(s, tenantId, buckets, lease, now);
    },
    async cachedDenial(s) {
      if (denials.size === 0) return null;
      const { tenantId, buckets } = await limitsFor(s);
      return denialOf(s, tenantId, buckets, 1);
    },
    async check(s, after) {
      const cost = 1;
      const { tenantId, buckets } = await limitsFor(s);
      if (after !== undefined && tenantId !== s.tenantId) {
        throw new Error("rate limit policy: a after-bucket needs a tenant key's own tenant");
      }
      const denied = denialOf(s, tenantId, buckets, cost);
      if (denied !== null) return denied;

      if (leaseMax > 1) return leased(s, tenantId, buckets, after);

      let decision: BucketDecision;
      stats.limiterCalls++;
      try {
        decision = await withTimeout(deps.limiter.take(tenantId, buckets, cost, after));
      } catch (err) {
        report(err);
        if (deps.failMode === "closed") throw unavailable("rate limiter", err);
        return after === undefined
          ? { allowed: true, tightest: null }
          : { allowed: true, tightest: null, after: { ok: false, error: err } };
      }
      const outcome = outcomeOf(s, tenantId, buckets, decision, decision.remaining, decision.resetMs, cost);
      if (after === undefined || !outcome.allowed) return outcome;
      const afterResult: AfterResult =
        decision.after === undefined
          ? { ok: false, error: new Error("the limiter did not decide the after-bucket") }
          : { ok: true, decision: decision.after };
      return { ...outcome, after: afterResult };
    },
  };

  /** The outcome of a limiter decision (remembering a refusal in the denial cache). */
  function outcomeOf(
    s: LimitSubject,
    tenantId: string,
    buckets: Array<BucketSpec & { kind: BucketKind }>,
    decision: BucketDecision,
    remaining: readonly number[],
    resetMs: readonly number[],
    cost: number,
  ): LimitOutcome {
    const reportOf = (i: number): BucketReport => {
      const b = buckets[i] as (typeof buckets)[number];
      return {
        kind: b.kind,
        subject: subjectOf(b.kind, s, tenantId),
        limit: { capacity: b.capacity, refillPerSec: b.refillPerSec },
        remaining: remaining[i] ?? 0,
        resetMs: resetMs[i] ?? 0,
      };
    };

    if (!decision.allowed) {
      const i = decision.tripped;
      const b = buckets[i] as (typeof buckets)[number];
      const at = limiterClock.now();
      remember(`${tenantId}\u0000${b.id}`, {
        until: at + decision.retryAfterMs,
        fullAt: at + (decision.resetMs[i] ?? 0),
        cost,
        capacity: b.capacity,
        refillPerSec: b.refillPerSec,
        refillIntervalMs: b.refillIntervalMs,
      });
      return { allowed: false, tripped: reportOf(i), retryAfterMs: decision.retryAfterMs };
    }

    // The tightest bucket is the one with the fewest calls left; on a tie, the one that takes
    // longer to refill.
    let t = 0;
    for (let i = 1; i < buckets.length; i++) {
      const r = remaining[i] ?? 0;
      const best = remaining[t] ?? 0;
      if (r < best || (r === best && (resetMs[i] ?? 0) > (resetMs[t] ?? 0))) t = i;
    }
    return { allowed: true, tightest: reportOf(t) };
  }

  /**
   * A call of cost 1 paid from the key's lease (see "Leases" at the top). With `after`, the call
   * that takes a new lease decides `after` in the same limiter call and keeps the new lease's
   * first token for itself, so that a planned bucket is only ever charged for an allowed call;
   * a call paid from tokens already leased leaves `after` to its caller.
   */
  async function leased(
    s: LimitSubject,
    tenantId: string,
    buckets: Array<BucketSpec & { kind: BucketKind }>,
    after?: AfterTake,
  ): Promise<LimitOutcome & { after?: AfterResult }> {
    const key = `${tenantId}\u0000${s.keyId}`;
    const sig = signatureOf(buckets);
    let lease = leases.get(key);
    if (lease === undefined || lease.sig !== sig) {
      if (leases.size >= maxLeases) pruneLeases();
      lease = newLease(sig);
      leases.set(key, lease);
    }
    for (;;) {
      const now = limiterClock.now();
      if (lease.tokens > 0) {
        if (now < lease.expiresAt) {
          lease.tokens--;
          if (lease.tokens === 0) lease.spentAt = now;
          return leaseOutcome(s, tenantId, buckets, lease, now);
        }
        // Tokens left unspent: this key needs smaller leases.
        lease.tokens = 0;
        lease.size = Math.max(1, lease.size >> 1);
      }
      if (lease.fetching === null && after !== undefined) {
        // This call takes the new lease, with its own bucket, and its first token.
        const l = lease;
        const own = fetchLease(l, s, tenantId, buckets, after);
        l.fetching = own
          .then((r) => r.shared)
          .finally(() => {
            l.fetching = null;
          });
        const r = await own;
        if (r.shared !== null && "failedClosed" in r.shared) throw unavailable("rate limiter", r.shared.failedClosed);
        if (r.shared !== null) return r.after ? { ...r.shared, after: r.after } : r.shared;
        return { ...leaseOutcome(s, tenantId, buckets, l, limiterClock.now()), ...(r.after ? { after: r.after } : {}) };
      }
      if (lease.fetching === null) {
        const l = lease;
        l.fetching = fetchLease(l, s, tenantId, buckets)
          .then((r) => r.shared)
          .finally(() => {
            l.fetching = null;
          });
      }
      lease.waiting++;
      let r: LeaseFetch;
      try {
        r = await lease.fetching;
      } finally {
        lease.waiting--;
      }
      if (r === null) continue;
      // Each waiting call gets an error of its own (interceptors may decorate it).
      if ("failedClosed" in r) throw unavailable("rate limiter", r.failedClosed);
      // Failed open: a waiter's own bucket is left to its caller's fail mode too, not to a second wait.
      if (after !== undefined && "failedOpen" in r) return { ...r, after: { ok: false, error: r.failedOpen } };
      return r;
    }
  }

  /**
   * Takes a new lease for the calls waiting on `lease` (`shared` says what they get). With
   * `after`, the same limiter call decides it, and the caller's own token is taken out of the new
   * lease before anyone else can spend it (`shared` is then null and the outcome is the caller's
   * to build from the lease).
   */
  async function fetchLease(
    lease: Lease,
    s: LimitSubject,
    tenantId: string,
    buckets: Array<BucketSpec & { kind: BucketKind }>,
    after?: AfterTake,
  ): Promise<{ shared: LeaseFetch; after?: AfterResult }> {
    let cap = leaseMax;
    for (const b of buckets) cap = Math.min(cap, Math.floor(b.capacity / 8));
    cap = Math.max(1, cap);
    if (lease.spentAt !== null) {
      // The previous lease was spent: size the next one to about 50–200 ms of this key's calls.
      const lasted = limiterClock.now() - lease.grantedAt;
      if (lasted <= LEASE_GROW_WITHIN_MS) lease.size *= 2;
      else if (lasted > 4 * LEASE_GROW_WITHIN_MS) lease.size = Math.max(1, lease.size >> 1);
    }
    lease.size = Math.min(cap, lease.size);
    lease.spentAt = null;
    let n = Math.min(cap, Math.max(lease.size, lease.waiting + 1));
    let d: BucketDecision;
    try {
      stats.limiterCalls++;
      d = await withTimeout(deps.limiter.take(tenantId, buckets, n, after));
      if (!d.allowed && n > 1) {
        // The buckets hold fewer than a lease: hand out what is left one token at a time.
        n = 1;
        lease.size = 1;
        stats.limiterCalls++;
        d = await withTimeout(deps.limiter.take(tenantId, buckets, 1, after));
      }
    } catch (err) {
      report(err);
      if (deps.failMode === "closed") return { shared: { failedClosed: err } };
      return {
        shared: { allowed: true, tightest: null, failedOpen: err },
        ...(after ? { after: { ok: false, error: err } } : {}),
      };
    }
    if (!d.allowed) return { shared: outcomeOf(s, tenantId, buckets, d, d.remaining, d.resetMs, 1) };
    const at = limiterClock.now();
    lease.tokens = n;
    lease.grantedAt = at;
    lease.expiresAt = at + leaseTtlMs;
    lease.remaining = d.remaining;
    lease.resetMs = d.resetMs;
    if (after === undefined) return { shared: null };
    const afterResult: AfterResult =
      d.after === undefined
        ? { ok: false, error: new Error("the limiter did not decide the after-bucket") }
        : { ok: true, decision: d.after };
    // The caller's token, before any other call can spend it.
    lease.tokens--;
    if (lease.tokens === 0) lease.spentAt = at;
    return { shared: null, after: afterResult };
  }

  function leaseOutcome(
    s: LimitSubject,
    tenantId: string,
    buckets: Array<BucketSpec & { kind: BucketKind }>,
    lease: Lease,
    now: number,
  ): LimitOutcome {
    const elapsed = now - lease.grantedAt;
    const remaining = lease.remaining.map((r) => r + lease.tokens);
    const resetMs = lease.resetMs.map((r) => Math.max(0, r - elapsed));
    return outcomeOf(s, tenantId, buckets, ALLOWED, remaining, resetMs, 1);
  }

  function pruneLeases(): void {
    const now = limiterClock.now();
    for (const [k, l] of leases) if (l.fetching === null && (l.tokens === 0 || l.expiresAt <= now)) leases.delete(k);
    if (leases.size >= maxLeases) for (const [k, l] of leases) if (l.fetching === null) leases.delete(k);
  }
}

/** A lease grows when the next one is needed this soon after the previous one was taken. */
const LEASE_GROW_WITHIN_MS = 50;

/** A key's leased per-call tokens (see "Leases" at the top of this file). */
interface Lease {
  /** The limits the tokens were taken under; other limits (an override since) start a new lease. */
  sig: string;
  /** Unspent tokens. */
  tokens: number;
  grantedAt: number;
  expiresAt: number;
  /** When the last token was spent, while the lease was live; null otherwise. */
  spentAt: number | null;
  /** The buckets' remaining tokens and reset times when the lease was taken. */
  remaining: number[];
  resetMs: number[];
  /** Tokens the next lease asks for. */
  size: number;
  fetching: Promise<LeaseFetch> | null;
  /** Calls waiting for `fetching`. */
  waiting: number;
}

/**
 * null: the lease holds tokens; `failedClosed`: the limiter failed and the policy fails closed;
 * otherwise the outcome of every call that waited for it.
 */
type LeaseFetch =
  | LimitOutcome
  | { allowed: true; tightest: null; failedOpen: unknown }
  | null
  | { failedClosed: unknown };

const ALLOWED: BucketDecision = { allowed: true, tripped: -1, remaining: [], retryAfterMs: 0, resetMs: [] };

function newLease(sig: string): Lease {
  return {
    sig,
    tokens: 0,
    grantedAt: 0,
    expiresAt: 0,
    spentAt: null,
    remaining: [],
    resetMs: [],
    size: 1,
    fetching: null,
    waiting: 0,
  };
}

function signatureOf(buckets: readonly BucketSpec[]): string {
  let sig = "";
  for (const b of buckets)
    sig += `${b.id}/${b.capacity}/${b.refillPerSec}/${b.refillAmount ?? ""}/${b.refillIntervalMs ?? ""};`;
  return sig;
}

/** RESOURCE_EXHAUSTED RATE_LIMITED for a refused call, naming the bucket that refused it. */
export function rateLimited(tripped: BucketReport, retryAfterMs: number, headers?: Record<string, string>) {
  const what = tripped.kind === "key" ? "this API key" : "this tenant";
  return new DomainError(
    "resource_exhausted",
    "RATE_LIMITED",
    `rate limit exceeded for ${what} (${tripped.limit.capacity} calls burst, ${tripped.limit.refillPerSec}/s); retry in ${retryAfterMs} ms`,
    {
      retryAfterMs,
      quotaViolations: [
        {
          subject: tripped.subject,
          description: `at most ${tripped.limit.capacity} calls at once and ${tripped.limit.refillPerSec} per second`,
        },
      ],
      metadata: { bucket: tripped.kind, limit: String(tripped.limit.capacity), retry_after_ms: String(retryAfterMs) },
      ...(headers ? { headers } : {}),
    },
  );
}
