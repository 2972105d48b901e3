import type {
  CounterSpec,
  CounterState,
  FinishOutcome,
  IdempotencyKey,
  QuotaOutcome,
  QuotaStore,
  ReservationInit,
  ReservationRecord,
} from "../limit-ports.js";

// The in-process usage counters, used when REDIS_URL is unset: the semantics of the Redis
// scripts (src/store/redis/quota-store.ts) step for step, for a single process. Each method runs
// to completion without awaiting, which makes every decision atomic here as EVAL does in Redis.
// Time comes from the caller (`now`), as in Redis, so an injected clock drives period keys,
// reservation expiry and the forgetting of old entries alike.
//
// Memory is bounded by expiry: counters are forgotten after their period's end plus the margin
// the caller set, finished reservations and request ids after 24 hours; a sweep runs at most once
// a second of caller time.

interface Counter {
  used: number;
  reserved: number;
  expireAt: number;
}

interface Reservation extends ReservationRecord {
  /** When the record may be forgotten. */
  forgetAt: number;
}

interface Remembered {
  hash: string;
  outcome: QuotaOutcome & { kind: "done" };
  forgetAt: number;
}

const RESERVATION_RETENTION_MS = 24 * 60 * 60 * 1000;

export interface MemoryQuotaStore extends QuotaStore {
  /** Entries held (counters, reservations, request ids); for tests. */
  readonly size: number;
}

export function createMemoryQuotaStore(): MemoryQuotaStore {
  // Keyed by `<tenant>\0<id>`.
  const counters = new Map<string, Counter>();
  const reservations = new Map<string, Reservation>();
  const requests = new Map<string, Remembered>();
  // Held reservations per tenant, so that a call purges only its own tenant's.
  const held = new Map<string, Set<Reservation>>();
  let lastSweep = Number.NEGATIVE_INFINITY;

  const k = (tenantId: string, id: string) => `${tenantId}\u0000${id}`;

  const counter = (tenantId: string, id: string, now: number): Counter | undefined => {
    const c = counters.get(k(tenantId, id));
    if (c !== undefined && c.expireAt <= now) {
      counters.delete(k(tenantId, id));
      return undefined;
    }
    return c;
  };

  /** Releases the tenant's held reservations that expired by `now` (the Redis prelude). */
  const purge = (tenantId: string, now: number) => {
    const set = held.get(tenantId);
    if (set === undefined) return;
    for (const r of set) {
      if (r.state !== "held") {
        set.delete(r);
        continue;
      }
      if (r.expiresAtMs > now) continue;
      set.delete(r);
      for (const cid of r.counterIds) {
        const c = counter(tenantId, cid, now);
        if (c) c.reserved -= r.amount;
      }
      r.state = "expired";
      r.finishedAtMs = r.expiresAtMs;
    }
    if (set.size === 0) held.delete(tenantId);
  };

  const sweep = (now: number) => {
    if (now - lastSweep < 1000) return;
    lastSweep = now;
    for (const [key, c] of counters) if (c.expireAt <= now) counters.delete(key);
    for (const [key, r] of reservations) {
      // Held reservations stay until purged by their tenant's next call, as in Redis.
      if (r.state !== "held" && r.forgetAt <= now) reservations.delete(key);
    }
    for (const [key, q] of requests) if (q.forgetAt <= now) requests.delete(key);
  };

  const stateOf = (c: Counter | undefined): CounterState => ({ used: c?.used ?? 0, reserved: c?.reserved ?? 0 });

  function run(
    mode: "t" | "c" | "r",
    tenantId: string,
    specs: CounterSpec[],
    amount: number,
    now: number,
    idem: IdempotencyKey | undefined,
    init?: ReservationInit,
  ): QuotaOutcome {
    sweep(now);
    purge(tenantId, now);
    if (idem) {
      const prev = requests.get(k(tenantId, idem.requestId));
      if (prev !== undefined && prev.forgetAt > now) {
        if (prev.hash !== idem.hash) return { kind: "conflict" };
        return { ...prev.outcome, duplicate: true, states: prev.outcome.states.map((s) => ({ ...s })) };
      }
    }
    const current = specs.map((s) => counter(tenantId, s.id, now));
    let allowed = true;
    if (mode !== "t") {
      specs.forEach((s, i) => {
        const c = stateOf(current[i]);
        if (s.block && s.limit >= 0 && c.used + c.reserved + amount > s.limit) allowed = false;
      });
    }
    let reservationId = "";
    let expiresAtMs = 0;
    if (allowed) {
      specs.forEach((s, i) => {
        let c = current[i];
        if (c === undefined) {
          c = { used: 0, reserved: 0, expireAt: s.expireAtMs };
          counters.set(k(tenantId, s.id), c);
          current[i] = c;
        }
        if (mode === "r") c.reserved += amount;
        else c.used += amount;
        c.expireAt = Math.max(now + 1, s.expireAtMs);
      });
      if (mode === "r" && init) {
        reservationId = init.id;
        expiresAtMs = now + init.ttlMs;
        const r: Reservation = {
          id: init.id,
          userId: init.userId,
          resource: init.resource,
          metric: init.metric,
          amount,
          state: "held",
          createdAtMs: now,
          expiresAtMs,
          committedAmount: 0,
          finishedAtMs: 0,
          counterIds: specs.map((s) => s.id),
          forgetAt: expiresAtMs + RESERVATION_RETENTION_MS,
        };
        reservations.set(k(tenantId, init.id), r);
        let set = held.get(tenantId);
        if (set === undefined) {
          set = new Set();
          held.set(tenantId, set);
        }
        set.add(r);
      }
    }
    const outcome = {
      kind: "done" as const,
      allowed,
      duplicate: false,
      reservationId,
      expiresAtMs,
      states: current.map(stateOf),
    };
    if (idem) {
      requests.set(k(tenantId, idem.requestId), {
        hash: idem.hash,
        outcome: { ...outcome, states: outcome.states.map((s) => ({ ...s })) },
        forgetAt: now + idem.ttlMs,
      });
    }
    return outcome;
  }

  const copy = (r: Reservation): ReservationRecord => {
    const { forgetAt: _, ...rest } = r;
    return { ...rest, counterIds: [...rest.counterIds] };
  };

  function finish(op: "c" | "x", tenantId: string, id: string, actual: number, now: number): FinishOutcome {
    sweep(now);
    purge(tenantId, now);
    const r = reservations.get(k(tenantId, id));
    if (r === undefined) return { kind: "not_found" };
    if (r.state === "held") {
      for (const cid of r.counterIds) {
        const c = counter(tenantId, cid, now);
        if (c === undefined) continue;
        c.reserved -= r.amount;
        if (op === "c") c.used += actual;
      }
      r.state = op === "c" ? "committed" : "released";
      r.committedAmount = op === "c" ? actual : 0;
      r.finishedAtMs = now;
      r.forgetAt = Math.max(r.forgetAt, now + RESERVATION_RETENTION_MS);
      held.get(tenantId)?.delete(r);
      return { kind: "ok", reservation: copy(r) };
    }
    const same = op === "c" ? r.state === "committed" && r.committedAmount === actual : r.state === "released";
    return same ? { kind: "ok", reservation: copy(r) } : { kind: "state_conflict", reservation: copy(r) };
  }

  return {
    get size() {
      return counters.size + reservations.size + requests.size;
    },
    async check(tenantId, specs, now) {
      sweep(now);
      purge(tenantId, now);
      return specs.map((s) => stateOf(counter(tenantId, s.id, now)));
    },
    async track(tenantId, specs, amount, now, idem) {
      return run("t", tenantId, specs, amount, now, idem);
    },
    async consume(tenantId, specs, amount, now, idem) {
      return run("c", tenantId, specs, amount, now, idem);
    },
    async reserve(tenantId, specs, amount, init, now, idem) {
      return run("r", tenantId, specs, amount, now, idem, init);
    },
    async commit(tenantId, id, actual, now) {
      return finish("c", tenantId, id, actual, now);
    },
    async release(tenantId, id, now) {
      return finish("x", tenantId, id, 0, now);
    },
    async getReservation(tenantId, id, now) {
      sweep(now);
      purge(tenantId, now);
      const r = reservations.get(k(tenantId, id));
      return r === undefined ? null : copy(r);
    },
    async close() {
      counters.clear();
      reservations.clear();
      requests.clear();
      held.clear();
    },
  };
}
