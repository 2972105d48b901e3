import type { Knex } from "knex";
import type {
  ApplyResult,
  ListAlertsQuery,
  ListTenantUsageQuery,
  TenantUsageRow,
  UsageAlertRecord,
  UsageCell,
  UsageDayTotal,
  UsageDetailRow,
  UsageEventClaim,
  UsageStore,
  UsageTotal,
} from "../usage-ports.js";
import { firstOf, rowsOf } from "./sql.js";

// UsageService's durable rows, in the control schema (migration 3 of control.ts).
//
// A batch is applied in one transaction with a constant number of statements whatever its size:
// the batch id, a key-share lock on the batch's tenants, the event claims, the daily rows and the
// month totals, each a single statement over a JSON array of rows (json_to_recordset binds one
// text parameter, the same on pg and PGlite). Cells are merged in memory first, so no upsert
// meets the same row twice.
//
// Concurrency:
// - The batch id's primary key decides between concurrent applications of one batch: the second
//   waits on the first's uncommitted row and then inserts nothing (applied: false).
// - The batch's tenants are locked FOR KEY SHARE before anything is written. A tenant deleted
//   before that is simply absent (its cells are dropped); a tenant delete that comes later waits
//   for the batch to commit and then cascades over its rows. Either way no foreign key fails.
// - Every statement visits its rows in primary-key order, and the statements come in the same
//   order in every batch, so concurrent batches touching the same rows queue up instead of
//   deadlocking. Compaction locks the daily rows it moves in the same order.
//
// Days cross the boundary as 'YYYY-MM-DD' text both ways (selected as day::text, bound as text),
// so no driver ever turns one into a JavaScript Date in some time zone. int8 and numeric come back
// as strings and are converted with Number (quantities stay below 2^53).

const DAY = /^\d{4}-\d{2}-\d{2}$/;
const PERIOD = /^\d{4}-\d{2}$/;
/** Rows deleted per statement when forgetting old batch and event ids. */
const FORGET_CHUNK = 10_000;
/** Column order of the daily primary key, used to order every write to usage_daily. */
const DAILY_ORDER = "tenant_id, day, metric, key_id, method";

type Num = string | number;

interface TotalRow {
  tenant_id?: string;
  metric: string;
  quantity: Num;
  events: Num;
  last_time: Date | null;
}

interface DetailRow {
  date: string;
  metric: string;
  key_id: string;
  method: string;
  quantity: Num;
  events: Num;
  last_time: Date;
}

interface AlertRow {
  id: string;
  tenant_id: string;
  metric: string;
  day: string;
  observed: Num;
  baseline: Num;
  score: Num;
  created_at: Date;
}

function checkDay(day: string, what: string): void {
  if (!DAY.test(day)) throw new RangeError(`${what} must be a day YYYY-MM-DD, got ${JSON.stringify(day)}`);
}

function checkPeriod(period: string): void {
  if (!PERIOD.test(period)) throw new RangeError(`period must be a month YYYY-MM, got ${JSON.stringify(period)}`);
}

function checkCell(c: UsageCell): void {
  checkDay(c.day, "a usage cell's day");
  if (!Number.isSafeInteger(c.quantity) || c.quantity < 0) {
    throw new RangeError(`a usage cell's quantity must be a non-negative integer, got ${c.quantity}`);
  }
  if (!Number.isSafeInteger(c.events) || c.events < 0) {
    throw new RangeError(`a usage cell's events must be a non-negative integer, got ${c.events}`);
  }
  if (!Number.isFinite(c.lastTimeMs)) throw new RangeError(`a usage cell's lastTimeMs must be finite`);
}

/** `YYYY-MM` of the month after `period`. */
function nextPeriod(period: string): string {
  const y = Number(period.slice(0, 4));
  const m = Number(period.slice(5, 7));
  return m === 12 ? `${String(y + 1).padStart(4, "0")}-01` : `${period.slice(0, 4)}-${String(m + 1).padStart(2, "0")}`;
}

// Postgres text never contains NUL, so it separates the parts of a composite key unambiguously.
const SEP = "\u0000";

/** Cells with the same tenant, day, metric, key and method summed into one. */
function mergeCells(cells: readonly UsageCell[]): UsageCell[] {
  const merged = new Map<string, UsageCell>();
  for (const c of cells) {
    const k = [c.tenantId, c.day, c.metric, c.keyId, c.method].join(SEP);
    const m = merged.get(k);
    if (m === undefined) merged.set(k, { ...c });
    else {
      m.quantity += c.quantity;
      m.events += c.events;
      m.lastTimeMs = Math.max(m.lastTimeMs, c.lastTimeMs);
    }
  }
  return [...merged.values()];
}

interface PeriodTotal {
  t: string;
  p: string;
  m: string;
  q: number;
  e: number;
  l: number;
}

/** The merged cells summed per tenant, month and metric. */
function monthSums(cells: readonly UsageCell[]): PeriodTotal[] {
  const sums = new Map<string, PeriodTotal>();
  for (const c of cells) {
    const p = c.day.slice(0, 7);
    const k = [c.tenantId, p, c.metric].join(SEP);
    const s = sums.get(k);
    if (s === undefined) sums.set(k, { t: c.tenantId, p, m: c.metric, q: c.quantity, e: c.events, l: c.lastTimeMs });
    else {
      s.q += c.quantity;
      s.e += c.events;
      s.l = Math.max(s.l, c.lastTimeMs);
    }
  }
  return [...sums.values()];
}

const iso = (ms: number) => new Date(ms).toISOString();

function totalFromRow(r: TotalRow): UsageTotal {
  return {
    metric: r.metric,
    quantity: Number(r.quantity),
    events: Number(r.events),
    lastTimeMs: r.last_time === null ? null : r.last_time.getTime(),
  };
}

function alertFromRow(r: AlertRow): UsageAlertRecord {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    metric: r.metric,
    day: r.day,
    observed: Number(r.observed),
    baseline: Number(r.baseline),
    score: Number(r.score),
    timeMs: r.created_at.getTime(),
  };
}

async function applyInTransaction(
  trx: Knex.Transaction,
  batchId: string,
  cells: readonly UsageCell[],
  events: readonly UsageEventClaim[],
): Promise<ApplyResult> {
  const claimedBatch = await rowsOf(
    trx.raw(
      "insert into tenantd.usage_batches (batch_id) values (?) on conflict (batch_id) do nothing returning batch_id",
      [batchId],
    ),
  );
  if (claimedBatch.length === 0) return { applied: false, duplicateEvents: 0, droppedCells: 0 };

  const tenantIds = new Set<string>();
  for (const c of cells) tenantIds.add(c.tenantId);
  for (const e of events) {
    tenantIds.add(e.tenantId);
    tenantIds.add(e.cell.tenantId);
  }
  if (tenantIds.size === 0) return { applied: true, duplicateEvents: 0, droppedCells: 0 };

  const liveRows = await rowsOf<{ id: string }>(
    trx.raw(
      `select id from tenantd.tenants where id in (select json_array_elements_text(?::json))
       order by id for key share`,
      [JSON.stringify([...tenantIds].sort())],
    ),
  );
  const live = new Set(liveRows.map((r) => r.id));

  let droppedCells = 0;
  let duplicateEvents = 0;
  const counted: UsageCell[] = [];
  for (const c of cells) {
    if (live.has(c.tenantId)) counted.push(c);
    else droppedCells++;
  }

  // Event claims: a repeated id inside the batch is a duplicate before the database is asked; the
  // rest are claimed in one statement, and only the claims it actually inserted count.
  const claims: UsageEventClaim[] = [];
  const seen = new Set<string>();
  for (const e of events) {
    if (!live.has(e.tenantId) || !live.has(e.cell.tenantId)) {
      droppedCells++;
      continue;
    }
    const k = e.tenantId + SEP + e.eventId;
    if (seen.has(k)) duplicateEvents++;
    else {
      seen.add(k);
      claims.push(e);
    }
  }
  if (claims.length > 0) {
    const inserted = await rowsOf<{ tenant_id: string; event_id: string }>(
      trx.raw(
        `insert into tenantd.usage_events (tenant_id, event_id, body_hash)
         select x.t, x.i, x.h from json_to_recordset(?::json) as x(t text, i text, h text)
         order by x.t, x.i
         on conflict (tenant_id, event_id) do nothing
         returning tenant_id, event_id`,
        [JSON.stringify(claims.map((e) => ({ t: e.tenantId, i: e.eventId, h: e.bodyHash })))],
      ),
    );
    const won = new Set(inserted.map((r) => r.tenant_id + SEP + r.event_id));
    for (const e of claims) {
      if (won.has(e.tenantId + SEP + e.eventId)) counted.push(e.cell);
      else duplicateEvents++;
    }
  }

  const merged = mergeCells(counted);
  if (merged.length > 0) {
    await trx.raw(
      `insert into tenantd.usage_daily as d (tenant_id, day, metric, key_id, method, quantity, events, last_time)
       select x.t, x.d, x.m, x.k, x.f, x.q, x.e, x.l
       from json_to_recordset(?::json) as x(t text, d date, m text, k text, f text, q bigint, e bigint, l timestamptz)
       order by x.t, x.d, x.m, x.k, x.f
       on conflict (tenant_id, day, metric, key_id, method) do update set
         quantity = d.quantity + excluded.quantity,
         events = d.events + excluded.events,
         last_time = greatest(d.last_time, excluded.last_time)`,
      [
        JSON.stringify(
          merged.map((c) => ({
            t: c.tenantId,
            d: c.day,
            m: c.metric,
            k: c.keyId,
            f: c.method,
            q: c.quantity,
            e: c.events,
            l: iso(c.lastTimeMs),
          })),
        ),
      ],
    );
    await trx.raw(
      `insert into tenantd.usage_totals as s (tenant_id, period, metric, quantity, events, last_time)
       select x.t, x.p, x.m, x.q, x.e, x.l
       from json_to_recordset(?::json) as x(t text, p text, m text, q bigint, e bigint, l timestamptz)
       order by x.t, x.p, x.m
       on conflict (tenant_id, period, metric) do update set
         quantity = s.quantity + excluded.quantity,
         events = s.events + excluded.events,
         last_time = greatest(s.last_time, excluded.last_time)`,
      [JSON.stringify(monthSums(merged).map((s) => ({ ...s, l: iso(s.l) })))],
    );
  }
  return { applied: true, duplicateEvents, droppedCells };
}

/** Keyset condition and binds of one part of the tenant listing (see listTenantUsage). */
function rankAfter(q: ListTenantUsageQuery): { nonZero: string; nonZeroBinds: Knex.Value[]; zero: string | null } {
  const after = q.after;
  if (after === undefined) return { nonZero: "", nonZeroBinds: [], zero: "" };
  const cmp = q.descending ? "<" : ">";
  const sv = after.sortValue;
  let nonZero: string;
  let nonZeroBinds: Knex.Value[];
  if (Number.isSafeInteger(sv)) {
    nonZero = `and (t.quantity, t.tenant_id) ${cmp} (?::bigint, ?)`;
    nonZeroBinds = [sv, after.tenantId];
  } else {
    // A fractional cursor lies between two integers: every quantity is either before or after it.
    nonZero = `and t.quantity ${cmp} ?::bigint`;
    nonZeroBinds = [q.descending ? Math.ceil(sv) : Math.floor(sv)];
  }
  // The tenants at zero all come after the cursor, or all before it, or (cursor at zero) by id.
  let zero: string | null;
  if (sv === 0) zero = `and n.id ${cmp} ?`;
  else zero = (q.descending ? sv > 0 : sv < 0) ? "" : null;
  return { nonZero, nonZeroBinds, zero };
}

export function createUsageStore(knex: Knex): UsageStore {
  return {
    async applyBatch(batchId, cells, events = []) {
      for (const c of cells) checkCell(c);
      for (const e of events) checkCell(e.cell);
      return knex.transaction((trx) => applyInTransaction(trx, batchId, cells, events));
    },

    async monthTotals(tenantId, period) {
      checkPeriod(period);
      const rows = await rowsOf<TotalRow>(
        knex.raw(
          `select metric, quantity, events, last_time from tenantd.usage_totals
           where tenant_id = ? and period = ? order by metric`,
          [tenantId, period],
        ),
      );
      return rows.map(totalFromRow);
    },

    async dailyTotals(tenantId, fromDay, toDay, metric) {
      checkDay(fromDay, "fromDay");
      checkDay(toDay, "toDay");
      const rows = await rowsOf<{ day: string; metric: string; quantity: Num; events: Num }>(
        knex.raw(
          `select day::text as day, metric, sum(quantity) as quantity, sum(events) as events
           from tenantd.usage_daily
           where tenant_id = ? and day >= ?::date and day < ?::date ${metric === undefined ? "" : "and metric = ?"}
           group by day, metric order by day, metric`,
          metric === undefined ? [tenantId, fromDay, toDay] : [tenantId, fromDay, toDay, metric],
        ),
      );
      return rows.map(
        (r): UsageDayTotal => ({
          day: r.day,
          metric: r.metric,
          quantity: Number(r.quantity),
          events: Number(r.events),
        }),
      );
    },

    async listTenantUsage(q) {
      checkPeriod(q.period);
      if (q.limit <= 0) return [];
      // Two index-driven parts merged: the tenants whose total of the sort metric is not zero, in
      // order straight from usage_totals_rank_idx, and the tenants at zero (no total row, or a
      // zero one), in id order from the tenants' primary key. The first `limit` rows of the union
      // are among the first `limit` rows of each part, so each part stops early.
      const dir = q.descending ? "desc" : "asc";
      const { nonZero, nonZeroBinds, zero } = rankAfter(q);
      const partA = `select t.tenant_id, t.quantity as v from tenantd.usage_totals t
          join tenantd.tenants n on n.id = t.tenant_id
          where t.period = ? and t.metric = ? and t.quantity <> 0 ${nonZero}
          order by t.quantity ${dir}, t.tenant_id ${dir} limit ?`;
      const partB = `select n.id as tenant_id, 0::bigint as v from tenantd.tenants n
          where not exists (select 1 from tenantd.usage_totals t
            where t.tenant_id = n.id and t.period = ? and t.metric = ? and t.quantity <> 0) ${zero ?? ""}
          order by n.id ${dir} limit ?`;
      const binds: Knex.Value[] = [q.period, q.metric, ...nonZeroBinds, q.limit];
      let sql = partA;
      if (zero !== null) {
        sql = `(${partA}) union all (${partB})`;
        binds.push(q.period, q.metric, ...(zero === "" ? [] : [q.after!.tenantId]), q.limit);
      }
      const page = await rowsOf<{ tenant_id: string; v: Num }>(
        knex.raw(`select tenant_id, v from (${sql}) u order by v ${dir}, tenant_id ${dir} limit ?`, [
          ...binds,
          q.limit,
        ]),
      );
      if (page.length === 0) return [];
      const totals = await rowsOf<TotalRow & { tenant_id: string }>(
        knex.raw(
          `select tenant_id, metric, quantity, events, last_time from tenantd.usage_totals
           where period = ? and tenant_id in (select json_array_elements_text(?::json))
           order by tenant_id, metric`,
          [q.period, JSON.stringify(page.map((r) => r.tenant_id))],
        ),
      );
      const byTenant = new Map<string, UsageTotal[]>();
      for (const r of totals) {
        const list = byTenant.get(r.tenant_id) ?? [];
        list.push(totalFromRow(r));
        byTenant.set(r.tenant_id, list);
      }
      return page.map(
        (r): TenantUsageRow => ({
          tenantId: r.tenant_id,
          sortValue: Number(r.v),
          totals: byTenant.get(r.tenant_id) ?? [],
        }),
      );
    },

    async detail(tenantId, period) {
      checkPeriod(period);
      const rows = await rowsOf<DetailRow>(
        knex.raw(
          `select date, metric, key_id, method, quantity, events, last_time from (
             select day::text as date, metric, key_id, method, quantity, events, last_time
             from tenantd.usage_daily where tenant_id = ? and day >= ?::date and day < ?::date
             union all
             select period, metric, key_id, method, quantity, events, last_time
             from tenantd.usage_monthly where tenant_id = ? and period = ?
           ) r order by date, metric, key_id, method`,
          [tenantId, `${period}-01`, `${nextPeriod(period)}-01`, tenantId, period],
        ),
      );
      return rows.map(
        (r): UsageDetailRow => ({
          date: r.date,
          metric: r.metric,
          keyId: r.key_id,
          method: r.method,
          quantity: Number(r.quantity),
          events: Number(r.events),
          lastTimeMs: r.last_time.getTime(),
        }),
      );
    },

    async compact(beforeDay, forgetBeforeMs) {
      checkDay(beforeDay, "beforeDay");
      // Whole months only: every day of the month is before beforeDay, i.e. the month ends (its
      // next month starts) on or before beforeDay.
      const firstKept = `${beforeDay.slice(0, 7)}-01`;
      const pending = await rowsOf<{ tenant_id: string; period: string }>(
        knex.raw(
          `select distinct tenant_id, to_char(day, 'YYYY-MM') as period from tenantd.usage_daily
           where day < ?::date order by tenant_id, period`,
          [firstKept],
        ),
      );
      let months = 0;
      let rowsRemoved = 0;
      for (const { tenant_id: tenantId, period } of pending) {
        const from = `${period}-01`;
        const to = `${nextPeriod(period)}-01`;
        const removed = await knex.transaction(async (trx) => {
          // Lock the month's daily rows in primary-key order, as applyBatch's upserts do.
          await trx.raw(
            `select 1 from tenantd.usage_daily where tenant_id = ? and day >= ?::date and day < ?::date
             order by ${DAILY_ORDER} for update`,
            [tenantId, from, to],
          );
          const row = await firstOf<{ n: number }>(
            trx.raw(
              `with moved as (
                 delete from tenantd.usage_daily where tenant_id = ? and day >= ?::date and day < ?::date
                 returning metric, key_id, method, quantity, events, last_time
               ), folded as (
                 insert into tenantd.usage_monthly as m
                   (tenant_id, period, metric, key_id, method, quantity, events, last_time)
                 select ?, ?, metric, key_id, method, sum(quantity), sum(events), max(last_time)
                 from moved group by metric, key_id, method order by metric, key_id, method
                 on conflict (tenant_id, period, metric, key_id, method) do update set
                   quantity = m.quantity + excluded.quantity,
                   events = m.events + excluded.events,
                   last_time = greatest(m.last_time, excluded.last_time)
               )
               select count(*)::int as n from moved`,
              [tenantId, from, to, tenantId, period],
            ),
          );
          return row?.n ?? 0;
        });
        if (removed > 0) months++;
        rowsRemoved += removed;
      }
      // Batch and event ids old enough that no retry can still bring them back; in chunks, so
      // that each statement stays short whatever the backlog.
      const cutoff = new Date(forgetBeforeMs);
      for (;;) {
        const gone = await rowsOf(
          knex.raw(
            `delete from tenantd.usage_batches where batch_id in (
               select batch_id from tenantd.usage_batches where applied_at < ? limit ${FORGET_CHUNK})
             returning 1`,
            [cutoff],
          ),
        );
        if (gone.length < FORGET_CHUNK) break;
      }
      for (;;) {
        const gone = await rowsOf(
          knex.raw(
            `delete from tenantd.usage_events where (tenant_id, event_id) in (
               select tenant_id, event_id from tenantd.usage_events where created_at < ? limit ${FORGET_CHUNK})
             returning 1`,
            [cutoff],
          ),
        );
        if (gone.length < FORGET_CHUNK) break;
      }
      return { months, rowsRemoved };
    },

    async recordAlert(a) {
      checkDay(a.day, "an alert's day");
      // An alert for a tenant deleted meanwhile is not recorded (false), rather than failing.
      const rows = await rowsOf(
        knex.raw(
          `insert into tenantd.usage_alerts (id, tenant_id, metric, day, observed, baseline, score, created_at)
           select ?, ?, ?, ?::date, ?, ?, ?, ? where exists (select 1 from tenantd.tenants where id = ?)
           on conflict (tenant_id, metric, day) do nothing returning id`,
          [
            a.id,
            a.tenantId,
            a.metric,
            a.day,
            Math.round(a.observed),
            a.baseline,
            a.score,
            new Date(a.timeMs),
            a.tenantId,
          ],
        ),
      );
      return rows.length > 0;
    },

    async listAlerts(q: ListAlertsQuery) {
      if (q.limit <= 0) return [];
      const where: string[] = [];
      const binds: Knex.Value[] = [];
      if (q.tenantId !== undefined) {
        where.push("tenant_id = ?");
        binds.push(q.tenantId);
      }
      if (q.metric !== undefined) {
        where.push("metric = ?");
        binds.push(q.metric);
      }
      if (q.startMs !== undefined) {
        where.push("created_at >= ?");
        binds.push(new Date(q.startMs));
      }
      if (q.endMs !== undefined) {
        where.push("created_at < ?");
        binds.push(new Date(q.endMs));
      }
      if (q.after !== undefined) {
        where.push("(created_at, id) < (?, ?)");
        binds.push(new Date(q.after.timeMs), q.after.id);
      }
      const rows = await rowsOf<AlertRow>(
        knex.raw(
          `select id, tenant_id, metric, day::text as day, observed, baseline, score, created_at
           from tenantd.usage_alerts ${where.length > 0 ? `where ${where.join(" and ")}` : ""}
           order by created_at desc, id desc limit ?`,
          [...binds, q.limit],
        ),
      );
      return rows.map(alertFromRow);
    },

    async deleteTenant(tenantId) {
      await knex.transaction(async (trx) => {
        for (const table of ["usage_daily", "usage_monthly", "usage_totals", "usage_events", "usage_alerts"]) {
          await trx.raw(`delete from tenantd.${table} where tenant_id = ?`, [tenantId]);
        }
      });
    },
  };
}
