import type { Knex } from "knex";
import type { PeriodUnit } from "../../services/limits/periods.js";
import type {
  BucketDef,
  GateAction,
  LimitScope,
  LimitStore,
  OverrideBucket,
  OverrideStore,
  RateLimitOverrideRecord,
  ResourceLimitDef,
  Versioned,
} from "../limit-ports.js";
import { firstOf } from "./sql.js";
import { withTenantSchema } from "./tenant-scope.js";

// LimitService's definitions. Resource limits and named buckets live in the tenant's own schema
// (reached only through withTenantSchema, so the table names are unqualified on purpose); the
// owner's rate-limit overrides live in the control schema.
//
// A list is replaced as a whole inside one transaction: the list's row in limit_lists is locked
// (FOR UPDATE) first, so concurrent replacements serialise, the compare-and-set on its version
// is exact, and a reader never sees half of a list (it reads inside one transaction too).

type ListKind = "resources" | "buckets";

interface LimitRow {
  resource: string;
  metric: string;
  period: string;
  scope: string;
  limit_default: string | number;
  tiers: Record<string, number | string> | null;
  gate_action: string;
}

interface BucketRow {
  name: string;
  capacity: string | number;
  refill_per_second: string | number;
  refill_amount: string | number;
  refill_interval_ms: string | number;
}

async function versionOf(trx: Knex.Transaction, kind: ListKind): Promise<number> {
  const row = await firstOf<{ version: number }>(trx.raw("select version from limit_lists where kind = ?", [kind]));
  return row?.version ?? 0;
}

/**
 * Locks the list's version row (creating it at version 0 first) and applies `write` when the
 * version matches; returns the new version, or "version_mismatch".
 */
async function replaceList(
  trx: Knex.Transaction,
  kind: ListKind,
  expectedVersion: number | undefined,
  write: () => Promise<void>,
): Promise<number | "version_mismatch"> {
  await trx.raw("insert into limit_lists (kind, version) values (?, 0) on conflict (kind) do nothing", [kind]);
  const row = await firstOf<{ version: number }>(
    trx.raw("select version from limit_lists where kind = ? for update", [kind]),
  );
  const current = row?.version ?? 0;
  if (expectedVersion !== undefined && expectedVersion !== current) return "version_mismatch";
  await write();
  await trx.raw("update limit_lists set version = ? where kind = ?", [current + 1, kind]);
  return current + 1;
}

function limitFromRow(r: LimitRow): ResourceLimitDef {
  const tiers: Record<string, number> = {};
  for (const [k, v] of Object.entries(r.tiers ?? {})) tiers[k] = Number(v);
  return {
    resource: r.resource,
    metric: r.metric,
    period: r.period as PeriodUnit,
    limit: Number(r.limit_default),
    tiers,
    gateAction: r.gate_action as GateAction,
    scope: r.scope as LimitScope,
  };
}

function bucketFromRow(r: BucketRow): BucketDef {
  return {
    name: r.name,
    capacity: Number(r.capacity),
    refillPerSecond: Number(r.refill_per_second),
    refillAmount: Number(r.refill_amount),
    refillIntervalMs: Number(r.refill_interval_ms),
  };
}

export function createLimitStore(knex: Knex): LimitStore {
  return {
    getResourceLimits(tenantId) {
      return withTenantSchema(knex, tenantId, async (trx) => {
        const rows = (await trx("resource_limits").select("*").orderBy("position")) as LimitRow[];
        return { items: rows.map(limitFromRow), version: await versionOf(trx, "resources") };
      });
    },

    replaceResourceLimits(tenantId, limits, expectedVersion) {
      return withTenantSchema(
        knex,
        tenantId,
        async (trx): Promise<Versioned<ResourceLimitDef> | "version_mismatch"> => {
          const v = await replaceList(trx, "resources", expectedVersion, async () => {
            await trx("resource_limits").delete();
            if (limits.length === 0) return;
            await trx("resource_limits").insert(
              limits.map((l, i) => ({
                resource: l.resource,
                metric: l.metric,
                period: l.period,
                scope: l.scope,
                position: i,
                limit_default: l.limit,
                tiers: JSON.stringify(l.tiers),
                gate_action: l.gateAction,
              })),
            );
          });
          if (v === "version_mismatch") return v;
          return { items: limits.map((l) => ({ ...l, tiers: { ...l.tiers } })), version: v };
        },
      );
    },

    getBuckets(tenantId) {
      return withTenantSchema(knex, tenantId, async (trx) => {
        const rows = (await trx("rate_limit_buckets").select("*").orderBy("position")) as BucketRow[];
        return { items: rows.map(bucketFromRow), version: await versionOf(trx, "buckets") };
      });
    },

    replaceBuckets(tenantId, buckets, expectedVersion) {
      return withTenantSchema(knex, tenantId, async (trx): Promise<Versioned<BucketDef> | "version_mismatch"> => {
        const v = await replaceList(trx, "buckets", expectedVersion, async () => {
          await trx("rate_limit_buckets").delete();
          if (buckets.length === 0) return;
          await trx("rate_limit_buckets").insert(
            buckets.map((b, i) => ({
              name: b.name,
              position: i,
              capacity: b.capacity,
              refill_per_second: b.refillPerSecond,
              refill_amount: b.refillAmount,
              refill_interval_ms: b.refillIntervalMs,
            })),
          );
        });
        if (v === "version_mismatch") return v;
        return { items: buckets.map((b) => ({ ...b })), version: v };
      });
    },
  };
}

interface OverrideRow {
  tenant_id: string;
  per_key: OverrideBucket | null;
  per_tenant: OverrideBucket | null;
  expire_at: Date | null;
  updated_at: Date;
  updated_key_id: string;
}

export function createOverrideStore(knex: Knex): OverrideStore {
  return {
    async get(tenantId) {
      const row = await firstOf<OverrideRow>(
        knex.raw("select * from tenantd.rate_limit_overrides where tenant_id = ?", [tenantId]),
      );
      if (row === null) return null;
      return {
        tenantId: row.tenant_id,
        perKey: row.per_key,
        perTenant: row.per_tenant,
        expiresAt: row.expire_at === null ? null : row.expire_at.getTime(),
        updatedAt: row.updated_at.getTime(),
        updatedKeyId: row.updated_key_id,
      };
    },
    async put(r: RateLimitOverrideRecord) {
      await knex.raw(
        `insert into tenantd.rate_limit_overrides (tenant_id, per_key, per_tenant, expire_at, updated_at, updated_key_id)
         values (?, ?::jsonb, ?::jsonb, ?, ?, ?)
         on conflict (tenant_id) do update set per_key = excluded.per_key, per_tenant = excluded.per_tenant,
           expire_at = excluded.expire_at, updated_at = excluded.updated_at, updated_key_id = excluded.updated_key_id`,
        [
          r.tenantId,
          r.perKey === null ? null : JSON.stringify(r.perKey),
          r.perTenant === null ? null : JSON.stringify(r.perTenant),
          r.expiresAt === null ? null : new Date(r.expiresAt),
          new Date(r.updatedAt),
          r.updatedKeyId,
        ],
      );
    },
    async delete(tenantId) {
      const rows = await knex.raw("delete from tenantd.rate_limit_overrides where tenant_id = ? returning tenant_id", [
        tenantId,
      ]);
      return ((rows as { rows: unknown[] }).rows?.length ?? 0) > 0;
    },
  };
}
