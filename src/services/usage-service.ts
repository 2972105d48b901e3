import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  UsageAlertSchema,
  type UsageDay,
  UsageDaySchema,
  type UsageMetricReport,
  UsageMetricReportSchema,
  type UsageSummary,
  UsageSummarySchema,
} from "../../gen/tenantd/v1/usage_pb.js";
import {
  ExportUsageResponseSchema,
  GetTenantUsageResponseSchema,
  GetUsageHistoryResponseSchema,
  GetUsageReportResponseSchema,
  GetUsageSummaryResponseSchema,
  ListTenantUsageResponseSchema,
  ListUsageAlertsResponseSchema,
  RecordUsageResponseSchema,
  type UsageService,
} from "../../gen/tenantd/v1/usage_service_pb.js";
import type { Clock } from "../domain/clock.js";
import { DomainError, invalidField, tenantNotFound } from "../domain/errors.js";
import { isTenantId } from "../domain/ids.js";
import { type PageTokens, pageSize } from "../domain/page-token.js";
import type { TenantRecord } from "../domain/types.js";
import type { LimitStore } from "../store/limit-ports.js";
import type { TenantStore } from "../store/ports.js";
import type { UsageDayTotal, UsageStore, UsageTotal } from "../store/usage-ports.js";
import { ts } from "./convert.js";
import type { InvalidationBus } from "./invalidation.js";
import { effectiveLimit } from "./limits/convert.js";
import { usageCsv } from "./usage/csv.js";
import { localDay, periodBounds, periodDays } from "./usage/days.js";
import type { UsagePipeline } from "./usage/pipeline.js";
import { canonicalHash, currentTenantId, scopeOf } from "./util.js";

// UsageService: reads of the durable usage rows, the reports of internal services, and the
// owner's views across tenants. Counting itself happens in the pipeline (src/services/usage/):
// the `api_calls` of every call made with a tenant's key by the usage interceptor, and the
// reports here; both reach Postgres within a cycle (TENANTD_USAGE_FLUSH_MS), and reads show what
// is durable (`update_time` tells up to when).
//
// RecordUsage with `event_id`: this replica remembers the ids it has seen (bounded, most recent
// first) and answers `duplicate` or REQUEST_ID_CONFLICT from that memory on the call itself; the
// far side claims each id once more when the batch lands (Redis for 35 days, or Postgres without
// Redis), so a retry that reaches another replica, or this one after a restart, is still counted
// once, even if it is answered `duplicate: false`.

export const WELL_KNOWN_METRICS = ["api_calls", "llm_tokens", "storage_bytes", "bandwidth_bytes"] as const;

export interface UsageServiceDeps {
  store: UsageStore;
  pipeline: UsagePipeline;
  tenants: Pick<TenantStore, "get">;
  limits: Pick<LimitStore, "getResourceLimits">;
  clock: Clock;
  pageTokens: PageTokens;
  bus?: Pick<InvalidationBus, "subscribe">;
  /** How long a tenant's plan and time zone are cached, ms. Default 5000. */
  tenantCacheMs?: number;
  /** How many event ids this replica remembers. Default 200,000. */
  eventIdMemory?: number;
}

export interface UsageServiceParts {
  service: Partial<ServiceImpl<typeof UsageService>>;
  /** The tenant's time zone (cached), null for a tenant that does not exist: the sinks' ZoneOf. */
  zoneOf: (tenantId: string) => Promise<string | null>;
}

const KEY_ID = /^key_[0-9A-Za-z]{1,60}$/;

export function createUsageService(deps: UsageServiceDeps): UsageServiceParts {
  const { store, pipeline, clock } = deps;
  const cacheMs = deps.tenantCacheMs ?? 5000;
  const tenantCache = new Map<string, { at: number; tenant: TenantRecord | null }>();
  deps.bus?.subscribe((e) => {
    if (e.kind === "tenant") tenantCache.delete(e.tenantId);
    else if (e.kind === "all") tenantCache.clear();
  });

  async function tenantOf(tenantId: string): Promise<TenantRecord | null> {
    const hit = tenantCache.get(tenantId);
    const now = clock.now();
    if (hit && now - hit.at < cacheMs) return hit.tenant;
    const tenant = isTenantId(tenantId) ? await deps.tenants.get(tenantId) : null;
    if (tenantCache.size > 20_000) tenantCache.clear();
    tenantCache.set(tenantId, { at: now, tenant });
    return tenant;
  }

  async function mustTenant(tenantId: string): Promise<TenantRecord> {
    const t = await tenantOf(tenantId);
    if (!t) throw tenantNotFound(tenantId);
    return t;
  }

  const periodOr = (period: string, tenant: TenantRecord) =>
    period || localDay(tenant.timezone, clock.now()).slice(0, 7);

  function summaryOf(
    tenant: TenantRecord | { id: string; timezone: string },
    period: string,
    totals: UsageTotal[],
  ): UsageSummary {
    const b = periodBounds(tenant.timezone, period);
    const s = create(UsageSummarySchema, {
      tenantId: tenant.id,
      period,
      periodStartTime: ts(b.startMs),
      periodEndTime: ts(b.endMs),
      updateTime: ts(pipeline.completeUntilMs),
    });
    for (const t of totals) {
      const q = BigInt(t.quantity);
      if (t.metric === "api_calls") s.apiCalls = q;
      else if (t.metric === "llm_tokens") s.llmTokens = q;
      else if (t.metric === "storage_bytes") s.storageBytes = q;
      else if (t.metric === "bandwidth_bytes") s.bandwidthBytes = q;
      else if (t.quantity > 0) s.customMetrics[t.metric] = q;
    }
    return s;
  }

  function historyOf(period: string, rows: UsageDayTotal[]): UsageDay[] {
    const byDay = new Map<string, UsageDay>();
    const { from, to } = periodDays(period);
    for (const r of rows) {
      if (r.day < from || r.day >= to) continue;
      let d = byDay.get(r.day);
      if (!d) {
        d = create(UsageDaySchema, { date: r.day });
        byDay.set(r.day, d);
      }
      const q = BigInt(r.quantity);
      if (r.metric === "api_calls") d.apiCalls = q;
      else if (r.metric === "llm_tokens") d.llmTokens = q;
      else if (r.metric === "storage_bytes") d.storageBytes = q;
      else if (r.metric === "bandwidth_bytes") d.bandwidthBytes = q;
      else if (r.quantity > 0) d.customMetrics[r.metric] = q;
    }
    return [...byDay.values()].sort((a, b) => (a.date < b.date ? -1 : 1));
  }

  async function history(tenantId: string, period: string): Promise<UsageDay[]> {
    const { from, to } = periodDays(period);
    return historyOf(period, await store.dailyTotals(tenantId, from, to));
  }

  // Event ids seen by this replica: key → body hash, oldest first (Map keeps insertion order).
  const seenEvents = new Map<string, string>();
  const eventMemory = deps.eventIdMemory ?? 200_000;

  const service: Partial<ServiceImpl<typeof UsageService>> = {
    async getUsageSummary(req, ctx) {
      const tenant = await mustTenant(currentTenantId(scopeOf(ctx)));
      const period = periodOr(req.period, tenant);
      const totals = await store.monthTotals(tenant.id, period);
      return create(GetUsageSummaryResponseSchema, { summary: summaryOf(tenant, period, totals) });
    },

    async getUsageHistory(req, ctx) {
      const tenant = await mustTenant(currentTenantId(scopeOf(ctx)));
      const period = periodOr(req.period, tenant);
      return create(GetUsageHistoryResponseSchema, {
        tenantId: tenant.id,
        period,
        history: await history(tenant.id, period),
      });
    },

    async getUsageReport(req, ctx) {
      const tenant = await mustTenant(currentTenantId(scopeOf(ctx)));
      const period = periodOr(req.period, tenant);
      const [totals, limits] = await Promise.all([
        store.monthTotals(tenant.id, period),
        deps.limits.getResourceLimits(tenant.id),
      ]);
      // Included: the tenant's monthly limits on the metric (for its plan); the tightest one
      // when several resources meter the same metric; -1 when none does.
      const included = new Map<string, number>();
      for (const l of limits.items) {
        if (l.period !== "month" || l.scope !== "tenant") continue;
        const v = effectiveLimit(l, tenant.plan);
        if (v < 0) continue;
        const cur = included.get(l.metric);
        included.set(l.metric, cur === undefined ? v : Math.min(cur, v));
      }
      const byMetric = new Map(totals.map((t) => [t.metric, t]));
      const names = new Set<string>([...WELL_KNOWN_METRICS, ...byMetric.keys(), ...included.keys()]);
      const metrics: UsageMetricReport[] = [...names]
        .sort((a, b) => {
          const ia = WELL_KNOWN_METRICS.indexOf(a as (typeof WELL_KNOWN_METRICS)[number]);
          const ib = WELL_KNOWN_METRICS.indexOf(b as (typeof WELL_KNOWN_METRICS)[number]);
          if (ia >= 0 || ib >= 0) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
          return a < b ? -1 : 1;
        })
        .map((m) => {
          const t = byMetric.get(m);
          const inc = included.get(m) ?? -1;
          const actual = t?.quantity ?? 0;
          return create(UsageMetricReportSchema, {
            metric: m,
            count: BigInt(t?.events ?? 0),
            lastTime: ts(t?.lastTimeMs ?? null),
            included: BigInt(inc),
            actual: BigInt(actual),
            overage: BigInt(inc < 0 ? 0 : Math.max(0, actual - inc)),
          });
        });
      return create(GetUsageReportResponseSchema, { tenantId: tenant.id, period, plan: tenant.plan, metrics });
    },

    async recordUsage(req, ctx) {
      const scope = scopeOf(ctx);
      const tenant = await mustTenant(currentTenantId(scope));
      if (req.keyId !== "" && !KEY_ID.test(req.keyId)) throw invalidField("key_id", "must be a key id, key_…");
      const now = clock.now();
      const atMs = req.time ? timestampMs(req.time) : now;
      const quantity = Number(req.quantity);
      const period = localDay(tenant.timezone, atMs).slice(0, 7);
      const totalKey = `${tenant.id}|${req.metric}|${period}`;
      const load = async () =>
        (await store.monthTotals(tenant.id, period)).find((t) => t.metric === req.metric)?.quantity ?? 0;
      if (req.eventId !== "") {
        const bodyHash = canonicalHash({
          metric: req.metric,
          quantity: req.quantity.toString(),
          key: req.keyId,
          user: req.userId,
          time: req.time ? atMs : null,
        });
        const k = `${tenant.id}|${req.eventId}`;
        const seen = seenEvents.get(k);
        if (seen !== undefined) {
          if (seen !== bodyHash) {
            throw new DomainError(
              "failed_precondition",
              "REQUEST_ID_CONFLICT",
              "event_id was used before with a different report",
              { metadata: { event_id: req.eventId } },
            );
          }
          const total = await pipeline.totals.add(totalKey, 0, load);
          return create(RecordUsageResponseSchema, { duplicate: true, period, periodTotal: BigInt(total) });
        }
        if (seenEvents.size >= eventMemory) {
          const oldest = seenEvents.keys().next().value;
          if (oldest !== undefined) seenEvents.delete(oldest);
        }
        seenEvents.set(k, bodyHash);
        pipeline.meter.addEvent(
          { tenantId: tenant.id, eventId: req.eventId, bodyHash },
          req.metric,
          req.keyId,
          atMs,
          quantity,
        );
      } else {
        pipeline.meter.add(tenant.id, req.metric, req.keyId, "", atMs, quantity);
      }
      const total = await pipeline.totals.add(totalKey, quantity, load);
      return create(RecordUsageResponseSchema, { duplicate: false, period, periodTotal: BigInt(total) });
    },

    async getTenantUsage(req) {
      const tenant = await mustTenant(req.tenantId);
      const period = periodOr(req.period, tenant);
      const totals = await store.monthTotals(tenant.id, period);
      return create(GetTenantUsageResponseSchema, {
        summary: summaryOf(tenant, period, totals),
        history: req.includeHistory ? await history(tenant.id, period) : [],
      });
    },

    async listTenantUsage(req) {
      const period = req.period || new Date(clock.now()).toISOString().slice(0, 7);
      const order = req.orderBy === "" ? "api_calls desc" : req.orderBy;
      const descending = order.endsWith(" desc");
      const metric = descending ? order.slice(0, -5) : order;
      const query = `tenant-usage|${period}|${metric}|${descending ? "d" : "a"}`;
      const pos = deps.pageTokens.decode(req.pageToken, query);
      const limit = pageSize(req.pageSize);
      const rows = await store.listTenantUsage({
        period,
        metric,
        descending,
        limit: limit + 1,
        ...(pos ? { after: { sortValue: pos.t, tenantId: pos.id } } : {}),
      });
      const page = rows.slice(0, limit);
      const summaries = await Promise.all(
        page.map(async (r) => {
          const tenant = await tenantOf(r.tenantId);
          return summaryOf({ id: r.tenantId, timezone: tenant?.timezone ?? "UTC" }, period, r.totals);
        }),
      );
      const last = page[page.length - 1];
      return create(ListTenantUsageResponseSchema, {
        summaries,
        nextPageToken:
          rows.length > limit && last ? deps.pageTokens.encode({ t: last.sortValue, id: last.tenantId }, query) : "",
      });
    },

    async listUsageAlerts(req) {
      const startMs = req.startTime ? timestampMs(req.startTime) : undefined;
      const endMs = req.endTime ? timestampMs(req.endTime) : undefined;
      const query = `usage-alerts|${req.tenantId}|${req.metric}|${startMs ?? ""}|${endMs ?? ""}`;
      const pos = deps.pageTokens.decode(req.pageToken, query);
      const limit = pageSize(req.pageSize);
      const rows = await store.listAlerts({
        limit: limit + 1,
        ...(req.tenantId ? { tenantId: req.tenantId } : {}),
        ...(req.metric ? { metric: req.metric } : {}),
        ...(startMs !== undefined ? { startMs } : {}),
        ...(endMs !== undefined ? { endMs } : {}),
        ...(pos ? { after: { timeMs: pos.t, id: pos.id } } : {}),
      });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return create(ListUsageAlertsResponseSchema, {
        alerts: page.map((a) =>
          create(UsageAlertSchema, {
            id: a.id,
            tenantId: a.tenantId,
            metric: a.metric,
            date: a.day,
            observed: BigInt(a.observed),
            baseline: a.baseline,
            score: a.score,
            time: ts(a.timeMs),
          }),
        ),
        nextPageToken:
          rows.length > limit && last ? deps.pageTokens.encode({ t: last.timeMs, id: last.id }, query) : "",
      });
    },

    async exportUsage(req) {
      const tenant = await mustTenant(req.tenantId);
      const period = periodOr(req.period, tenant);
      const rows = await store.detail(tenant.id, period);
      return create(ExportUsageResponseSchema, {
        contentType: "text/csv; charset=utf-8",
        filename: `usage-${tenant.id}-${period}.csv`,
        csv: usageCsv(tenant.id, period, rows),
      });
    },
  };

  return {
    service,
    zoneOf: async (tenantId) => (await tenantOf(tenantId))?.timezone ?? null,
  };
}
