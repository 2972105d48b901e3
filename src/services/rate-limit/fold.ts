import { type ContextValues, createContextKey } from "@connectrpc/connect";
import type { AfterResult } from "./policy.js";
import type { BucketSpec } from "./types.js";

// Folding a handler's own token-bucket decision into the call's per-call rate limit, so that
// both cost one limiter call (one Redis round trip) instead of two.
//
// The rate-limit interceptor decides the caller's key and tenant buckets before anything else
// runs (usage counting, validation, the handler). A service whose handler takes tokens from a
// bucket of the caller's own tenant (LimitService.CheckRateLimit) registers a FoldPlanner for
// that method. For a call made with a tenant key, the interceptor asks the planner first: given
// the request, it answers the bucket and cost the handler would take — only when the request is
// valid and the bucket known, since nothing may be charged for a call that then fails — or
// nothing. With a plan, the interceptor makes one limiter call: the caller's buckets first, all
// or nothing at cost 1, then, only if they allowed the call, the planned bucket at its own cost
// (RateLimiter.take's `after`). A refused caller gets RESOURCE_EXHAUSTED RATE_LIMITED exactly as
// without the fold, and the planned bucket is neither decided nor charged; an allowed caller's
// call goes on with the planned bucket's answer in its context values (FoldedDecision), which the
// handler uses instead of asking the limiter. The caller's tokens are taken once and never half:
// a refused planned bucket does not give them back, just as two calls in sequence would not.
// Without a plan the interceptor decides the caller's buckets alone, as for any other method, and
// the handler asks the limiter itself.
//
// With leases of per-call tokens (policy.ts, "Leases"), a busy key's call is usually paid from
// its lease without a limiter call; the planned bucket is then decided by the handler alone (one
// bucket in the script instead of three, still one round trip). Only the call that takes a new
// lease carries the planned bucket on that limiter call, and it keeps the new lease's first token,
// so a planned bucket is charged only for a call that is allowed.

/** The bucket and cost a handler will take, planned from its request. */
export interface FoldPlan {
  bucket: BucketSpec;
  cost: number;
  /** Whatever else the handler needs from its planning (e.g. the bucket's definition). */
  data: unknown;
}

/**
 * Plans a call's own take from its request, before the handler runs: the plan, or undefined when
 * the call must take its usual path (invalid request, unknown bucket, any doubt). Must not throw
 * for a request the handler would refuse; a rejection also means "no plan".
 */
export type FoldPlanner = (message: unknown, tenantId: string) => Promise<FoldPlan | undefined>;

/** Where a service registers its planners: the per-call rate limit (RateLimiting). */
export interface FoldRegistry {
  /** `procedure` is `<service type name>/<method name>`, e.g. `tenantd.v1.LimitService/CheckRateLimit`. */
  registerFold(procedure: string, planner: FoldPlanner): void;
}

/** The planned bucket's answer, decided with the caller's buckets, for the handler. */
export interface FoldedDecision {
  /** The request message the plan was made from; the handler uses the decision only for it. */
  message: unknown;
  plan: FoldPlan;
  /**
   * The decision, or the limiter failure (the per-call limit failed open) for the handler's fail
   * mode; undefined when the caller's token came from its key's lease (policy.ts, "Leases") and
   * the handler is to decide the planned bucket itself.
   */
  result: AfterResult | undefined;
}

export const foldedDecisionKey = createContextKey<FoldedDecision | undefined>(undefined, {
  description: "tenantd per-call rate limit, folded with the handler's own bucket",
});

/** The folded decision made for this very request, if any. */
export function foldedDecisionFor(values: ContextValues, message: unknown): FoldedDecision | undefined {
  const d = values.get(foldedDecisionKey);
  return d !== undefined && d.message === message ? d : undefined;
}
