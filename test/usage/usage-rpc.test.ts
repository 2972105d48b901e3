// UsageService through a real server, on the backends the environment selects (Postgres + Redis:
// the Redis buffer and roll-up; PGlite: the direct sink): api_calls counted exactly under
// concurrency on every protocol, RecordUsage with event ids, summary / history / report per local
// month, the owner's per-tenant views, listing, alerts and CSV export. Usage cycles run when a test
// calls app.usage.flush().

import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ResourceLimit_Period as Period } from "../../gen/tenantd/v1/limit_pb.js";
import { LimitService } from "../../gen/tenantd/v1/limit_service_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { UsageService } from "../../gen/tenantd/v1/usage_service_pb.js";
import { localDay } from "../../src/services/usage/days.js";
import { createUsageStore } from "../../src/store/postgres/usage-store.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const usage = () => h.client(UsageService);
const thisMonth = (tz = "UTC") => localDay(tz, h.clock.now()).slice(0, 7);

describe("api_calls", () => {
  it("counts every call made with a tenant's key exactly, on every protocol, under concurrency", async () => {
    const a = await h.newTenant();
    const b = await h.newTenant();
    const perProtocol = 60;
    const calls: Promise<unknown>[] = [];
    for (const p of PROTOCOLS) {
      const tenants = h.client(TenantService, p);
      for (let i = 0; i < perProtocol; i++) {
        calls.push(tenants.getCurrentTenant({}, h.as(a.key)));
        if (i % 2 === 0) calls.push(tenants.getCurrentTenant({}, h.as(b.key)));
      }
    }
    // Owner calls, also acting on behalf of the tenant, are not the tenant's usage.
    for (let i = 0; i < 10; i++)
      calls.push(h.client(TenantService).getCurrentTenant({}, h.as(h.ownerKey, a.tenant.id)));
    await Promise.all(calls);
    expect(await h.app.usage.flush()).toBe(true);

    const sa = await usage().getTenantUsage({ tenantId: a.tenant.id, includeHistory: true }, h.as(h.ownerKey));
    const sb = await usage().getTenantUsage({ tenantId: b.tenant.id }, h.as(h.ownerKey));
    expect(sa.summary?.apiCalls).toBe(BigInt(perProtocol * PROTOCOLS.length));
    expect(sb.summary?.apiCalls).toBe(BigInt((perProtocol / 2) * PROTOCOLS.length));
    expect(sa.history.map((d) => d.apiCalls)).toEqual([BigInt(perProtocol * PROTOCOLS.length)]);
    expect(sa.summary?.period).toBe(thisMonth());

    // A second flush with nothing new changes nothing; the owner's reads above were not counted.
    await h.app.usage.flush();
    const again = await usage().getTenantUsage({ tenantId: a.tenant.id }, h.as(h.ownerKey));
    expect(again.summary?.apiCalls).toBe(sa.summary?.apiCalls);
  });

  it("counts the tenant's own usage reads too, and refused calls are not counted", async () => {
    const t = await h.newTenant({ permissions: ["usage:read"] });
    await usage().getUsageSummary({}, h.as(t.key));
    // Missing permission: refused by auth, never reaches the meter.
    await expectError(
      h.client(TenantService).getCurrentTenant({}, h.as(t.key)),
      Code.PermissionDenied,
      "PERMISSION_MISSING",
    );
    await h.app.usage.flush();
    const s = await usage().getUsageSummary({}, h.as(t.key));
    expect(s.summary?.apiCalls).toBe(1n);
  });
});

describe("RecordUsage", () => {
  it("adds reported metrics, answers the month's running total, and counts an event id once", async () => {
    const t = await h.newTenant();
    const r1 = await usage().recordUsage({ metric: "llm_tokens", quantity: 1200n }, h.as(t.key));
    expect(r1).toMatchObject({ duplicate: false, period: thisMonth(), periodTotal: 1200n });
    const r2 = await usage().recordUsage({ metric: "llm_tokens", quantity: 300n, eventId: "evt-1" }, h.as(t.key));
    expect(r2).toMatchObject({ duplicate: false, periodTotal: 1500n });
    const r3 = await usage().recordUsage({ metric: "llm_tokens", quantity: 300n, eventId: "evt-1" }, h.as(t.key));
    expect(r3).toMatchObject({ duplicate: true, periodTotal: 1500n });
    await expectError(
      usage().recordUsage({ metric: "llm_tokens", quantity: 301n, eventId: "evt-1" }, h.as(t.key)),
      Code.FailedPrecondition,
      "REQUEST_ID_CONFLICT",
    );
    await h.app.usage.flush();
    const r4 = await usage().recordUsage({ metric: "llm_tokens", quantity: 1n }, h.as(t.key));
    expect(r4.periodTotal).toBe(1501n);
    await usage().recordUsage({ metric: "storage_bytes", quantity: 10n }, h.as(t.key));
    await usage().recordUsage({ metric: "gpu_seconds", quantity: 7n, keyId: t.keyId }, h.as(t.key));
    await h.app.usage.flush();

    const { summary } = await usage().getUsageSummary({}, h.as(t.key));
    expect(summary).toMatchObject({
      llmTokens: 1501n,
      storageBytes: 10n,
      bandwidthBytes: 0n,
      customMetrics: { gpu_seconds: 7n },
    });
    // The retry (same event id) is counted once even though this replica forgets the id.
    const store = createUsageStore(h.db.knex);
    const totals = await store.monthTotals(t.tenant.id, thisMonth());
    expect(totals.find((x) => x.metric === "llm_tokens")).toMatchObject({ quantity: 1501, events: 3 });
  });

  it("refuses api_calls, bad names, quantities and key ids", async () => {
    const t = await h.newTenant();
    for (const bad of [
      { metric: "api_calls", quantity: 1n },
      { metric: "Tokens", quantity: 1n },
      { metric: "llm_tokens", quantity: 0n },
      { metric: "llm_tokens", quantity: -5n },
      { metric: "llm_tokens", quantity: 1n, keyId: "not a key" },
      { metric: "llm_tokens", quantity: 1n, time: timestampFromMs(Date.now() + 3_600_000) },
    ]) {
      await expectError(usage().recordUsage(bad, h.as(t.key)), Code.InvalidArgument, "FIELD_INVALID");
    }
  });

  it("counts a report in the local day and month of its time, in the tenant's time zone", async () => {
    const t = await h.newTenant();
    await h.client(TenantService).updateCurrentTenant({ timezone: "Asia/Kathmandu" }, h.as(t.key));
    // Kathmandu is UTC+5:45: 18:14:59Z is 23:59:59 local, 18:15Z is the next local day.
    const now = Date.now();
    const day = new Date(now - 3 * 86_400_000).toISOString().slice(0, 10);
    const before = Date.parse(`${day}T18:14:59Z`);
    const after = Date.parse(`${day}T18:15:00Z`);
    await usage().recordUsage({ metric: "llm_tokens", quantity: 5n, time: timestampFromMs(before) }, h.as(t.key));
    await usage().recordUsage({ metric: "llm_tokens", quantity: 7n, time: timestampFromMs(after) }, h.as(t.key));
    await h.app.usage.flush();
    const store = createUsageStore(h.db.knex);
    const next = new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
    const rows = await store.dailyTotals(
      t.tenant.id,
      day,
      new Date(Date.parse(`${next}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10),
      "llm_tokens",
    );
    expect(rows.map((r) => [r.day, r.quantity])).toEqual([
      [day, 5],
      [next, 7],
    ]);
  });
});

describe("reports and the owner's views", () => {
  it("reports included vs actual from the tenant's monthly limits for its plan", async () => {
    const t = await h.newTenant();
    await h
      .client(LimitService)
      .updateResourceLimits(
        { limits: [{ resource: "llm", metric: "llm_tokens", period: Period.MONTH, limit: 1000n }] },
        h.as(t.key),
      );
    await usage().recordUsage({ metric: "llm_tokens", quantity: 1500n }, h.as(t.key));
    await usage().recordUsage({ metric: "llm_tokens", quantity: 100n }, h.as(t.key));
    await h.app.usage.flush();
    const r = await usage().getUsageReport({}, h.as(t.key));
    expect(r.plan).toBe(t.tenant.plan);
    const llm = r.metrics.find((m) => m.metric === "llm_tokens");
    expect(llm).toMatchObject({ count: 2n, included: 1000n, actual: 1600n, overage: 600n });
    expect(llm?.lastTime).toBeDefined();
    const bw = r.metrics.find((m) => m.metric === "bandwidth_bytes");
    expect(bw).toMatchObject({ count: 0n, included: -1n, actual: 0n, overage: 0n });
    expect(r.metrics.map((m) => m.metric).slice(0, 4)).toEqual([
      "api_calls",
      "llm_tokens",
      "storage_bytes",
      "bandwidth_bytes",
    ]);
  });

  it("lists every tenant sorted by a metric, with zeros, in pages that cover each tenant once", async () => {
    const made = [];
    for (let i = 0; i < 5; i++) {
      const t = await h.newTenant();
      if (i > 0) await usage().recordUsage({ metric: "bandwidth_bytes", quantity: BigInt(i * 100) }, h.as(t.key));
      made.push(t.tenant.id);
    }
    await h.app.usage.flush();
    const seen: { id: string; v: bigint }[] = [];
    let pageToken = "";
    do {
      const page = await usage().listTenantUsage(
        { orderBy: "bandwidth_bytes desc", pageSize: 3, pageToken },
        h.as(h.ownerKey),
      );
      for (const s of page.summaries) seen.push({ id: s.tenantId, v: s.bandwidthBytes });
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(new Set(seen.map((s) => s.id)).size).toBe(seen.length);
    for (const id of made) expect(seen.some((s) => s.id === id)).toBe(true);
    const values = seen.map((s) => s.v);
    expect([...values].sort((x, y) => (x < y ? 1 : x > y ? -1 : 0))).toEqual(values);
    expect(values.slice(0, 4)).toEqual([400n, 300n, 200n, 100n]);

    await expectError(
      usage().listTenantUsage({ orderBy: "llm_tokens", pageToken: "x.y" }, h.as(h.ownerKey)),
      Code.InvalidArgument,
      "PAGE_TOKEN_INVALID",
    );
    const t = await h.newTenant();
    await expectError(usage().listTenantUsage({}, h.as(t.key)), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
  });

  it("exports a tenant's month as CSV and answers NOT_FOUND for unknown tenants", async () => {
    const t = await h.newTenant();
    await usage().recordUsage({ metric: "llm_tokens", quantity: 42n, keyId: t.keyId }, h.as(t.key));
    await h.app.usage.flush();
    const out = await usage().exportUsage({ tenantId: t.tenant.id }, h.as(h.ownerKey));
    expect(out.contentType).toBe("text/csv; charset=utf-8");
    expect(out.filename).toBe(`usage-${t.tenant.id}-${thisMonth()}.csv`);
    const lines = out.csv.trim().split("\r\n");
    expect(lines[0]).toBe("tenant_id,period,date,metric,key_id,method,quantity,events,last_time");
    expect(lines.some((l) => l.includes(",llm_tokens,") && l.includes(",42,1,"))).toBe(true);
    await expectError(
      usage().exportUsage({ tenantId: "ten_00000000000000000000000000" }, h.as(h.ownerKey)),
      Code.NotFound,
      "TENANT_NOT_FOUND",
    );
  });

  it("records an alert when a day's usage jumps far above the tenant's baseline, and lists it", async () => {
    const t = await h.newTenant();
    const store = createUsageStore(h.db.knex);
    const today = localDay("UTC", h.clock.now());
    const cells = [];
    for (let i = 1; i <= 28; i++) {
      const day = new Date(Date.parse(`${today}T00:00:00Z`) - i * 86_400_000).toISOString().slice(0, 10);
      cells.push({
        tenantId: t.tenant.id,
        day,
        metric: "llm_tokens",
        keyId: "",
        method: "",
        quantity: 1000 + ((i * 37) % 90),
        events: 10,
        lastTimeMs: Date.parse(`${day}T12:00:00Z`),
      });
    }
    await store.applyBatch(`seed-${t.tenant.id}`, cells);
    await usage().recordUsage({ metric: "llm_tokens", quantity: 1050n }, h.as(t.key));
    await h.app.usage.flush();
    let alerts = await usage().listUsageAlerts({ tenantId: t.tenant.id }, h.as(h.ownerKey));
    expect(alerts.alerts).toEqual([]);

    h.clock.advance(61_000);
    await usage().recordUsage({ metric: "llm_tokens", quantity: 60_000n }, h.as(t.key));
    await h.app.usage.flush();
    alerts = await usage().listUsageAlerts({ tenantId: t.tenant.id }, h.as(h.ownerKey));
    expect(alerts.alerts).toHaveLength(1);
    expect(alerts.alerts[0]).toMatchObject({
      tenantId: t.tenant.id,
      metric: "llm_tokens",
      date: today,
      observed: 61_050n,
    });
    expect(alerts.alerts[0]?.score).toBeGreaterThanOrEqual(4);
    expect(alerts.alerts[0]?.id).toMatch(/^alr_[0-9a-z]{26}$/);
  });
});

describe("REST and deletion", () => {
  it("records and reads usage over REST with a tenant key", async () => {
    const t = await h.newTenant();
    const post = await fetch(`${h.baseUrl}/v1/tenant/usage:record`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
      body: JSON.stringify({ metric: "bandwidth_bytes", quantity: "2048", eventId: "rest-1" }),
    });
    expect(post.status).toBe(200);
    expect(await post.json()).toMatchObject({ period: thisMonth(), periodTotal: "2048" });
    await h.app.usage.flush();
    const get = await fetch(`${h.baseUrl}/v1/tenant/usage/summary?period=${thisMonth()}`, {
      headers: { authorization: `Bearer ${t.key}` },
    });
    expect(get.status).toBe(200);
    const body = (await get.json()) as { summary: Record<string, unknown> };
    expect(body.summary).toMatchObject({ tenantId: t.tenant.id, bandwidthBytes: "2048", apiCalls: "1" });
    const bad = await fetch(`${h.baseUrl}/v1/tenant/usage/summary?period=2026-13`, {
      headers: { authorization: `Bearer ${t.key}` },
    });
    expect(bad.status).toBe(422);
  });

  it("deleting a tenant removes its usage rows, and usage still in flight for it is dropped", async () => {
    const t = await h.newTenant();
    await usage().recordUsage({ metric: "llm_tokens", quantity: 9n, eventId: "gone-1" }, h.as(t.key));
    await h.app.usage.flush();
    // Counted but not flushed when the tenant goes.
    await usage().recordUsage({ metric: "llm_tokens", quantity: 5n }, h.as(t.key));
    await h.client(TenantService).deleteTenant({ tenantId: t.tenant.id }, h.as(h.ownerKey));
    expect(await h.app.usage.flush()).toBe(true);
    for (const table of ["usage_daily", "usage_totals", "usage_events", "usage_monthly", "usage_alerts"]) {
      const r = (await h.db.knex.raw(`select count(*)::int as n from tenantd.${table} where tenant_id = ?`, [
        t.tenant.id,
      ])) as {
        rows: { n: number }[];
      };
      expect(r.rows[0]?.n, table).toBe(0);
    }
    if (process.env.REDIS_URL) {
      const { Redis } = await import("ioredis");
      const r = new Redis(process.env.REDIS_URL);
      try {
        expect(await r.keys(`*{${t.tenant.id}}*`)).toEqual([]);
        const ns = await h.app.stores.settings.getOrCreate("usage_namespace", () => "unset");
        expect(await r.sismember(`u:${ns}:dirty`, t.tenant.id)).toBe(0);
      } finally {
        r.disconnect();
      }
    }
  });
});
