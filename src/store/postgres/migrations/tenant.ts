// Migrations of every tenant's own schema (`t_<…>`, from tenantSchemaName only). Each step is a
// function from the schema name to SQL statements, and every statement names the schema
// explicitly: a search_path set by the migrator would work too, but an explicit, quoted schema
// cannot silently land in the wrong place, and it is the same rule Knex's migrator needs (its
// `schemaName` only moves its bookkeeping tables, not the statements). Steps are append-only.

export interface TenantMigration {
  version: number;
  name: string;
  /** The statements for one schema; `schema` comes from tenantSchemaName and is quoted here. */
  statements(schema: string): readonly string[];
}

/** Quotes a schema name produced by tenantSchemaName (lowercase letters, digits, underscore). */
export function quoteSchema(schema: string): string {
  if (!/^t_[0-9a-z]{26}$/.test(schema)) throw new Error(`not a tenant schema name: ${schema}`);
  return `"${schema}"`;
}

export const TENANT_MIGRATIONS: readonly TenantMigration[] = [
  {
    version: 1,
    name: "audit events",
    statements: (schema) => {
      const s = quoteSchema(schema);
      return [
        `create schema ${s}`,
        // One row holding the version this schema has reached; a copy of the control table's
        // entry that travels with the schema (e.g. in a per-schema dump) and is updated in the
        // same transaction.
        `create table ${s}.schema_version (
          singleton boolean primary key default true check (singleton),
          version integer not null
        )`,
        `create table ${s}.audit_events (
          id text primary key,
          actor_key_id text not null,
          actor_kind text not null,
          acting_as boolean not null,
          method text not null,
          resource text not null,
          request_id text not null,
          created_at timestamptz not null,
          details jsonb not null default '{}'
        )`,
        `create index audit_events_list_idx on ${s}.audit_events (created_at desc, id desc)`,
      ];
    },
  },
  {
    version: 2,
    name: "resource limits and rate-limit buckets",
    statements: (schema) => {
      const s = quoteSchema(schema);
      return [
        // LimitService's definitions. Each list is replaced as a whole; its version (the etag)
        // lives in limit_lists so that compare-and-set locks one row rather than a table.
        `create table ${s}.limit_lists (
          kind text primary key check (kind in ('resources', 'buckets')),
          version integer not null
        )`,
        `create table ${s}.resource_limits (
          resource text not null,
          metric text not null,
          period text not null check (period in ('minute', 'hour', 'day', 'month')),
          scope text not null check (scope in ('tenant', 'end_user')),
          position integer not null,
          limit_default bigint not null check (limit_default >= -1),
          tiers jsonb not null default '{}',
          gate_action text not null check (gate_action in ('block', 'warn')),
          primary key (resource, metric, period, scope)
        )`,
        `create table ${s}.rate_limit_buckets (
          name text primary key,
          position integer not null,
          capacity bigint not null check (capacity >= 1),
          refill_per_second double precision not null default 0,
          refill_amount bigint not null default 0,
          refill_interval_ms bigint not null default 0
        )`,
      ];
    },
  },
];

export const TENANT_SCHEMA_VERSION = TENANT_MIGRATIONS[TENANT_MIGRATIONS.length - 1]?.version ?? 0;
