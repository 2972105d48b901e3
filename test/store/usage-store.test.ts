// UsageStore contract, run against the backend the environment selects (Postgres with
// DATABASE_URL, PGlite otherwise): batches applied exactly once, exact sums under concurrency,
// event claims, dropped cells of missing tenants, the per-tenant listing, compaction and alerts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId } from "../../src/domain/ids.js";
import type { Stores } from "../../src/store/ports.js";
import { createUsageStore } from "../../src/store/postgres/index.js";
import type {
  TenantUsageRow,
  UsageAlertRecord,
  UsageCell,
  UsageEventClaim,
  UsageStore,
} from "../../src/store/usage-ports.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeTenant, T0, uniqueSuffix } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

describe(`UsageStore (${backend})`, () => {
  let tdb: TestDatabase;
  let stores: Stores;
  let usage: UsageStore;

  beforeAll(async () => {
    tdb = await openTestDatabase();
    stores = tdb.stores;
    usage = createUsageStore(tdb.db.knex);
  });
  afterAll(async () => {
    await tdb?.close();
  });

  async function tenant(): Promise<string> {
    const t = makeTenant();
    expect((await stores.tenants.create(t)).kind).toBe("created");
    return t.id;
  }

  function cell(tenantId: string, day: string, over: Partial<UsageCell> = {}): UsageCell {
    return {
      tenantId,
      day,
      metric: "api_calls",
      keyId: "key_a",
      method: "tenantd.v1.TenantService/GetTenant",
      quantity: 1,
      events: 1,
      lastTimeMs: T0,
      ...over,
    };
  }

  function claim(tenantId: string, eventId: string, c: UsageCell, bodyHash = "h"): UsageEventClaim {
    return { tenantId, eventId, bodyHash, cell: c };
  }

  const batchId = () => `b-${uniqueSuffix()}`;

  async function count(table: string, tenantId: string): Promise<number> {
    const r = (await tdb.db.knex.raw(`select count(*)::int as n from tenantd.${table} where tenant_id = ?`, [
      tenantId,
    ])) as { rows: Array<{ n: number }> };
    return r.rows[0]!.n;
  }

  describe("applyBatch", () => {
    it("adds cells to daily rows and month totals, merging equal cells, and keeps the latest time", async () => {
      const t = await tenant();
      const res = await usage.applyBatch(batchId(), [
        cell(t, "2026-01-05", { quantity: 2, events: 2, lastTimeMs: T0 + 5 }),
        cell(t, "2026-01-05", { quantity: 3, events: 3, lastTimeMs: T0 + 9 }),
        cell(t, "2026-01-06", { keyId: "", method: "", metric: "llm_tokens", quantity: 1200, lastTimeMs: T0 + 7 }),
      ]);
      expect(res).toEqual({ applied: true, duplicateEvents: 0, droppedCells: 0 });
      expect(await usage.monthTotals(t, "2026-01")).toEqual([
        { metric: "api_calls", quantity: 5, events: 5, lastTimeMs: T0 + 9 },
        { metric: "llm_tokens", quantity: 1200, events: 1, lastTimeMs: T0 + 7 },
      ]);
      await usage.applyBatch(batchId(), [cell(t, "2026-01-05", { lastTimeMs: T0 + 1 })]);
      expect(await usage.detail(t, "2026-01")).toEqual([
        {
          date: "2026-01-05",
          metric: "api_calls",
          keyId: "key_a",
          method: "tenantd.v1.TenantService/GetTenant",
          quantity: 6,
          events: 6,
          lastTimeMs: T0 + 9,
        },
        {
          date: "2026-01-06",
          metric: "llm_tokens",
          keyId: "",
          method: "",
          quantity: 1200,
          events: 1,
          lastTimeMs: T0 + 7,
        },
      ]);
    });

    it("applies a batch once: again afterwards, and concurrently, it writes nothing", async () => {
      const t = await tenant();
      const id = batchId();
      const cells = [cell(t, "2026-02-01", { quantity: 7 }), cell(t, "2026-02-02", { quantity: 3 })];
      expect((await usage.applyBatch(id, cells)).applied).toBe(true);
      expect(await usage.applyBatch(id, cells)).toEqual({ applied: false, duplicateEvents: 0, droppedCells: 0 });
      expect((await usage.monthTotals(t, "2026-02"))[0]!.quantity).toBe(10);

      const id2 = batchId();
      const results = await Promise.all(Array.from({ length: 8 }, () => usage.applyBatch(id2, cells)));
      expect(results.filter((r) => r.applied)).toHaveLength(1);
      expect((await usage.monthTotals(t, "2026-02"))[0]!.quantity).toBe(20);
    });

    it("sums concurrent distinct batches on the same cells exactly (20 batches × 50 cells)", async () => {
      const a = await tenant();
      const b = await tenant();
      const cells: UsageCell[] = [];
      for (let i = 0; i < 50; i++) {
        cells.push(
          cell(i % 2 === 0 ? a : b, `2026-03-${String(1 + (i % 5)).padStart(2, "0")}`, {
            method: `m${i % 5}`,
            keyId: `key_${i % 3}`,
            quantity: i + 1,
            lastTimeMs: T0 + i,
          }),
        );
      }
      // Shuffled per batch, so that concurrent batches present the same rows in different orders.
      const batches = Array.from({ length: 20 }, (_, n) => {
        const rotated = [...cells.slice(n), ...cells.slice(0, n)];
        return n % 2 === 0 ? rotated : rotated.reverse();
      });
      const results = await Promise.all(batches.map((c) => usage.applyBatch(batchId(), c)));
      expect(results.every((r) => r.applied)).toBe(true);
      const expected = (tenantId: string) =>
        cells.filter((c) => c.tenantId === tenantId).reduce((s, c) => s + c.quantity, 0) * 20;
      const [ta] = await usage.monthTotals(a, "2026-03");
      const [tb] = await usage.monthTotals(b, "2026-03");
      expect(ta).toMatchObject({ quantity: expected(a), events: 25 * 20, lastTimeMs: T0 + 48 });
      expect(tb).toMatchObject({ quantity: expected(b), events: 25 * 20, lastTimeMs: T0 + 49 });
      const detail = await usage.detail(a, "2026-03");
      expect(detail.reduce((s, r) => s + r.quantity, 0)).toBe(expected(a));
    });

    it("applies a batch of thousands of cells", async () => {
      const t = await tenant();
      const cells: UsageCell[] = [];
      for (let i = 0; i < 5000; i++) {
        cells.push(cell(t, `2026-04-${String(1 + (i % 28)).padStart(2, "0")}`, { method: `m${i}`, quantity: 2 }));
      }
      const events = Array.from({ length: 2000 }, (_, i) =>
        claim(t, `e${i}`, cell(t, "2026-04-01", { metric: "llm_tokens", keyId: "", method: "", quantity: 5 })),
      );
      expect(await usage.applyBatch(batchId(), cells, events)).toEqual({
        applied: true,
        duplicateEvents: 0,
        droppedCells: 0,
      });
      expect(await usage.monthTotals(t, "2026-04")).toMatchObject([
        { metric: "api_calls", quantity: 10_000, events: 5000 },
        { metric: "llm_tokens", quantity: 10_000, events: 2000 },
      ]);
      expect(await count("usage_daily", t)).toBe(5001);
    });

    it("counts an event id once per tenant, within a batch and across batches", async () => {
      const t = await tenant();
      const u = await tenant();
      const tokens = (tenantId: string, q: number) =>
        cell(tenantId, "2026-05-10", { metric: "llm_tokens", keyId: "", method: "", quantity: q });
      const first = await usage.applyBatch(
        batchId(),
        [],
        [claim(t, "e1", tokens(t, 100)), claim(t, "e1", tokens(t, 100)), claim(t, "e2", tokens(t, 10))],
      );
      expect(first).toEqual({ applied: true, duplicateEvents: 1, droppedCells: 0 });
      // e1 again (another body too) is a duplicate; the same id for another tenant is not.
      const second = await usage.applyBatch(
        batchId(),
        [cell(t, "2026-05-10")],
        [claim(t, "e1", tokens(t, 999), "other"), claim(u, "e1", tokens(u, 5)), claim(t, "e3", tokens(t, 1))],
      );
      expect(second).toEqual({ applied: true, duplicateEvents: 1, droppedCells: 0 });
      expect(await usage.monthTotals(t, "2026-05")).toMatchObject([
        { metric: "api_calls", quantity: 1, events: 1 },
        { metric: "llm_tokens", quantity: 111, events: 3 },
      ]);
      expect(await usage.monthTotals(u, "2026-05")).toMatchObject([{ metric: "llm_tokens", quantity: 5 }]);
      // Concurrent batches claiming the same ids: each id counts once.
      const claims = Array.from({ length: 20 }, (_, i) => claim(t, `c${i}`, tokens(t, 1)));
      const results = await Promise.all(Array.from({ length: 6 }, () => usage.applyBatch(batchId(), [], claims)));
      expect(results.reduce((s, r) => s + r.duplicateEvents, 0)).toBe(5 * 20);
      expect((await usage.monthTotals(t, "2026-05"))[1]).toMatchObject({ quantity: 131, events: 23 });
    });

    it("drops the cells and events of tenants that do not exist, without failing the batch", async () => {
      const t = await tenant();
      const gone = await tenant();
      await stores.tenants.delete(gone, "key_deleter", T0);
      const missing = newId("ten");
      const res = await usage.applyBatch(
        batchId(),
        [cell(t, "2026-06-01"), cell(gone, "2026-06-01"), cell(missing, "2026-06-01"), cell(missing, "2026-06-02")],
        [claim(missing, "e1", cell(missing, "2026-06-01")), claim(t, "e1", cell(t, "2026-06-01"))],
      );
      expect(res).toEqual({ applied: true, duplicateEvents: 0, droppedCells: 4 });
      expect((await usage.monthTotals(t, "2026-06"))[0]).toMatchObject({ quantity: 2, events: 2 });
      expect(await usage.monthTotals(gone, "2026-06")).toEqual([]);
      expect(await count("usage_daily", missing)).toBe(0);
    });

    it("a tenant deleted while batches for it are applied never fails them", async () => {
      const t = await tenant();
      const work = Array.from({ length: 10 }, () =>
        usage.applyBatch(batchId(), [cell(t, "2026-06-03"), cell(t, "2026-06-04")]),
      );
      const del = stores.tenants.delete(t, "key_deleter", T0);
      const results = await Promise.all(work);
      expect(await del).not.toBeNull();
      expect(results.every((r) => r.applied)).toBe(true);
      expect(await count("usage_daily", t)).toBe(0);
      expect(await count("usage_totals", t)).toBe(0);
    });

    it("rejects malformed cells before writing anything", async () => {
      const t = await tenant();
      await expect(usage.applyBatch(batchId(), [cell(t, "2026-7-1")])).rejects.toThrow(RangeError);
      await expect(usage.applyBatch(batchId(), [cell(t, "2026-07-01", { quantity: 1.5 })])).rejects.toThrow(RangeError);
      expect(await count("usage_daily", t)).toBe(0);
    });
  });

  describe("reading", () => {
    it("dailyTotals sums keys and methods per day and metric, oldest first, in [from, to)", async () => {
      const t = await tenant();
      await usage.applyBatch(batchId(), [
        cell(t, "2026-07-31", { quantity: 4 }),
        cell(t, "2026-08-01", { quantity: 1, keyId: "key_a" }),
        cell(t, "2026-08-01", { quantity: 2, keyId: "key_b", method: "x" }),
        cell(t, "2026-08-01", { metric: "llm_tokens", quantity: 50, events: 2 }),
        cell(t, "2026-08-02", { quantity: 3, events: 3 }),
        cell(t, "2026-09-01", { quantity: 9 }),
      ]);
      expect(await usage.dailyTotals(t, "2026-08-01", "2026-09-01")).toEqual([
        { day: "2026-08-01", metric: "api_calls", quantity: 3, events: 2 },
        { day: "2026-08-01", metric: "llm_tokens", quantity: 50, events: 2 },
        { day: "2026-08-02", metric: "api_calls", quantity: 3, events: 3 },
      ]);
      expect(await usage.dailyTotals(t, "2026-07-01", "2026-10-01", "api_calls")).toEqual([
        { day: "2026-07-31", metric: "api_calls", quantity: 4, events: 1 },
        { day: "2026-08-01", metric: "api_calls", quantity: 3, events: 2 },
        { day: "2026-08-02", metric: "api_calls", quantity: 3, events: 3 },
        { day: "2026-09-01", metric: "api_calls", quantity: 9, events: 1 },
      ]);
      expect(await usage.monthTotals(t, "2026-08")).toEqual([
        { metric: "api_calls", quantity: 6, events: 5, lastTimeMs: T0 },
        { metric: "llm_tokens", quantity: 50, events: 2, lastTimeMs: T0 },
      ]);
      expect(await usage.monthTotals(t, "2026-10")).toEqual([]);
    });
  });

  describe("listTenantUsage", () => {
    async function allTenantIds(): Promise<string[]> {
      const r = (await tdb.db.knex.raw("select id from tenantd.tenants")) as { rows: Array<{ id: string }> };
      return r.rows.map((x) => x.id);
    }

    async function pages(metric: string, descending: boolean, limit: number): Promise<TenantUsageRow[]> {
      const out: TenantUsageRow[] = [];
      let after: { sortValue: number; tenantId: string } | undefined;
      for (;;) {
        const page = await usage.listTenantUsage({
          period: "2026-11",
          metric,
          descending,
          limit,
          ...(after ? { after } : {}),
        });
        expect(page.length).toBeLessThanOrEqual(limit);
        out.push(...page);
        if (page.length < limit) return out;
        const last = page[page.length - 1]!;
        after = { sortValue: last.sortValue, tenantId: last.tenantId };
      }
    }

    it("lists every tenant by one metric's month total, ties by id, zeros included, in keyset pages", async () => {
      const metric = `custom_${uniqueSuffix()}`;
      const ids = await Promise.all(Array.from({ length: 7 }, () => tenant()));
      const values = [30, 10, 30, 5, 0, 10, 30];
      const cells = ids.flatMap((id, i) => [
        cell(id, "2026-11-02", { metric, keyId: "", method: "", quantity: values[i]! }),
        cell(id, "2026-11-03", { metric: "api_calls", quantity: i + 1 }),
      ]);
      await usage.applyBatch(batchId(), cells);
      const noUsage = await tenant();

      const all = await allTenantIds();
      const byValue = (desc: boolean) => (x: TenantUsageRow, y: TenantUsageRow) => {
        const d = x.sortValue - y.sortValue || (x.tenantId < y.tenantId ? -1 : x.tenantId > y.tenantId ? 1 : 0);
        return desc ? -d : d;
      };
      for (const descending of [true, false]) {
        for (const limit of [1, 3, 4, 100]) {
          const rows = await pages(metric, descending, limit);
          expect(rows.map((r) => r.tenantId).sort()).toEqual([...all].sort());
          expect(rows).toEqual([...rows].sort(byValue(descending)));
        }
      }
      const desc = await pages(metric, true, 100);
      expect(desc.slice(0, 6).map((r) => r.sortValue)).toEqual([30, 30, 30, 10, 10, 5]);
      const top = [ids[0]!, ids[2]!, ids[6]!].sort().reverse();
      expect(desc.slice(0, 3).map((r) => r.tenantId)).toEqual(top);
      const first = desc[0]!;
      const i = ids.indexOf(first.tenantId);
      expect(first.totals).toEqual([
        { metric: "api_calls", quantity: i + 1, events: 1, lastTimeMs: T0 },
        { metric, quantity: 30, events: 1, lastTimeMs: T0 },
      ]);
      const zero = desc.find((r) => r.tenantId === noUsage)!;
      expect(zero).toEqual({ tenantId: noUsage, sortValue: 0, totals: [] });
      // The tenant whose total is an explicit zero sorts among the zeros, with its totals.
      const explicitZero = desc.find((r) => r.tenantId === ids[4])!;
      expect(explicitZero.sortValue).toBe(0);
      expect(explicitZero.totals.map((x) => x.metric)).toEqual(["api_calls", metric].sort());
      // A cursor between two values (not one a page returns) still splits the order there.
      const mid = { period: "2026-11", metric, limit: 1, after: { sortValue: 10.5, tenantId: "" } };
      expect((await usage.listTenantUsage({ ...mid, descending: true }))[0]?.sortValue).toBe(10);
      expect((await usage.listTenantUsage({ ...mid, descending: false }))[0]?.sortValue).toBe(30);
      const asc = await pages(metric, false, 2);
      expect(asc.at(-1)?.sortValue).toBe(30);
      expect(asc.map((r) => r.tenantId)).toEqual(desc.map((r) => r.tenantId).reverse());
    });
  });

  describe("compact", () => {
    it("folds whole months into monthly rows with equal sums; totals never decrease; detail keeps the month", async () => {
      const t = await tenant();
      const monthTotals = async () => {
        const out: Record<string, number> = {};
        for (const p of ["2024-01", "2024-02", "2024-03"]) {
          for (const x of await usage.monthTotals(t, p)) out[`${p}/${x.metric}`] = x.quantity;
        }
        return out;
      };
      const seen: Array<Record<string, number>> = [];
      const check = async () => {
        const now = await monthTotals();
        const prev = seen.at(-1) ?? {};
        for (const [k, v] of Object.entries(prev)) expect(now[k]).toBeGreaterThanOrEqual(v);
        seen.push(now);
      };

      const cells: UsageCell[] = [];
      for (const month of ["01", "02", "03"]) {
        for (let d = 1; d <= 28; d += 3) {
          for (const key of ["key_a", "key_b"]) {
            cells.push(
              cell(t, `2024-${month}-${String(d).padStart(2, "0")}`, { keyId: key, quantity: d, lastTimeMs: T0 + d }),
            );
          }
        }
      }
      const applyId = batchId();
      await usage.applyBatch(applyId, cells);
      await check();
      const janBefore = await usage.detail(t, "2024-01");
      const sum = (rows: Array<{ quantity: number }>) => rows.reduce((s, r) => s + r.quantity, 0);

      // 2024-03-15: January and February are whole months before it; March is not.
      const res = await usage.compact("2024-03-15", Date.now() + 60_000);
      expect(res.months).toBeGreaterThanOrEqual(2);
      expect(res.rowsRemoved).toBeGreaterThanOrEqual(janBefore.length * 2);
      await check();
      const jan = await usage.detail(t, "2024-01");
      expect(jan).toEqual([
        {
          date: "2024-01",
          metric: "api_calls",
          keyId: "key_a",
          method: "tenantd.v1.TenantService/GetTenant",
          quantity: sum(janBefore) / 2,
          events: 10,
          lastTimeMs: T0 + 28,
        },
        {
          date: "2024-01",
          metric: "api_calls",
          keyId: "key_b",
          method: "tenantd.v1.TenantService/GetTenant",
          quantity: sum(janBefore) / 2,
          events: 10,
          lastTimeMs: T0 + 28,
        },
      ]);
      expect((await usage.detail(t, "2024-03")).every((r) => r.date.length === 10)).toBe(true);
      expect(await usage.dailyTotals(t, "2024-01-01", "2024-02-01")).toEqual([]);
      expect(seen.at(-1)).toEqual(seen[0]);

      // Batch ids were forgotten, so the same id applies again; a late cell for a compacted month
      // lands in a daily row beside the monthly ones until the next compaction folds it in.
      expect(
        await usage.applyBatch(applyId, [cell(t, "2024-01-31", { keyId: "key_a", quantity: 1000 })]),
      ).toMatchObject({ applied: true });
      await check();
      const partly = await usage.detail(t, "2024-01");
      expect(partly.map((r) => r.date)).toEqual(["2024-01", "2024-01", "2024-01-31"]);
      expect(sum(partly)).toBe(sum(janBefore) + 1000);
      await usage.compact("2024-03-15", 0);
      await check();
      const again = await usage.detail(t, "2024-01");
      expect(again).toHaveLength(2);
      expect(again[0]).toMatchObject({ keyId: "key_a", quantity: sum(janBefore) / 2 + 1000, events: 11 });
      expect(sum(again)).toBe((await usage.monthTotals(t, "2024-01"))[0]!.quantity);
    });

    it("forgets event ids recorded before the cutoff only", async () => {
      const t = await tenant();
      const c = cell(t, "2026-12-01", { metric: "llm_tokens" });
      await usage.applyBatch(batchId(), [], [claim(t, "old", c)]);
      await usage.compact("2000-01-01", Date.now() - 3_600_000);
      expect(await count("usage_events", t)).toBe(1);
      await usage.compact("2000-01-01", Date.now() + 60_000);
      expect(await count("usage_events", t)).toBe(0);
      expect((await usage.applyBatch(batchId(), [], [claim(t, "old", c)])).duplicateEvents).toBe(0);
    });
  });

  describe("alerts", () => {
    const alert = (tenantId: string, metric: string, day: string, timeMs: number) => ({
      id: newId("alr", timeMs),
      tenantId,
      metric,
      day,
      observed: 5000,
      baseline: 120.5,
      score: 9.75,
      timeMs,
    });

    it("records one alert per tenant, metric and day", async () => {
      const t = await tenant();
      const a = alert(t, "api_calls", "2026-01-10", T0 + 1000);
      expect(await usage.recordAlert(a)).toBe(true);
      expect(await usage.recordAlert({ ...alert(t, "api_calls", "2026-01-10", T0 + 2000), observed: 9 })).toBe(false);
      expect(await usage.recordAlert(alert(t, "llm_tokens", "2026-01-10", T0 + 3000))).toBe(true);
      const b = alert(t, "api_calls", "2026-01-11", T0 + 4000);
      expect(await usage.recordAlert(b)).toBe(true);
      expect(await usage.listAlerts({ tenantId: t, metric: "api_calls", limit: 10 })).toEqual([b, a]);
      expect(await usage.recordAlert(alert(newId("ten"), "api_calls", "2026-01-10", T0))).toBe(false);
    });

    it("lists newest first with filters and keyset pages", async () => {
      const t = await tenant();
      const u = await tenant();
      const base = T0 + 86_400_000;
      const made: UsageAlertRecord[] = [];
      for (let i = 0; i < 12; i++) {
        // Pairs share a time, so the id breaks the tie.
        const a = alert(
          i % 3 === 0 ? u : t,
          i % 2 === 0 ? "api_calls" : "llm_tokens",
          `2026-02-${10 + i}`,
          base + Math.floor(i / 2) * 1000,
        );
        expect(await usage.recordAlert(a)).toBe(true);
        made.push(a);
      }
      const newestFirst = (xs: typeof made) =>
        [...xs].sort((x, y) => y.timeMs - x.timeMs || (x.id < y.id ? 1 : x.id > y.id ? -1 : 0));
      const mine = (await usage.listAlerts({ startMs: base, limit: 100 })).filter(
        (a) => a.tenantId === t || a.tenantId === u,
      );
      expect(mine).toEqual(newestFirst(made));

      const paged = [];
      let after: { timeMs: number; id: string } | undefined;
      for (;;) {
        const page = await usage.listAlerts({ tenantId: t, limit: 3, ...(after ? { after } : {}) });
        paged.push(...page);
        if (page.length < 3) break;
        after = { timeMs: page.at(-1)!.timeMs, id: page.at(-1)!.id };
      }
      expect(paged).toEqual(newestFirst(made.filter((a) => a.tenantId === t)));

      const window = await usage.listAlerts({ tenantId: u, startMs: base + 1000, endMs: base + 5000, limit: 10 });
      expect(window).toEqual(
        newestFirst(made.filter((a) => a.tenantId === u && a.timeMs >= base + 1000 && a.timeMs < base + 5000)),
      );
      expect(await usage.listAlerts({ tenantId: u, metric: "llm_tokens", limit: 10 })).toEqual(
        newestFirst(made.filter((a) => a.tenantId === u && a.metric === "llm_tokens")),
      );
    });
  });

  describe("deleting a tenant", () => {
    async function seed(t: string): Promise<void> {
      await usage.applyBatch(
        batchId(),
        [cell(t, "2023-01-05"), cell(t, "2026-01-05")],
        [claim(t, "e", cell(t, "2026-01-05", { metric: "llm_tokens" }))],
      );
      await usage.compact("2023-02-01", 0);
      await usage.recordAlert({
        id: newId("alr"),
        tenantId: t,
        metric: "api_calls",
        day: "2026-01-05",
        observed: 1,
        baseline: 0,
        score: 1,
        timeMs: T0,
      });
    }
    const tables = ["usage_daily", "usage_monthly", "usage_totals", "usage_events", "usage_alerts"];

    it("removes every usage row of the tenant with the tenant, and leaves other tenants' rows", async () => {
      const t = await tenant();
      const other = await tenant();
      await seed(t);
      await seed(other);
      for (const table of tables) expect(await count(table, t)).toBeGreaterThan(0);
      expect(await stores.tenants.delete(t, "key_deleter", T0)).not.toBeNull();
      for (const table of tables) expect(await count(table, t)).toBe(0);
      for (const table of tables) expect(await count(table, other)).toBeGreaterThan(0);
    });

    it("deleteTenant removes the usage rows directly", async () => {
      const t = await tenant();
      await seed(t);
      await usage.deleteTenant(t);
      for (const table of tables) expect(await count(table, t)).toBe(0);
    });
  });
});
