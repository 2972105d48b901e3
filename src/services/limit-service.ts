import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ResourceLimit_GateAction as Gate,
  ReservationSchema,
  type ResourceLimit_GateAction,
  type ResourceUsage,
  ResourceUsageSchema,
} from "../../gen/tenantd/v1/limit_pb.js";
import {
  CheckAndTrackResourceResponseSchema,
  type CheckRateLimitRequest,
  CheckRateLimitResponseSchema,
  CheckResourceResponseSchema,
  CommitReservationResponseSchema,
  GetRateLimitBucketsResponseSchema,
  GetRateLimitOverrideResponseSchema,
  GetResourceLimitsResponseSchema,
  GetResourceUsageResponseSchema,
  type LimitService,
  ReleaseReservationResponseSchema,
  ReserveResourceResponseSchema,
  SetRateLimitOverrideResponseSchema,
  TrackResourceResponseSchema,
  UpdateRateLimitBucketsResponseSchema,
  UpdateResourceLimitsResponseSchema,
} from "../../gen/tenantd/v1/limit_service_pb.js";
import type { Clock } from "../domain/clock.js";
import { DomainError, invalidField, invalidFields, tenantNotFound, unavailable } from "../domain/errors.js";
import { isTenantId, newId } from "../domain/ids.js";
import type { TenantRecord } from "../domain/types.js";
import type {
  BucketDef,
  CounterSpec,
  CounterState,
  IdempotencyKey,
  LimitStore,
  OverrideBucket,
  OverrideStore,
  QuotaOutcome,
  QuotaStore,
  RateLimitOverrideRecord,
  ReservationRecord,
  ResourceLimitDef,
  Versioned,
} from "../store/limit-ports.js";
import type { TenantStore } from "../store/ports.js";
import type { AuditRecorder } from "./audit.js";
import type { CallScope } from "./context.js";
import { ts } from "./convert.js";
import type { InvalidationBus } from "./invalidation.js";
import {
  bucketFromProto,
  bucketToProto,
  effectiveLimit,
  gateToProto,
  limitFromProto,
  limitToProto,
  overrideBucketFromProto,
  periodToProto,
  planBucketToProto,
  refillRate,
  reservationStateToProto,
  scopeToProto,
} from "./limits/convert.js";
import type { OverrideCache } from "./limits/override-cache.js";
import { periodWindow } from "./limits/periods.js";
import { plainlyValidCheckRateLimit } from "./rate-limit/check-request.js";
import { FixedDelayTimer, withinDelay } from "./rate-limit/fixed-timer.js";
import { type FoldPlan, type FoldRegistry, foldedDecisionFor } from "./rate-limit/fold.js";
import {
  type BucketLimit,
  DEFAULT_RATE_LIMIT_PLANS,
  type FailMode,
  LimiterTimeoutError,
  type PlanLimits,
  type RateLimitPlans,
} from "./rate-limit/policy.js";
import type { BucketDecision, BucketSpec, RateLimiter } from "./rate-limit/types.js";
import { canonicalHash, currentTenantId, scopeOf } from "./util.js";

// LimitService: resource quotas (definitions, usage, check / track / check-and-track, reserve
// → commit / release), named token buckets for internal callers (CheckRateLimit), and the
// owner's overrides of the per-call rate limits.
//
// Definitions live in Postgres (src/store/postgres/limit-store.ts) and are cached here for
// `definitionsCacheMs` (default 1 s) with the tenant's plan and time zone, because every check
// needs them: a change made on this replica applies at once, on other replicas within that time.
// Counters live in the QuotaStore (Redis, or in process); each decision is one atomic store call.
//
// Faults. Every counter-store and limiter call is bounded by `timeoutMs` on top of the Redis
// command timeout. When one fails:
//   - decisions (CheckResource, TrackResource, CheckAndTrackResource, ReserveResource) follow
//     `quotaFailMode`: "open" answers allowed (limit -1, no usages: nothing is known; a track is
//     then not counted), "closed" answers UNAVAILABLE BACKEND_UNAVAILABLE;
//   - CheckRateLimit follows `rateLimitFailMode`: "open" answers allowed with remaining 0 and no
//     reset time, "closed" answers UNAVAILABLE BACKEND_UNAVAILABLE;
//   - reads and state changes that cannot be pretended (GetResourceUsage, CommitReservation,
//     ReleaseReservation) always answer UNAVAILABLE.
// There is no breaker and no failure state, so enforcement resumes with the first call after the
// backend answers again.
//
// Counting calls (track, consume, reserve, commit, release) are not written to the audit trail:
// they are usage, made on the callers' hot path, not changes of configuration. The definition
// writes (UpdateResourceLimits, UpdateRateLimitBuckets, SetRateLimitOverride) are.

export interface LimitServiceDeps {
  limits: LimitStore;
  overrides: OverrideStore;
  quota: QuotaStore;
  rateLimiter: RateLimiter;
  tenants: Pick<TenantStore, "get">;
  clock: Clock;
  audit: AuditRecorder;
  /** What quota decisions answer when the counter store fails. */
  quotaFailMode: FailMode;
  /** What CheckRateLimit answers when the limiter fails. */
  rateLimitFailMode: FailMode;
  /** Hard bound on each counter-store and limiter call, in ms (the Redis command timeout). */
  timeoutMs: number;
  /** Plan buckets, as given to the rate-limit policy; default DEFAULT_RATE_LIMIT_PLANS. */
  plans?: Partial<RateLimitPlans>;
  /** The policy's override cache, dropped for a tenant when its override changes. */
  overrideCache?: Pick<OverrideCache, "invalidate">;
  /** Tenant events (plan or time zone changes, deletion) drop this service's cached definitions. */
  bus?: Pick<InvalidationBus, "subscribe">;
  /** How long definitions, plan and time zone are cached, ms. Default 1000; 0 disables. */
  definitionsCacheMs?: number;
  /** Backend failures that a fail mode answered for; throttling is the caller's business. */
  onBackendError?: (err: unknown, what: "quota" | "rate_limit") => void;
  /**
   * The per-call rate limit, to which CheckRateLimit registers its planner, so that the caller's
   * buckets and the requested one are decided in one limiter call (services/rate-limit/fold.ts).
   */
  perCallFolds?: FoldRegistry;
}

/** What CheckRateLimit's plan carries for the handler. */
interface RateLimitPlanData {
  def: BucketDef;
  /** The cost asked for (0: read). */
  cost: number;
}

const SVC = "tenantd.v1.LimitService";
/** request_id replays are remembered this long (the contract says 24 hours). */
const REQUEST_ID_TTL_MS = 24 * 60 * 60 * 1000;
/**
 * Counters outlive their period by this much: a reservation made just before a period ends may
 * be committed up to its longest TTL (1 hour) later, into the counter it holds.
 */
const COUNTER_MARGIN_MS = 2 * 60 * 60 * 1000;
const DEFAULT_RESERVATION_TTL_MS = 5 * 60 * 1000;

/** The etag of a list version. */
export function listEtag(version: number): string {
  return `W/"${version}"`;
}

function versionOfListEtag(etag: string): number | null {
  const m = /^W\/"(\d{1,15})"$/.exec(etag);
  return m ? Number(m[1]) : null;
}

function etagMismatch(): DomainError {
  return new DomainError("aborted", "ETAG_MISMATCH", "the list changed since it was read; read it again", {});
}

function requestIdConflict(requestId: string): DomainError {
  return new DomainError(
    "failed_precondition",
    "REQUEST_ID_CONFLICT",
    "request_id was already used with another request body",
    { metadata: { request_id: requestId } },
  );
}

function reservationNotFound(id: string): DomainError {
  return new DomainError("not_found", "RESOURCE_NOT_FOUND", `reservation ${id} not found`, {
    metadata: { reservation_id: id },
  });
}

/** One limit that applies to a call, with its counter in the current period. */
interface Applied {
  def: ResourceLimitDef;
  limit: number;
  userId: string;
  startMs: number;
  endMs: number;
  spec: CounterSpec;
}

/** The counter id of a limit, scope and period; unique inside the tenant. */
function counterId(l: ResourceLimitDef, userId: string, startMs: number): string {
  const who = l.scope === "tenant" ? "t" : `u:${userId}`;
  return `${l.resource}:${l.metric}:${l.period}:${who}:${startMs}`;
}

function usageOf(a: Applied, s: CounterState): ResourceUsage {
  const current = s.used + s.reserved;
  return create(ResourceUsageSchema, {
    resource: a.def.resource,
    metric: a.def.metric,
    period: periodToProto(a.def.period),
    scope: scopeToProto(a.def.scope),
    userId: a.def.scope === "end_user" ? a.userId : "",
    current: BigInt(current),
    reserved: BigInt(s.reserved),
    limit: BigInt(a.limit),
    remaining: BigInt(a.limit < 0 ? -1 : Math.max(0, a.limit - current)),
    percentage: a.limit < 0 ? 0 : a.limit === 0 ? (current > 0 ? 100 : 0) : (current / a.limit) * 100,
    gateAction: gateToProto(a.def.gateAction),
    periodStartTime: ts(a.startMs),
    periodEndTime: ts(a.endMs),
  });
}

/** The deciding limit's fields, as the Check/Track/Consume/Reserve responses share them. */
interface Decision {
  allowed: boolean;
  gateAction: ResourceLimit_GateAction;
  current: bigint;
  limit: bigint;
  remaining: bigint;
  exceeded: boolean;
  usages: ResourceUsage[];
}

/**
 * Decides from counter states. `extra` is the amount still to come on top of the states (the
 * asked amount for a check or a refused consume; 0 after counting). The deciding limit is the
 * BLOCK limit that refuses, else the one with the least room left.
 */
function decide(applied: Applied[], states: CounterState[], extra: number, allowedOverride?: boolean): Decision {
  const usages = applied.map((a, i) => usageOf(a, states[i] ?? { used: 0, reserved: 0 }));
  let refusing = -1;
  let tightest = -1;
  let tightestRoom = Number.POSITIVE_INFINITY;
  let exceeded = false;
  applied.forEach((a, i) => {
    const s = states[i] ?? { used: 0, reserved: 0 };
    const current = s.used + s.reserved;
    if (a.limit < 0) {
      if (tightest === -1) tightest = i;
      return;
    }
    const over = current + extra > a.limit;
    if (over) exceeded = true;
    if (over && a.def.gateAction === "block" && refusing === -1) refusing = i;
    const room = a.limit - current;
    if (room < tightestRoom) {
      tightestRoom = room;
      tightest = i;
    }
  });
  const pick = refusing !== -1 ? refusing : tightest;
  const allowed = allowedOverride ?? refusing === -1;
  if (pick === -1) {
    return {
      allowed,
      gateAction: Gate.GATE_ACTION_UNSPECIFIED,
      current: 0n,
      limit: -1n,
      remaining: -1n,
      exceeded,
      usages,
    };
  }
  const u = usages[pick] as ResourceUsage;
  return {
    allowed,
    gateAction: u.gateAction,
    current: u.current,
    limit: u.limit,
    remaining: u.remaining,
    exceeded,
    usages,
  };
}

/** What a fail-open decision answers: allowed, and nothing known. */
function degraded(): Decision {
  return {
    allowed: true,
    gateAction: Gate.GATE_ACTION_UNSPECIFIED,
    current: 0n,
    limit: -1n,
    remaining: -1n,
    exceeded: false,
    usages: [],
  };
}

/** A counter key part for a rate-limit subject: as given when short and plain, else hashed. */
function subjectKey(subject: string): string {
  if (/^[A-Za-z0-9_.:@|+-]{1,128}$/.test(subject)) return subject;
  return `#${createHash("sha256").update(subject).digest("base64url").slice(0, 32)}`;
}

export function createLimitService(deps: LimitServiceDeps): ServiceImpl<typeof LimitService> {
  const { limits, overrides, quota, rateLimiter, tenants, clock, audit } = deps;
  const plans: RateLimitPlans = { ...DEFAULT_RATE_LIMIT_PLANS, ...deps.plans };
  const cacheMs = deps.definitionsCacheMs ?? 1000;

  // ---- cached definitions ---------------------------------------------------------------------

  interface Cached<T> {
    value: T;
    until: number;
  }
  const tenantCache = new Map<string, Cached<TenantRecord>>();
  const limitCache = new Map<string, Cached<Versioned<ResourceLimitDef>>>();
  const bucketCache = new Map<string, Cached<Versioned<BucketDef>>>();
  const MAX_CACHED = 50_000;

  const remember = <T>(m: Map<string, Cached<T>>, k: string, value: T): T => {
    if (cacheMs <= 0) return value;
    if (m.size >= MAX_CACHED) m.clear();
    m.set(k, { value, until: clock.now() + cacheMs });
    return value;
  };
  const fresh = <T>(m: Map<string, Cached<T>>, k: string): T | undefined => {
    const e = m.get(k);
    return e !== undefined && e.until > clock.now() ? e.value : undefined;
  };

  deps.bus?.subscribe((e) => {
    if (e.kind === "all") {
      tenantCache.clear();
      limitCache.clear();
      bucketCache.clear();
    } else if (e.kind === "tenant") {
      tenantCache.delete(e.tenantId);
      limitCache.delete(e.tenantId);
      bucketCache.delete(e.tenantId);
    }
  });

  async function tenantOf(tenantId: string): Promise<TenantRecord> {
    const hit = fresh(tenantCache, tenantId);
    if (hit) return hit;
    const t = await tenants.get(tenantId);
    if (!t) throw tenantNotFound(tenantId);
    return remember(tenantCache, tenantId, t);
  }

  async function limitsOf(tenantId: string): Promise<Versioned<ResourceLimitDef>> {
    return fresh(limitCache, tenantId) ?? remember(limitCache, tenantId, await limits.getResourceLimits(tenantId));
  }

  async function bucketsOf(tenantId: string): Promise<Versioned<BucketDef>> {
    return fresh(bucketCache, tenantId) ?? remember(bucketCache, tenantId, await limits.getBuckets(tenantId));
  }

  // ---- backends under a bound and a fail mode ---------------------------------------------------

  // Every backend call's bound has the same length: one shared timer (rate-limit/fixed-timer.ts).
  const bound = new FixedDelayTimer(deps.timeoutMs);
  const timedOut = () => new LimiterTimeoutError(deps.timeoutMs);
  const bounded = <T>(p: Promise<T>): Promise<T> => withinDelay(bound, p, timedOut);

  /** Runs a quota-store call; on failure, undefined when failing open, UNAVAILABLE otherwise. */
  async function quotaCall<T>(fn: () => Promise<T>, mode: FailMode | "never"): Promise<T | undefined> {
    try {
      return await bounded(fn());
    } catch (err) {
      if (err instanceof DomainError) throw err;
      deps.onBackendError?.(err, "quota");
      if (mode === "open") return undefined;
      throw unavailable("usage counters", err);
    }
  }

  // ---- applicable limits ------------------------------------------------------------------------

  interface Target {
    tenant: TenantRecord;
    applied: Applied[];
  }

  /**
   * The limits of `resource`/`metric` (any when empty) that apply: TENANT limits always, END_USER
   * limits only with a user id; each with its counter in the current period.
   */
  async function targetOf(tenantId: string, q: { userId: string; resource: string; metric: string }): Promise<Target> {
    const [tenant, list] = await Promise.all([tenantOf(tenantId), limitsOf(tenantId)]);
    const now = clock.now();
    const applied: Applied[] = [];
    for (const def of list.items) {
      if (q.resource !== "" && def.resource !== q.resource) continue;
      if (q.metric !== "" && def.metric !== q.metric) continue;
      if (def.scope === "end_user" && q.userId === "") continue;
      const w = periodWindow(def.period, tenant.timezone, now);
      const limit = effectiveLimit(def, tenant.plan);
      const userId = def.scope === "end_user" ? q.userId : "";
      applied.push({
        def,
        limit,
        userId,
        startMs: w.startMs,
        endMs: w.endMs,
        spec: {
          id: counterId(def, userId, w.startMs),
          limit,
          block: def.gateAction === "block",
          expireAtMs: w.endMs + COUNTER_MARGIN_MS,
        },
      });
    }
    return { tenant, applied };
  }

  function idempotency(requestId: string, method: string, body: unknown): IdempotencyKey | undefined {
    if (requestId === "") return undefined;
    return { requestId, hash: canonicalHash({ method, body }), ttlMs: REQUEST_ID_TTL_MS };
  }

  /** The states after a counting call, aligned with `applied` (a replay may predate a list change). */
  function statesOf(out: QuotaOutcome & { kind: "done" }, n: number): CounterState[] {
    return Array.from({ length: n }, (_, i) => out.states[i] ?? { used: 0, reserved: 0 });
  }

  // ---- overrides ----------------------------------------------------------------------------------

  function planLimits(plan: string): PlanLimits {
    const p = plans.plans[plan] ?? plans.plans[plans.defaultPlan];
    if (!p) throw new DomainError("internal", "INTERNAL_ERROR", `rate limit plan ${plans.defaultPlan} is not defined`);
    return p;
  }

  /** The tenant an owner RPC names; an owner acting on behalf of a tenant reaches only that one. */
  async function ownerTarget(scope: CallScope, tenantId: string): Promise<TenantRecord> {
    if (scope.actingAs && scope.tenantId !== tenantId) throw tenantNotFound(tenantId);
    if (!isTenantId(tenantId)) throw tenantNotFound(tenantId);
    const t = await tenants.get(tenantId);
    if (!t) throw tenantNotFound(tenantId);
    return t;
  }

  function overrideView(tenant: TenantRecord, o: RateLimitOverrideRecord | null) {
    const live = o !== null && (o.expiresAt === null || o.expiresAt > clock.now()) ? o : null;
    const plan = planLimits(tenant.plan);
    const eff = (b: OverrideBucket | null, p: BucketLimit) => (b ? bucketToProto(b) : planBucketToProto(p));
    return {
      override: live
        ? {
            tenantId: live.tenantId,
            ...(live.perKey ? { perKey: bucketToProto(live.perKey) } : {}),
            ...(live.perTenant ? { perTenant: bucketToProto(live.perTenant) } : {}),
            ...(live.expiresAt !== null ? { expireTime: ts(live.expiresAt) } : {}),
            updateTime: ts(live.updatedAt),
            updateKeyId: live.updatedKeyId,
          }
        : undefined,
      effectivePerKey: eff(live?.perKey ?? null, plan.key),
      effectivePerTenant: eff(live?.perTenant ?? null, plan.tenant),
    };
  }

  // ---- reservations -----------------------------------------------------------------------------

  function reservationToProto(r: ReservationRecord) {
    return create(ReservationSchema, {
      id: r.id,
      userId: r.userId,
      resource: r.resource,
      metric: r.metric,
      amount: BigInt(r.amount),
      state: reservationStateToProto(r.state),
      createTime: ts(r.createdAtMs),
      expireTime: ts(r.expiresAtMs),
      committedAmount: BigInt(r.committedAmount),
      ...(r.finishedAtMs > 0 ? { finishTime: ts(r.finishedAtMs) } : {}),
    });
  }

  async function usagesAfterFinish(tenantId: string, r: ReservationRecord) {
    const t = await targetOf(tenantId, { userId: r.userId, resource: r.resource, metric: r.metric });
    const states = await quotaCall(
      () =>
        quota.check(
          tenantId,
          t.applied.map((a) => a.spec),
          clock.now(),
        ),
      "closed",
    );
    return decide(t.applied, states ?? [], 0);
  }

  async function finishReservation(ctx: HandlerContext, id: string, op: "commit" | "release", actual?: bigint) {
    const tenantId = currentTenantId(scopeOf(ctx));
    const now = clock.now();
    let out = await quotaCall(
      () =>
        op === "release"
          ? quota.release(tenantId, id, now)
          : actual === undefined
            ? quota.getReservation(tenantId, id, now).then(async (r) => {
                // Unset actual_amount means the amount held.
                if (r === null) return { kind: "not_found" as const };
                return quota.commit(tenantId, id, r.amount, now);
              })
            : quota.commit(tenantId, id, Number(actual), now),
      "closed",
    );
    out ??= { kind: "not_found" };
    if (out.kind === "not_found") throw reservationNotFound(id);
    if (out.kind === "state_conflict") {
      throw new DomainError(
        "failed_precondition",
        "STATE_CONFLICT",
        `reservation ${id} is ${out.reservation.state}${out.reservation.state === "committed" ? ` with ${out.reservation.committedAmount}` : ""}`,
        { metadata: { reservation_id: id, state: out.reservation.state } },
      );
    }
    return { tenantId, reservation: out.reservation };
  }

  // ---- CheckRateLimit's bucket ------------------------------------------------------------------

  /**
   * The bucket and cost of a CheckRateLimit request, or the error the RPC answers (unknown named
   * bucket, no refill, cost above the capacity). Cost 0 reads the bucket: the port has no read,
   * but a cost above the capacity is always refused, and a refusal charges nothing and reports
   * the bucket as it is.
   */
  async function planRateLimit(req: CheckRateLimitRequest, tenantId: string): Promise<FoldPlan> {
    let def: BucketDef;
    if (req.definition !== undefined) {
      def = bucketFromProto(req.definition);
      if (!(refillRate(def) > 0)) {
        throw invalidField("definition", "set either refill_per_second, or both refill_amount and refill_interval");
      }
    } else {
      const named = (await bucketsOf(tenantId)).items.find((b) => b.name === req.bucket);
      if (!named) {
        throw new DomainError("not_found", "RESOURCE_NOT_FOUND", `no bucket named ${req.bucket}`, {
          metadata: { bucket: req.bucket },
        });
      }
      def = named;
    }
    const cost = req.cost === undefined ? 1 : Number(req.cost);
    if (cost > def.capacity) {
      throw invalidField("cost", `must be at most the bucket's capacity (${def.capacity})`);
    }
    const bucket: BucketSpec = {
      id: `b:${req.bucket}:${subjectKey(req.subject)}`,
      capacity: def.capacity,
      refillPerSec: refillRate(def),
      // The stepped form: whole tokens at each interval (see BucketSpec).
      ...(def.refillPerSecond <= 0 && def.refillAmount > 0 && def.refillIntervalMs > 0
        ? { refillAmount: def.refillAmount, refillIntervalMs: def.refillIntervalMs }
        : {}),
    };
    const data: RateLimitPlanData = { def, cost };
    return { bucket, cost: cost === 0 ? def.capacity + 1 : cost, data };
  }

  // The per-call rate limit decides this bucket with the caller's own (one Redis round trip for
  // both; services/rate-limit/fold.ts). It runs before validation, so the plan is made only for a
  // request that certainly passes the protovalidate rules (rate-limit/check-request.ts) and that
  // the handler would not refuse; anything else takes the usual path, decided here.
  deps.perCallFolds?.registerFold(`${SVC}/CheckRateLimit`, async (message, tenantId) => {
    const req = message as CheckRateLimitRequest;
    if (!plainlyValidCheckRateLimit(req)) return undefined;
    return planRateLimit(req, tenantId).catch(() => undefined);
  });

  // ---- the RPCs ---------------------------------------------------------------------------------

  /** What TrackResource and CheckAndTrackResource share: tenant, amount (default 1), limits, idempotency. */
  async function countingCall(
    ctx: HandlerContext,
    req: { amount?: bigint; requestId: string; userId: string; resource: string; metric: string },
    method: string,
  ) {
    const tenantId = currentTenantId(scopeOf(ctx));
    const amount = req.amount === undefined ? 1 : Number(req.amount);
    const t = await targetOf(tenantId, req);
    const idem = idempotency(req.requestId, method, {
      userId: req.userId,
      resource: req.resource,
      metric: req.metric,
      amount,
    });
    return { tenantId, amount, t, idem };
  }

  return {
    async getResourceLimits(_req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      const [tenant, list] = await Promise.all([tenantOf(tenantId), limits.getResourceLimits(tenantId)]);
      remember(limitCache, tenantId, list);
      return create(GetResourceLimitsResponseSchema, {
        limits: list.items.map((l) => limitToProto(l, tenant.plan)),
        etag: listEtag(list.version),
        plan: tenant.plan,
      });
    },

    async updateResourceLimits(req, ctx) {
      const scope = scopeOf(ctx);
      const tenantId = currentTenantId(scope);
      const defs: ResourceLimitDef[] = [];
      const seen = new Set<string>();
      const bad: Array<{ field: string; description: string }> = [];
      req.limits.forEach((l, i) => {
        const d = limitFromProto(l);
        if (d === undefined) {
          bad.push({ field: `limits[${i}].period`, description: "must be MINUTE, HOUR, DAY or MONTH" });
          return;
        }
        const k = `${d.resource}/${d.metric}/${d.period}/${d.scope}`;
        if (seen.has(k)) {
          bad.push({ field: `limits[${i}]`, description: "each resource, metric, period and scope must appear once" });
        }
        seen.add(k);
        defs.push(d);
      });
      if (bad.length > 0) throw invalidFields(bad);
      let expected: number | undefined;
      if (req.etag !== "") {
        const v = versionOfListEtag(req.etag);
        if (v === null) throw etagMismatch();
        expected = v;
      }
      const [tenant, out] = await Promise.all([
        tenantOf(tenantId),
        limits.replaceResourceLimits(tenantId, defs, expected),
      ]);
      if (out === "version_mismatch") throw etagMismatch();
      remember(limitCache, tenantId, out);
      if (cacheMs <= 0) limitCache.delete(tenantId);
      await audit.record(scope, tenantId, `${SVC}/UpdateResourceLimits`, "limits/resources", {
        count: String(defs.length),
        etag: listEtag(out.version),
      });
      return create(UpdateResourceLimitsResponseSchema, {
        limits: out.items.map((l) => limitToProto(l, tenant.plan)),
        etag: listEtag(out.version),
      });
    },

    async getResourceUsage(req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      const t = await targetOf(tenantId, { userId: req.userId, resource: req.resource, metric: "" });
      const now = clock.now();
      const states = await quotaCall(
        () =>
          quota.check(
            tenantId,
            t.applied.map((a) => a.spec),
            now,
          ),
        "closed",
      );
      return create(GetResourceUsageResponseSchema, { usages: decide(t.applied, states ?? [], 0).usages });
    },

    async checkResource(req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      const amount = req.amount === undefined ? 1 : Number(req.amount);
      const t = await targetOf(tenantId, req);
      const now = clock.now();
      const states = await quotaCall(
        () =>
          quota.check(
            tenantId,
            t.applied.map((a) => a.spec),
            now,
          ),
        deps.quotaFailMode,
      );
      return create(CheckResourceResponseSchema, states ? decide(t.applied, states, amount) : degraded());
    },

    async trackResource(req, ctx) {
      const { tenantId, amount, t, idem } = await countingCall(ctx, req, "TrackResource");
      const specs = t.applied.map((a) => a.spec);
      const out = await quotaCall(() => quota.track(tenantId, specs, amount, clock.now(), idem), deps.quotaFailMode);
      if (out === undefined) return create(TrackResourceResponseSchema, degraded());
      if (out.kind === "conflict") throw requestIdConflict(req.requestId);
      // After counting: allowed is false when the usage now exceeds a BLOCK limit.
      const d = decide(t.applied, statesOf(out, t.applied.length), 0);
      return create(TrackResourceResponseSchema, { ...d, duplicate: out.duplicate });
    },

    async checkAndTrackResource(req, ctx) {
      const { tenantId, amount, t, idem } = await countingCall(ctx, req, "CheckAndTrackResource");
      const specs = t.applied.map((a) => a.spec);
      const out = await quotaCall(() => quota.consume(tenantId, specs, amount, clock.now(), idem), deps.quotaFailMode);
      if (out === undefined) return create(CheckAndTrackResourceResponseSchema, degraded());
      if (out.kind === "conflict") throw requestIdConflict(req.requestId);
      const states = statesOf(out, t.applied.length);
      // Refused: the states are as before, and the deciding limit is the one that refused the
      // amount. Counted: the states include it; a WARN limit may now be exceeded.
      const d = decide(t.applied, states, out.allowed ? 0 : amount, out.allowed);
      return create(CheckAndTrackResourceResponseSchema, { ...d, duplicate: out.duplicate });
    },

    async reserveResource(req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      const amount = Number(req.amount);
      if (!(amount >= 1)) throw invalidField("amount", "must be at least 1");
      const ttlMs = req.ttl === undefined ? DEFAULT_RESERVATION_TTL_MS : Math.round(durationMs(req.ttl));
      const t = await targetOf(tenantId, req);
      const idem = idempotency(req.requestId, "ReserveResource", {
        userId: req.userId,
        resource: req.resource,
        metric: req.metric,
        amount,
        ttlMs,
      });
      const now = clock.now();
      const init = { id: newId("rsv", now), userId: req.userId, resource: req.resource, metric: req.metric, ttlMs };
      const out = await quotaCall(
        () =>
          quota.reserve(
            tenantId,
            t.applied.map((a) => a.spec),
            amount,
            init,
            now,
            idem,
          ),
        deps.quotaFailMode,
      );
      if (out === undefined) return create(ReserveResourceResponseSchema, degraded());
      if (out.kind === "conflict") throw requestIdConflict(req.requestId);
      const d = decide(t.applied, statesOf(out, t.applied.length), out.allowed ? 0 : amount, out.allowed);
      return create(ReserveResourceResponseSchema, {
        ...d,
        reservationId: out.reservationId,
        ...(out.allowed ? { expireTime: ts(out.expiresAtMs) } : {}),
        duplicate: out.duplicate,
      });
    },

    async commitReservation(req, ctx) {
      const { tenantId, reservation } = await finishReservation(ctx, req.reservationId, "commit", req.actualAmount);
      const d = await usagesAfterFinish(tenantId, reservation);
      return create(CommitReservationResponseSchema, {
        reservation: reservationToProto(reservation),
        exceeded: d.exceeded,
        usages: d.usages,
      });
    },

    async releaseReservation(req, ctx) {
      const { reservation } = await finishReservation(ctx, req.reservationId, "release");
      return create(ReleaseReservationResponseSchema, { reservation: reservationToProto(reservation) });
    },

    async getRateLimitBuckets(_req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      const list = await limits.getBuckets(tenantId);
      remember(bucketCache, tenantId, list);
      return create(GetRateLimitBucketsResponseSchema, {
        buckets: list.items.map(bucketToProto),
        etag: listEtag(list.version),
      });
    },

    async updateRateLimitBuckets(req, ctx) {
      const scope = scopeOf(ctx);
      const tenantId = currentTenantId(scope);
      const defs = req.buckets.map(bucketFromProto);
      const bad: Array<{ field: string; description: string }> = [];
      const names = new Set<string>();
      defs.forEach((b, i) => {
        if (b.name === "") bad.push({ field: `buckets[${i}].name`, description: "is required" });
        else if (names.has(b.name)) bad.push({ field: `buckets[${i}].name`, description: "must be unique" });
        names.add(b.name);
        if (!(refillRate(b) > 0)) {
          bad.push({
            field: `buckets[${i}]`,
            description: "set either refill_per_second, or both refill_amount and refill_interval",
          });
        }
      });
      if (bad.length > 0) throw invalidFields(bad);
      let expected: number | undefined;
      if (req.etag !== "") {
        const v = versionOfListEtag(req.etag);
        if (v === null) throw etagMismatch();
        expected = v;
      }
      await tenantOf(tenantId);
      const out = await limits.replaceBuckets(tenantId, defs, expected);
      if (out === "version_mismatch") throw etagMismatch();
      remember(bucketCache, tenantId, out);
      if (cacheMs <= 0) bucketCache.delete(tenantId);
      await audit.record(scope, tenantId, `${SVC}/UpdateRateLimitBuckets`, "limits/rate/buckets", {
        count: String(defs.length),
        etag: listEtag(out.version),
      });
      return create(UpdateRateLimitBucketsResponseSchema, {
        buckets: out.items.map(bucketToProto),
        etag: listEtag(out.version),
      });
    },

    async checkRateLimit(req, ctx) {
      const tenantId = currentTenantId(scopeOf(ctx));
      // Planned and decided with the caller's own buckets by the per-call rate limit (see
      // planRateLimit above), or planned and decided here.
      const folded = foldedDecisionFor(ctx.values, req);
      const plan = folded?.plan ?? (await planRateLimit(req, tenantId));
      const { def, cost } = plan.data as RateLimitPlanData;
      const now = clock.now();
      const degradedAnswer = (err: unknown) => {
        deps.onBackendError?.(err, "rate_limit");
        if (deps.rateLimitFailMode === "closed") throw unavailable("rate limiter", err);
        return create(CheckRateLimitResponseSchema, { allowed: true, limit: BigInt(def.capacity), remaining: 0n });
      };
      let d: BucketDecision;
      if (folded?.result !== undefined) {
        if (!folded.result.ok) return degradedAnswer(folded.result.error);
        d = folded.result.decision;
      } else {
        try {
          d = await bounded(rateLimiter.take(tenantId, [plan.bucket], plan.cost));
        } catch (err) {
          return degradedAnswer(err);
        }
      }
      const allowed = cost === 0 ? true : d.allowed;
      return create(CheckRateLimitResponseSchema, {
        allowed,
        limit: BigInt(def.capacity),
        remaining: BigInt(Math.max(0, d.remaining[0] ?? 0)),
        resetTime: ts(now + (d.resetMs[0] ?? 0)),
        retryAfter: durationFromMs(allowed ? 0 : d.retryAfterMs),
      });
    },

    async getRateLimitOverride(req, ctx) {
      const tenant = await ownerTarget(scopeOf(ctx), req.tenantId);
      const o = await overrides.get(tenant.id);
      return create(GetRateLimitOverrideResponseSchema, { ...overrideView(tenant, o), plan: tenant.plan });
    },

    async setRateLimitOverride(req, ctx) {
      const scope = scopeOf(ctx);
      const tenant = await ownerTarget(scope, req.tenantId);
      const now = clock.now();
      const expiresAt = req.expireTime === undefined ? null : timestampMs(req.expireTime);
      if (expiresAt !== null && expiresAt <= now) throw invalidField("expire_time", "must be in the future");
      const bad: Array<{ field: string; description: string }> = [];
      const perKey = req.perKey ? overrideBucketFromProto(req.perKey) : null;
      const perTenant = req.perTenant ? overrideBucketFromProto(req.perTenant) : null;
      if (perKey && !(perKey.refillPerSecond > 0)) bad.push({ field: "per_key", description: "needs a refill" });
      if (perTenant && !(perTenant.refillPerSecond > 0))
        bad.push({ field: "per_tenant", description: "needs a refill" });
      if (bad.length > 0) throw invalidFields(bad);
      let record: RateLimitOverrideRecord | null = null;
      if (perKey === null && perTenant === null) {
        await overrides.delete(tenant.id);
      } else {
        record = {
          tenantId: tenant.id,
          perKey,
          perTenant,
          expiresAt,
          updatedAt: now,
          updatedKeyId: scope.principal.keyId,
        };
        await overrides.put(record);
      }
      deps.overrideCache?.invalidate(tenant.id);
      await audit.record(scope, tenant.id, `${SVC}/SetRateLimitOverride`, `tenants/${tenant.id}/limits/rate`, {
        action: record ? "set" : "removed",
        ...(expiresAt !== null ? { expire_time: new Date(expiresAt).toISOString() } : {}),
      });
      return create(SetRateLimitOverrideResponseSchema, overrideView(tenant, record));
    },
  };
}
