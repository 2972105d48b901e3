import type { DescMethod } from "@bufbuild/protobuf";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Clock } from "../../domain/clock.js";
import { DomainError } from "../../domain/errors.js";
import { scopeKey } from "../../services/context.js";
import { type FoldPlanner, type FoldRegistry, foldedDecisionKey } from "../../services/rate-limit/fold.js";
import {
  type BucketReport,
  createRateLimitPolicy,
  type FailMode,
  type LimitOutcome,
  type LimitSubject,
  type OverrideSource,
  type PlanOf,
  type RateLimitPlans,
  type RateLimitPolicy,
  rateLimited,
} from "../../services/rate-limit/policy.js";
import type { RateLimiter } from "../../services/rate-limit/types.js";

type Next = Parameters<Interceptor>[0];
type Req = Parameters<Next>[0];

// The per-call rate limit, placed right after the auth interceptor: it reads the CallScope auth
// set and decides the key's and the tenant's buckets together, in one limiter call. Calls without
// a scope (public RPCs: health, reflection) are not limited here.
//
// Every limited call, answered or refused, carries the state of its tightest bucket as
// `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` (seconds until the bucket is full
// again), after the IETF RateLimit header fields draft. On success they go into the response
// headers; on an error they ride on the error (DomainError.headers, or the ConnectError's
// metadata), which Connect sends as headers and gRPC as trailers; the REST face passes them on
// and maps RESOURCE_EXHAUSTED to 429 with Retry-After from the RetryInfo.
//
// When the limiter fails and the policy fails open, the call passes without headers: a made-up
// remaining count would mislead clients more than none.
//
// A method whose handler takes tokens from a bucket of the caller's tenant can have both decided
// in one limiter call (one Redis round trip instead of two): its service registers a FoldPlanner
// (src/services/rate-limit/fold.ts; LimitService.CheckRateLimit does), and for calls with a tenant
// key the interceptor asks it for the bucket before deciding. Owner keys are not folded: their
// buckets live under the `owner` pseudo-tenant, another Redis Cluster slot than the tenant's.

export interface RateLimitingDeps {
  limiter: RateLimiter;
  overrides: OverrideSource;
  /** Application time: when overrides expire. */
  clock: Clock;
  /** The limiter's time (see RateLimitPolicyDeps.limiterClock): systemClock with Redis. */
  limiterClock?: Clock;
  /** What a call gets when the limiter fails or times out. */
  failMode: FailMode;
  /** Hard bound on each limiter decision, in ms; the Redis command timeout is the usual value. */
  timeoutMs: number;
  /** Limiter failures, throttled to one report per second. */
  onError: (err: unknown, failuresSinceLastReport: number) => void;
  /** Plan limits; defaults to DEFAULT_RATE_LIMIT_PLANS. */
  plans?: Partial<RateLimitPlans>;
  /** The tenant's plan name; defaults to the default plan for everyone. See createPlanCache. */
  planOf?: PlanOf;
  /** Largest lease of per-call tokens (RateLimitPolicyDeps.leaseMax); default 1: no leases. */
  leaseMax?: number;
  /**
   * Whether registered FoldPlanners are used (fold.ts); default true. Off, the per-call limit is
   * always a limiter call of its own and handlers take their buckets themselves.
   */
  fold?: boolean;
}

export interface RateLimiting extends FoldRegistry {
  interceptor: Interceptor;
  policy: RateLimitPolicy;
  /** Closes the limiter (the Redis connection, if the limiter owns it). */
  close(): Promise<void>;
}

export function createRateLimiting(deps: RateLimitingDeps): RateLimiting {
  const policy = createRateLimitPolicy(deps);
  const planners = new Map<string, FoldPlanner>();
  return {
    interceptor: rateLimitInterceptor(policy, deps.fold === false ? undefined : planners),
    policy,
    registerFold(procedure, planner) {
      planners.set(procedure, planner);
    },
    close: () => deps.limiter.close(),
  };
}

/** The RateLimit header fields for a bucket. */
export function rateLimitHeaders(b: BucketReport): Record<string, string> {
  return {
    "ratelimit-limit": String(b.limit.capacity),
    "ratelimit-remaining": String(Math.max(0, b.remaining)),
    "ratelimit-reset": String(Math.ceil(b.resetMs / 1000)),
  };
}

/** The planner registered for a method, if any (looked up once per method). */
function plannerLookup(planners: ReadonlyMap<string, FoldPlanner> | undefined) {
  const found = new WeakMap<DescMethod, FoldPlanner | null>();
  return (m: DescMethod): FoldPlanner | null => {
    if (planners === undefined || planners.size === 0) return null;
    let p = found.get(m);
    if (p === undefined) {
      p = planners.get(`${m.parent.typeName}/${m.name}`) ?? null;
      found.set(m, p);
    }
    return p;
  };
}

export function rateLimitInterceptor(
  policy: RateLimitPolicy,
  planners?: ReadonlyMap<string, FoldPlanner>,
): Interceptor {
  const plannerOf = plannerLookup(planners);
  /** The call once its outcome is known: refused, or run with the RateLimit headers on its answer. */
  const proceed = (next: Next, req: Req, outcome: LimitOutcome): ReturnType<Next> => {
    if (!outcome.allowed) {
      return Promise.reject(rateLimited(outcome.tripped, outcome.retryAfterMs, rateLimitHeaders(outcome.tripped)));
    }
    if (outcome.tightest === null) return next(req);
    const headers = rateLimitHeaders(outcome.tightest);
    return next(req).then(
      (res) => {
        for (const name in headers) res.header.set(name, headers[name] as string);
        return res;
      },
      (err: unknown) => {
        if (err instanceof DomainError) Object.assign(err.headers, headers);
        else if (err instanceof ConnectError)
          for (const name in headers) err.metadata.set(name, headers[name] as string);
        throw err;
      },
    );
  };
  /** A call the lease and the denial cache cannot decide: the limiter, folded when a planner can. */
  const decide = async (req: Req, subject: LimitSubject): Promise<LimitOutcome> => {
    const planner = subject.owner || subject.tenantId === null || req.stream ? null : plannerOf(req.method);
    if (planner === null) return policy.check(subject);
    // Folded (fold.ts): a caller known to be over its limit is refused without planning; else
    // the planned bucket rides on the caller's decision, and its answer goes to the handler.
    const denied = await policy.cachedDenial(subject);
    if (denied !== null) return denied;
    const plan = await planner(req.message, subject.tenantId as string).catch(() => undefined);
    if (plan === undefined) return policy.check(subject);
    const o = await policy.check(subject, { bucket: plan.bucket, cost: plan.cost });
    // Without `after` the call was paid from its key's lease: the handler decides the planned
    // bucket itself (still one limiter call), from the plan made here.
    if (o.allowed) req.contextValues.set(foldedDecisionKey, { message: req.message, plan, result: o.after });
    return o;
  };
  // Not an async function: a call paid from its key's lease (or refused from the denial cache)
  // is decided with no promise of its own; a method with a planner then decides its own bucket
  // itself (fold.ts, on leases).
  return (next) => (req) => {
    const scope = req.contextValues.get(scopeKey);
    if (scope === undefined) return next(req);
    const subject: LimitSubject = {
      keyId: scope.principal.keyId,
      owner: scope.principal.key.kind === "owner",
      tenantId: scope.tenantId,
    };
    try {
      const now = policy.checkNow(subject);
      if (now !== undefined) return proceed(next, req, now);
    } catch (e) {
      return Promise.reject(e);
    }
    return decide(req, subject).then((outcome) => proceed(next, req, outcome));
  };
}
