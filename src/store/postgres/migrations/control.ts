// Migrations of the control schema `tenantd`: tenants, keys, tombstones, idempotency claims,
// server settings and the bookkeeping of tenant schema versions. Each migration is an ordered
// list of SQL statements applied in one transaction together with its row in
// `tenantd.schema_migrations`. Migrations are append-only: never edit one that has shipped, add
// the next version instead. Every statement names the schema explicitly (see tenant.ts for why).

export interface ControlMigration {
  version: number;
  name: string;
  statements: readonly string[];
}

export const CONTROL_SCHEMA = "tenantd";

/**
 * Statements that make the migrator's own bookkeeping exist; idempotent, run before anything
 * else on every migrateAll (under the advisory lock).
 */
export const CONTROL_BOOTSTRAP: readonly string[] = [
  "create schema if not exists tenantd",
  `create table if not exists tenantd.schema_migrations (
    version integer primary key,
    name text not null,
    applied_at timestamptz not null default now()
  )`,
];

export const CONTROL_MIGRATIONS: readonly ControlMigration[] = [
  {
    version: 1,
    name: "control schema",
    statements: [
      `create table tenantd.tenants (
        id text primary key,
        name text not null,
        email text not null,
        slug text not null constraint tenants_slug_key unique,
        environment text not null check (environment in ('sandbox', 'live')),
        status text not null check (status in ('active', 'suspended')),
        plan text not null,
        default_currency text not null,
        timezone text not null,
        webhook_url text not null default '',
        webhook_enabled boolean not null default false,
        metadata jsonb not null default '{}',
        created_at timestamptz not null,
        updated_at timestamptz not null,
        version integer not null default 1
      )`,
      // Serves ListTenants' keyset pagination on (created_at desc, id desc).
      "create index tenants_list_idx on tenantd.tenants (created_at desc, id desc)",
      `create table tenantd.keys (
        kid text primary key,
        tenant_id text references tenantd.tenants (id) on delete cascade,
        kind text not null check (kind in ('owner', 'tenant')),
        env text not null check (env in ('live', 'test')),
        label text not null default '',
        permissions jsonb not null default '[]',
        hash text not null,
        last_four text not null,
        created_at timestamptz not null,
        expires_at timestamptz,
        revoked_at timestamptz,
        last_used_at timestamptz,
        rotated_at timestamptz,
        prev_hash text,
        prev_valid_until timestamptz,
        prev_last_used_at timestamptz,
        constraint keys_owner_has_no_tenant check ((kind = 'owner') = (tenant_id is null))
      )`,
      // Serves ListKeys per tenant (and owner keys, tenant_id null) in (created_at desc, kid desc).
      "create index keys_list_idx on tenantd.keys (tenant_id, created_at desc, kid desc)",
      `create table tenantd.tombstones (
        tenant_id text primary key,
        slug text not null,
        deleted_at timestamptz not null,
        deleted_by text not null
      )`,
      "create index tombstones_slug_idx on tenantd.tombstones (slug)",
      `create table tenantd.idempotency (
        scope text not null,
        request_id text not null,
        request_hash text not null,
        resource_id text not null,
        created_at timestamptz not null default now(),
        primary key (scope, request_id)
      )`,
      // Deleting a tenant removes the claims that point at it.
      "create index idempotency_resource_idx on tenantd.idempotency (resource_id)",
      `create table tenantd.settings (
        name text primary key,
        value text not null
      )`,
      // The version each tenant schema has reached; migrateAll selects the tenants behind from here
      // in one indexed query instead of probing every schema.
      `create table tenantd.tenant_schema_versions (
        tenant_id text primary key references tenantd.tenants (id) on delete cascade,
        version integer not null,
        migrated_at timestamptz not null default now()
      )`,
      "create index tenant_schema_versions_version_idx on tenantd.tenant_schema_versions (version)",
    ],
  },
  {
    version: 2,
    name: "rate-limit overrides",
    statements: [
      // The owner's per-tenant replacement of the plan's per-key and per-tenant buckets. It is
      // owner-side data (set with owner keys, read on every call's rate-limit decision), so it
      // lives in the control schema and goes with the tenant row on delete.
      `create table tenantd.rate_limit_overrides (
        tenant_id text primary key references tenantd.tenants (id) on delete cascade,
        per_key jsonb,
        per_tenant jsonb,
        expire_at timestamptz,
        updated_at timestamptz not null,
        updated_key_id text not null
      )`,
    ],
  },
  {
    version: 3,
    name: "usage",
    statements: [
      // UsageService's durable figures. Every row belongs to a tenant and goes with the tenant row
      // on delete. Days are the tenant's local calendar days; a period is a month, `YYYY-MM`.
      //
      // Daily rows: one per tenant, day, metric, key ("" for none) and method ("" for reported
      // metrics), added to by every applied batch.
      `create table tenantd.usage_daily (
        tenant_id text not null references tenantd.tenants (id) on delete cascade,
        day date not null,
        metric text not null,
        key_id text not null,
        method text not null,
        quantity bigint not null,
        events bigint not null,
        last_time timestamptz not null,
        primary key (tenant_id, day, metric, key_id, method)
      )`,
      // Compaction folds a whole month's daily rows into these (same key and method).
      `create table tenantd.usage_monthly (
        tenant_id text not null references tenantd.tenants (id) on delete cascade,
        period text not null,
        metric text not null,
        key_id text not null,
        method text not null,
        quantity bigint not null,
        events bigint not null,
        last_time timestamptz not null,
        primary key (tenant_id, period, metric, key_id, method)
      )`,
      // The running month total per metric, written in the same transaction as the daily rows and
      // never touched by compaction, so it only grows.
      `create table tenantd.usage_totals (
        tenant_id text not null references tenantd.tenants (id) on delete cascade,
        period text not null,
        metric text not null,
        quantity bigint not null,
        events bigint not null,
        last_time timestamptz not null,
        primary key (tenant_id, period, metric)
      )`,
      // Serves the listing of tenants sorted by one metric's month total (both directions).
      "create index usage_totals_rank_idx on tenantd.usage_totals (period, metric, quantity, tenant_id)",
      // Batch ids applied; a batch applied again finds its id here and writes nothing.
      `create table tenantd.usage_batches (
        batch_id text primary key,
        applied_at timestamptz not null default now()
      )`,
      "create index usage_batches_applied_idx on tenantd.usage_batches (applied_at)",
      // Idempotency ids of reported events, per tenant.
      `create table tenantd.usage_events (
        tenant_id text not null references tenantd.tenants (id) on delete cascade,
        event_id text not null,
        body_hash text not null,
        created_at timestamptz not null default now(),
        primary key (tenant_id, event_id)
      )`,
      "create index usage_events_created_idx on tenantd.usage_events (created_at)",
      // Anomaly alerts: at most one per tenant, metric and local day.
      `create table tenantd.usage_alerts (
        id text primary key,
        tenant_id text not null references tenantd.tenants (id) on delete cascade,
        metric text not null,
        day date not null,
        observed bigint not null,
        baseline double precision not null,
        score double precision not null,
        created_at timestamptz not null,
        constraint usage_alerts_day_key unique (tenant_id, metric, day)
      )`,
      // Newest first, across tenants and for one tenant.
      "create index usage_alerts_list_idx on tenantd.usage_alerts (created_at desc, id desc)",
      "create index usage_alerts_tenant_list_idx on tenantd.usage_alerts (tenant_id, created_at desc, id desc)",
    ],
  },
];

export const CONTROL_SCHEMA_VERSION = CONTROL_MIGRATIONS[CONTROL_MIGRATIONS.length - 1]?.version ?? 0;
