import { create } from "@bufbuild/protobuf";
import { type Duration, durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import {
  type RateLimitBucket,
  RateLimitBucketSchema,
  Reservation_State,
  type ResourceLimit,
  ResourceLimit_GateAction,
  ResourceLimit_Period,
  ResourceLimit_Scope,
  ResourceLimitSchema,
} from "../../../gen/tenantd/v1/limit_pb.js";
import type {
  BucketDef,
  GateAction,
  LimitScope,
  OverrideBucket,
  ReservationState,
  ResourceLimitDef,
} from "../../store/limit-ports.js";
import type { BucketLimit } from "../rate-limit/policy.js";
import type { PeriodUnit } from "./periods.js";

// Pure converters between LimitService messages and domain values, exhaustive over enums.

export function periodFromProto(p: ResourceLimit_Period): PeriodUnit | undefined {
  switch (p) {
    case ResourceLimit_Period.MINUTE:
      return "minute";
    case ResourceLimit_Period.HOUR:
      return "hour";
    case ResourceLimit_Period.DAY:
      return "day";
    case ResourceLimit_Period.MONTH:
      return "month";
    case ResourceLimit_Period.PERIOD_UNSPECIFIED:
      return undefined;
  }
}

export function periodToProto(p: PeriodUnit): ResourceLimit_Period {
  switch (p) {
    case "minute":
      return ResourceLimit_Period.MINUTE;
    case "hour":
      return ResourceLimit_Period.HOUR;
    case "day":
      return ResourceLimit_Period.DAY;
    case "month":
      return ResourceLimit_Period.MONTH;
  }
}

/** Unset means BLOCK (the contract's default). */
export function gateFromProto(g: ResourceLimit_GateAction): GateAction {
  switch (g) {
    case ResourceLimit_GateAction.WARN:
      return "warn";
    case ResourceLimit_GateAction.BLOCK:
    case ResourceLimit_GateAction.GATE_ACTION_UNSPECIFIED:
      return "block";
  }
}

export function gateToProto(g: GateAction): ResourceLimit_GateAction {
  switch (g) {
    case "block":
      return ResourceLimit_GateAction.BLOCK;
    case "warn":
      return ResourceLimit_GateAction.WARN;
  }
}

/** Unset means TENANT (the contract's default). */
export function scopeFromProto(s: ResourceLimit_Scope): LimitScope {
  switch (s) {
    case ResourceLimit_Scope.END_USER:
      return "end_user";
    case ResourceLimit_Scope.TENANT:
    case ResourceLimit_Scope.SCOPE_UNSPECIFIED:
      return "tenant";
  }
}

export function scopeToProto(s: LimitScope): ResourceLimit_Scope {
  switch (s) {
    case "tenant":
      return ResourceLimit_Scope.TENANT;
    case "end_user":
      return ResourceLimit_Scope.END_USER;
  }
}

export function reservationStateToProto(s: ReservationState): Reservation_State {
  switch (s) {
    case "held":
      return Reservation_State.HELD;
    case "committed":
      return Reservation_State.COMMITTED;
    case "released":
      return Reservation_State.RELEASED;
    case "expired":
      return Reservation_State.EXPIRED;
  }
}

/** The limit that applies to a plan: its tier when present, else the default; -1 unlimited. */
export function effectiveLimit(l: ResourceLimitDef, plan: string): number {
  const tier = l.tiers[plan];
  return tier === undefined ? l.limit : tier;
}

export function limitToProto(l: ResourceLimitDef, plan: string): ResourceLimit {
  return create(ResourceLimitSchema, {
    resource: l.resource,
    metric: l.metric,
    period: periodToProto(l.period),
    limit: BigInt(l.limit),
    tiers: Object.fromEntries(Object.entries(l.tiers).map(([k, v]) => [k, BigInt(v)])),
    gateAction: gateToProto(l.gateAction),
    scope: scopeToProto(l.scope),
    effectiveLimit: BigInt(effectiveLimit(l, plan)),
  });
}

/** A validated input limit (protovalidate has checked bounds and formats); undefined period refused by the caller. */
export function limitFromProto(l: ResourceLimit): ResourceLimitDef | undefined {
  const period = periodFromProto(l.period);
  if (period === undefined) return undefined;
  return {
    resource: l.resource,
    metric: l.metric,
    period,
    limit: Number(l.limit),
    tiers: Object.fromEntries(Object.entries(l.tiers).map(([k, v]) => [k, Number(v)])),
    gateAction: gateFromProto(l.gateAction),
    scope: scopeFromProto(l.scope),
  };
}

function intervalMs(d: Duration | undefined): number {
  return d === undefined ? 0 : Math.round(durationMs(d));
}

/**
 * The continuous rate a bucket stands for. The limiter port refills continuously, so a stepped
 * bucket (`refill_amount` every `refill_interval`) is enforced at its average rate: the same
 * tokens per interval, spread out instead of arriving in one step.
 */
export function refillRate(b: { refillPerSecond: number; refillAmount: number; refillIntervalMs: number }): number {
  if (b.refillPerSecond > 0) return b.refillPerSecond;
  if (b.refillAmount > 0 && b.refillIntervalMs > 0) return b.refillAmount / (b.refillIntervalMs / 1000);
  return 0;
}

export function bucketFromProto(b: RateLimitBucket): BucketDef {
  const stepped = b.refillPerSecond === 0;
  return {
    name: b.name,
    capacity: Number(b.capacity),
    refillPerSecond: b.refillPerSecond,
    refillAmount: stepped ? Number(b.refillAmount) : 0,
    refillIntervalMs: stepped ? intervalMs(b.refillInterval) : 0,
  };
}

export function bucketToProto(b: BucketDef | (OverrideBucket & { name?: string })): RateLimitBucket {
  return create(RateLimitBucketSchema, {
    name: b.name ?? "",
    capacity: BigInt(b.capacity),
    refillPerSecond: b.refillAmount > 0 ? 0 : b.refillPerSecond,
    refillAmount: BigInt(b.refillAmount),
    ...(b.refillAmount > 0 ? { refillInterval: durationFromMs(b.refillIntervalMs) } : {}),
  });
}

/** An override bucket from a request (its name is ignored, as the contract says). */
export function overrideBucketFromProto(b: RateLimitBucket): OverrideBucket {
  const d = bucketFromProto(b);
  return {
    capacity: d.capacity,
    refillPerSecond: refillRate(d),
    refillAmount: d.refillAmount,
    refillIntervalMs: d.refillIntervalMs,
  };
}

/** A plan's bucket as a message (plans are continuous). */
export function planBucketToProto(b: BucketLimit): RateLimitBucket {
  return create(RateLimitBucketSchema, { capacity: BigInt(b.capacity), refillPerSecond: b.refillPerSec });
}
