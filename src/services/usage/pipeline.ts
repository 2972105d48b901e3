import type { Clock } from "../../domain/clock.js";
import { newId } from "../../domain/ids.js";
import type { UsageCell, UsageEventClaim, UsageStore } from "../../store/usage-ports.js";
import { type AnomalyThresholds, assessDay, DEFAULT_ANOMALY_THRESHOLDS } from "./anomaly.js";
import { addDays, daysBetween, slotDay } from "./days.js";
import { type MeterBatch, type MeterCell, UsageMeter } from "./meter.js";

// The usage pipeline: the meter's batches go to a sink once per cycle (every `flushMs`), the sink
// makes them durable, and the touched (tenant, day, metric) triples are checked for anomalies.
//
// Two sinks:
//   - direct (no Redis): each batch is applied to Postgres in one transaction under its own id;
//   - Redis: each batch is added to the tenants' pending hashes in Redis (one Lua call per tenant,
//     applied once per batch id), then the replica holding the roll-up lock moves every tenant's
//     pending hash into Postgres under a roll-up id (see src/store/redis/usage-buffer.ts).
// A batch that fails is kept, with its id, and retried first on the next cycle; nothing counted in
// process is dropped while the sink is down, up to the meter's bound on pending cells.

/** Where a usage cell landed, for the anomaly checks. */
export interface Touched {
  tenantId: string;
  day: string;
  metric: string;
}

export interface UsageSink {
  /** Takes a batch; applying the same batch id again must count nothing. */
  write(batch: MeterBatch): Promise<Touched[]>;
  /** Moves buffered usage into Postgres (the Redis roll-up); nothing for the direct sink. */
  settle(): Promise<Touched[]>;
  /** Whether this replica should run the periodic jobs (compaction) now. */
  leads(): Promise<boolean>;
}

/** The tenant's time zone, or null for a tenant that does not exist (any more). */
export type ZoneOf = (tenantId: string) => Promise<string | null>;

/** Converts a batch's slots to the tenants' local days; cells of unknown tenants are dropped. */
export async function toStoreCells(
  cells: readonly MeterCell[],
  events: MeterBatch["events"],
  zoneOf: ZoneOf,
): Promise<{ cells: UsageCell[]; events: UsageEventClaim[] }> {
  const zones = new Map<string, string | null>();
  for (const c of cells) if (!zones.has(c.tenantId)) zones.set(c.tenantId, null);
  for (const e of events) if (!zones.has(e.tenantId)) zones.set(e.tenantId, null);
  await Promise.all([...zones.keys()].map(async (t) => zones.set(t, await zoneOf(t))));
  const out: UsageCell[] = [];
  const cellOf = (c: MeterCell): UsageCell | null => {
    const tz = zones.get(c.tenantId);
    if (!tz) return null;
    return {
      tenantId: c.tenantId,
      day: slotDay(tz, c.slot),
      metric: c.metric,
      keyId: c.keyId,
      method: c.method,
      quantity: c.quantity,
      events: c.events,
      lastTimeMs: c.lastTimeMs,
    };
  };
  for (const c of cells) {
    const u = cellOf(c);
    if (u) out.push(u);
  }
  const claims: UsageEventClaim[] = [];
  for (const e of events) {
    const u = cellOf(e.cell);
    if (u) claims.push({ tenantId: e.tenantId, eventId: e.eventId, bodyHash: e.bodyHash, cell: u });
  }
  return { cells: out, events: claims };
}

export function touchedOf(cells: readonly UsageCell[]): Touched[] {
  const seen = new Map<string, Touched>();
  for (const c of cells) {
    const k = `${c.tenantId}|${c.day}|${c.metric}`;
    if (!seen.has(k)) seen.set(k, { tenantId: c.tenantId, day: c.day, metric: c.metric });
  }
  return [...seen.values()];
}

export function createDirectUsageSink(store: UsageStore, zoneOf: ZoneOf): UsageSink {
  return {
    async write(batch) {
      const { cells, events } = await toStoreCells(batch.cells, batch.events, zoneOf);
      await store.applyBatch(batch.id, cells, events);
      return touchedOf([...cells, ...events.map((e) => e.cell)]);
    },
    settle: async () => [],
    leads: async () => true,
  };
}

/**
 * RecordUsage's `period_total`: the month's durable total (read from Postgres once per cycle and
 * cached) plus what this replica counted that is not durable yet. Exact for one replica; with
 * several, a report counted by another replica shows here once it is durable (one cycle).
 */
class PeriodTotals {
  private readonly entries = new Map<
    string,
    { durable: number; stale: boolean; loading: Promise<void> | null; prev: number; cur: number }
  >();
  private generation = 0;

  beginCycle(): void {
    for (const e of this.entries.values()) {
      e.prev += e.cur;
      e.cur = 0;
    }
  }

  cycleSucceeded(): void {
    this.generation++;
    for (const [k, e] of this.entries) {
      e.prev = 0;
      e.stale = true;
      // Idle entries go: they reload on their next use.
      if (e.cur === 0 && e.loading === null) this.entries.delete(k);
    }
  }

  async add(key: string, quantity: number, load: () => Promise<number>): Promise<number> {
    let e = this.entries.get(key);
    if (e === undefined) {
      e = { durable: 0, stale: true, loading: null, prev: 0, cur: 0 };
      this.entries.set(key, e);
    }
    e.cur += quantity;
    const entry = e;
    if (entry.stale) {
      if (entry.loading === null) {
        const gen = this.generation;
        entry.loading = load()
          .then((v) => {
            entry.durable = v;
            // A cycle that ended during the read may or may not be in it: read again next time.
            entry.stale = gen !== this.generation;
          })
          .finally(() => {
            entry.loading = null;
          });
      }
      await entry.loading;
    }
    return entry.durable + entry.prev + entry.cur;
  }
}

export interface UsagePipelineDeps {
  sink: UsageSink;
  store: UsageStore;
  clock: Clock;
  /** Cycle interval, ms; 0 disables the timer (tests drive cycles with flush()). */
  flushMs: number;
  /** Daily rows older than this many days are compacted into monthly rows. */
  retentionDays: number;
  /** How often compaction runs, ms. Default 1 hour. */
  compactEveryMs?: number;
  anomaly?: AnomalyThresholds;
  /** A (tenant, metric, day) is assessed at most this often, ms. Default 60 s. */
  anomalyEveryMs?: number;
  maxPendingCells?: number;
  onError: (what: string, err: unknown) => void;
}

/** Event ids and batch ids are remembered this long (the contract says 35 days). */
export const EVENT_ID_TTL_MS = 35 * 86_400_000;

export class UsagePipeline {
  readonly meter: UsageMeter;
  readonly totals = new PeriodTotals();
  private readonly retained: MeterBatch[] = [];
  private running: Promise<boolean> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastCompactMs = 0;
  private readonly assessed = new Map<string, number>();
  private readonly alerted = new Set<string>();
  /** Start of the last cycle that made everything counted before it durable (epoch ms). */
  completeUntilMs: number;
  /** Cycles that failed, for logs and tests. */
  failures = 0;

  constructor(private readonly deps: UsagePipelineDeps) {
    this.meter = new UsageMeter(deps.maxPendingCells);
    this.completeUntilMs = deps.clock.now();
  }

  start(): void {
    if (this.deps.flushMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      if (this.running === null) void this.flush();
    }, this.deps.flushMs);
    this.timer.unref();
  }

  /** Pending batches kept after failed writes. */
  get retainedBatches(): number {
    return this.retained.length;
  }

  /**
   * Runs one cycle after the one running, if any: write the pending batch and any kept ones,
   * settle, assess anomalies, compact when due. True when everything counted before the call is
   * durable.
   */
  async flush(): Promise<boolean> {
    while (this.running !== null) await this.running;
    const run = this.cycle().finally(() => {
      this.running = null;
    });
    this.running = run;
    return run;
  }

  /** Stops the timer and runs a last cycle. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }

  private async cycle(): Promise<boolean> {
    const startedMs = this.deps.clock.now();
    this.totals.beginCycle();
    const batch = this.meter.take();
    if (batch) this.retained.push(batch);
    const touched: Touched[] = [];
    let ok = true;
    while (this.retained.length > 0) {
      try {
        touched.push(...(await this.deps.sink.write(this.retained[0] as MeterBatch)));
        this.retained.shift();
      } catch (err) {
        this.deps.onError("usage flush", err);
        // A batch the store refuses as malformed would block every later one: drop it (it is
        // logged above). Anything else is an outage: keep the batch and retry next cycle.
        if (err instanceof RangeError) {
          this.retained.shift();
          continue;
        }
        ok = false;
        break;
      }
    }
    if (ok) {
      try {
        touched.push(...(await this.deps.sink.settle()));
      } catch (err) {
        ok = false;
        this.deps.onError("usage roll-up", err);
      }
    }
    if (ok) {
      this.totals.cycleSucceeded();
      this.completeUntilMs = startedMs;
    } else {
      this.failures++;
    }
    await this.assess(touched).catch((err) => this.deps.onError("usage anomaly check", err));
    if (startedMs - this.lastCompactMs >= (this.deps.compactEveryMs ?? 3_600_000)) {
      this.lastCompactMs = startedMs;
      await this.compact(startedMs).catch((err) => this.deps.onError("usage compaction", err));
    }
    return ok;
  }

  /** Compacts daily rows older than the retention into monthly rows; forgets old ids. */
  async compact(nowMs = this.deps.clock.now()): Promise<{ months: number; rowsRemoved: number } | null> {
    if (!(await this.deps.sink.leads())) return null;
    const before = new Date(nowMs - this.deps.retentionDays * 86_400_000).toISOString().slice(0, 10);
    return this.deps.store.compact(before, nowMs - EVENT_ID_TTL_MS);
  }

  private async assess(touched: readonly Touched[]): Promise<void> {
    const now = this.deps.clock.now();
    const every = this.deps.anomalyEveryMs ?? 60_000;
    const thresholds = this.deps.anomaly ?? DEFAULT_ANOMALY_THRESHOLDS;
    for (const t of touched) {
      const k = `${t.tenantId}|${t.metric}|${t.day}`;
      if (this.alerted.has(k)) continue;
      const last = this.assessed.get(k);
      if (last !== undefined && now - last < every) continue;
      if (this.assessed.size > 100_000) this.assessed.clear();
      this.assessed.set(k, now);
      const from = addDays(t.day, -thresholds.windowDays);
      const rows = await this.deps.store.dailyTotals(t.tenantId, from, addDays(t.day, 1), t.metric);
      const byDay = new Map(rows.map((r) => [r.day, r.quantity]));
      const observed = byDay.get(t.day) ?? 0;
      // History starts at the tenant's first day with usage in the window; days without usage
      // after it count as zeros.
      const first = rows.find((r) => r.day < t.day)?.day;
      const history: number[] = [];
      if (first !== undefined) {
        const n = daysBetween(first, t.day);
        for (let i = 0; i < n; i++) history.push(byDay.get(addDays(first, i)) ?? 0);
      }
      const verdict = assessDay(history, observed, thresholds);
      if (!verdict.anomalous) continue;
      this.alerted.add(k);
      if (this.alerted.size > 100_000) this.alerted.clear();
      await this.deps.store.recordAlert({
        id: newId("alr", now),
        tenantId: t.tenantId,
        metric: t.metric,
        day: t.day,
        observed,
        baseline: verdict.baseline,
        score: verdict.score,
        timeMs: now,
      });
    }
  }
}
