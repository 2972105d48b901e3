// Ports of LimitService's storage: definitions in Postgres (resource limits and named token
// buckets in the tenant's schema; the owner's rate-limit overrides in the control schema), and
// usage counters in Redis or in process (QuotaStore). Services see only these interfaces.

import type { PeriodUnit } from "../services/limits/periods.js";

export type GateAction = "block" | "warn";
export type LimitScope = "tenant" | "end_user";

/** One resource limit of a tenant, as stored. */
export interface ResourceLimitDef {
  resource: string;
  metric: string;
  period: PeriodUnit;
  /** Limit per period when the plan has no tier; -1 for unlimited. */
  limit: number;
  /** Plan name → limit (-1 unlimited). */
  tiers: Record<string, number>;
  gateAction: GateAction;
  scope: LimitScope;
}

/** A named token bucket of a tenant, as stored (exactly one refill form is set). */
export interface BucketDef {
  name: string;
  capacity: number;
  /** Continuous refill in tokens per second; 0 when the stepped form is used. */
  refillPerSecond: number;
  /** Stepped refill: tokens per interval; 0 when the continuous form is used. */
  refillAmount: number;
  /** Stepped refill interval in ms; 0 when the continuous form is used. */
  refillIntervalMs: number;
}

/** A versioned list: the version is the source of the etag and of compare-and-set. */
export interface Versioned<T> {
  items: T[];
  /** 0 for a list that was never written. */
  version: number;
}

export interface LimitStore {
  getResourceLimits(tenantId: string): Promise<Versioned<ResourceLimitDef>>;
  /**
   * Replaces the whole list in one transaction. With `expectedVersion`, applies only when the
   * stored version equals it (compare-and-set), otherwise answers "version_mismatch".
   */
  replaceResourceLimits(
    tenantId: string,
    limits: ResourceLimitDef[],
    expectedVersion?: number,
  ): Promise<Versioned<ResourceLimitDef> | "version_mismatch">;
  getBuckets(tenantId: string): Promise<Versioned<BucketDef>>;
  replaceBuckets(
    tenantId: string,
    buckets: BucketDef[],
    expectedVersion?: number,
  ): Promise<Versioned<BucketDef> | "version_mismatch">;
}

/** A bucket of an override: capacity and continuous refill, plus the stepped form as given. */
export interface OverrideBucket {
  capacity: number;
  /** Continuous refill in tokens per second (for the stepped form: amount / interval). */
  refillPerSecond: number;
  refillAmount: number;
  refillIntervalMs: number;
}

/** The owner's replacement of a tenant's plan buckets. */
export interface RateLimitOverrideRecord {
  tenantId: string;
  perKey: OverrideBucket | null;
  perTenant: OverrideBucket | null;
  /** Epoch ms after which the plan applies again; null: until changed. */
  expiresAt: number | null;
  updatedAt: number;
  /** `key_…` of the owner key that set it. */
  updatedKeyId: string;
}

export interface OverrideStore {
  get(tenantId: string): Promise<RateLimitOverrideRecord | null>;
  /** Inserts or replaces the tenant's override. */
  put(record: RateLimitOverrideRecord): Promise<void>;
  /** Removes it; true when there was one. */
  delete(tenantId: string): Promise<boolean>;
}

// ----------------------------------------------------------------------------------------------
// Usage counters

/**
 * One counter a call touches: one limit, one scope (tenant, or one end user) and one period. The
 * caller computes the period (it knows the tenant's time zone); the store only counts.
 */
export interface CounterSpec {
  /** Identity inside the tenant, e.g. `llm:tokens:day:u:alice:1767225600000`. No `{` or `}`. */
  id: string;
  /** The effective limit; -1 for unlimited. */
  limit: number;
  /** Whether exceeding refuses (BLOCK) or only reports (WARN). */
  block: boolean;
  /** When the counter may be forgotten: the period's end plus a margin (epoch ms, caller clock). */
  expireAtMs: number;
}

/** A counter's state: `used` is tracked, `reserved` is held by open reservations. */
export interface CounterState {
  used: number;
  reserved: number;
}

/** Idempotency of a counting call: the same request id with the same body hash is decided once. */
export interface IdempotencyKey {
  requestId: string;
  /** Hash of the canonical request body. */
  hash: string;
  /** How long the id is remembered, ms. */
  ttlMs: number;
}

export type QuotaOutcome =
  | {
      kind: "done";
      /** False when a BLOCK counter refused (nothing counted or held). Always true for track. */
      allowed: boolean;
      /** Counter states after the call, in the order given. */
      states: CounterState[];
      /** True when the request id was seen before and the first result is returned. */
      duplicate: boolean;
      /** Reserve only: the reservation id (the first one on a duplicate); "" when refused. */
      reservationId: string;
      /** Reserve only: when the hold ends (epoch ms); 0 when refused. */
      expiresAtMs: number;
    }
  /** The request id was seen before with another body. */
  | { kind: "conflict" };

export type ReservationState = "held" | "committed" | "released" | "expired";

export interface ReservationRecord {
  id: string;
  userId: string;
  resource: string;
  metric: string;
  amount: number;
  state: ReservationState;
  createdAtMs: number;
  expiresAtMs: number;
  committedAmount: number;
  /** 0 while held. */
  finishedAtMs: number;
  /** The counters it holds (ids), in the order of the reserve call. */
  counterIds: string[];
}

/** What reserve records besides the hold, for the Reservation message. */
export interface ReservationInit {
  id: string;
  userId: string;
  resource: string;
  metric: string;
  ttlMs: number;
}

export type FinishOutcome =
  | { kind: "ok"; reservation: ReservationRecord }
  | { kind: "not_found" }
  /** Released, expired, or committed with another amount. */
  | { kind: "state_conflict"; reservation: ReservationRecord };

/**
 * Usage counters. Every method takes `now` from the caller (the service's clock), so that the
 * period arithmetic, reservation expiry and tests share one clock; implementations never read
 * their own. Every call first releases reservations of the tenant that expired by `now`.
 */
export interface QuotaStore {
  /** Reads the counters. */
  check(tenantId: string, counters: CounterSpec[], now: number): Promise<CounterState[]>;
  /** Adds `amount` to every counter unconditionally (usage that already happened). */
  track(
    tenantId: string,
    counters: CounterSpec[],
    amount: number,
    now: number,
    idem?: IdempotencyKey,
  ): Promise<QuotaOutcome>;
  /**
   * Atomic check-and-track: adds `amount` to every counter only if, for every BLOCK counter with
   * a limit, used + reserved + amount ≤ limit. Two callers can never both take the last unit.
   */
  consume(
    tenantId: string,
    counters: CounterSpec[],
    amount: number,
    now: number,
    idem?: IdempotencyKey,
  ): Promise<QuotaOutcome>;
  /** Like consume, but holds `amount` as reserved under a new reservation until it ends. */
  reserve(
    tenantId: string,
    counters: CounterSpec[],
    amount: number,
    init: ReservationInit,
    now: number,
    idem?: IdempotencyKey,
  ): Promise<QuotaOutcome>;
  /** Replaces the hold by `actual` used; repeating with the same amount answers the same. */
  commit(tenantId: string, reservationId: string, actual: number, now: number): Promise<FinishOutcome>;
  /** Removes the hold; releasing a released reservation answers the same. */
  release(tenantId: string, reservationId: string, now: number): Promise<FinishOutcome>;
  getReservation(tenantId: string, reservationId: string, now: number): Promise<ReservationRecord | null>;
  close(): Promise<void>;
}
