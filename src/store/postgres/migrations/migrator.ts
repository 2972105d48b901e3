import { createHash } from "node:crypto";
import type { Knex } from "knex";
import { tenantSchemaName } from "../../../domain/ids.js";
import type { Database } from "../database.js";
import { CONTROL_BOOTSTRAP, CONTROL_MIGRATIONS, type ControlMigration } from "./control.js";
import { quoteSchema, TENANT_MIGRATIONS, type TenantMigration } from "./tenant.js";

// A small versioned migrator instead of Knex's. Knex's migrator keeps one bookkeeping table per
// schema, loads migration files from disk and takes a table lock per run; for a thousand tenant
// schemas that means a thousand bookkeeping tables and round trips just to learn that nothing is
// due. Here the control schema keeps one row per tenant schema (tenant_schema_versions), so the
// tenants that are behind come from one indexed query, and each tenant is migrated in its own
// transaction together with its version row: a run that stops half way (crash, deploy, timeout)
// has committed exactly the tenants it finished, and the next run continues with the rest.
// Concurrent runs (two replicas starting at once) are serialised by a session advisory lock.

export interface MigrateProgress {
  phase: "control" | "tenants";
  done: number;
  total: number;
}

export interface MigrateOptions {
  onProgress?: (p: MigrateProgress) => void;
  /** How long to wait for another run's advisory lock before failing. Default 60 s. */
  lockWaitMs?: number;
  /** Statement timeout inside migration transactions, for steps slower than the app's bound. */
  statementTimeoutMs?: number;
  /** Tenant steps to apply; tests pass extra steps. Default TENANT_MIGRATIONS. */
  tenantMigrations?: readonly TenantMigration[];
  /** Tenants read per query while walking the ones that are behind. Default 200. */
  batchSize?: number;
}

export interface MigrateResult {
  controlApplied: number;
  tenantsMigrated: number;
}

// Two int4 keys: an application-specific class (ASCII "tntd") and the lock within it.
const LOCK_CLASS = 0x746e7464;
const LOCK_MIGRATE = 1;

async function applyTenantSteps(
  trx: Knex.Transaction,
  tenantId: string,
  from: number,
  migrations: readonly TenantMigration[],
): Promise<number> {
  const schema = tenantSchemaName(tenantId);
  let version = from;
  for (const m of migrations) {
    if (m.version <= from) continue;
    for (const sql of m.statements(schema)) await trx.raw(sql);
    version = m.version;
  }
  if (version === from) return version;
  await trx.raw(
    `insert into tenantd.tenant_schema_versions (tenant_id, version, migrated_at) values (?, ?, now())
     on conflict (tenant_id) do update set version = excluded.version, migrated_at = excluded.migrated_at`,
    [tenantId, version],
  );
  await trx.raw(
    `insert into ${quoteSchema(schema)}.schema_version (version) values (?)
     on conflict (singleton) do update set version = excluded.version`,
    [version],
  );
  return version;
}

/**
 * Creates a new tenant's schema with every tenant migration applied, inside the caller's
 * transaction (which must already hold the tenant row): the tenant exists with a complete schema
 * or not at all.
 */
export async function createTenantSchema(
  trx: Knex.Transaction,
  tenantId: string,
  migrations: readonly TenantMigration[] = TENANT_MIGRATIONS,
): Promise<void> {
  await applyTenantSteps(trx, tenantId, 0, migrations);
}

function latestVersion(migrations: readonly { version: number }[]): number {
  let prev = 0;
  for (const m of migrations) {
    if (m.version <= prev) throw new Error(`migration versions must increase: ${m.version} after ${prev}`);
    prev = m.version;
  }
  return prev;
}

/** A digest of every migration's SQL; changes whenever a migration is added or edited. */
export function migrationFingerprint(tenantMigrations: readonly TenantMigration[] = TENANT_MIGRATIONS): string {
  const h = createHash("sha256");
  h.update(JSON.stringify(CONTROL_BOOTSTRAP));
  for (const m of CONTROL_MIGRATIONS) h.update(JSON.stringify([m.version, m.statements]));
  const sample = tenantSchemaName("ten_00000000000000000000000000");
  for (const m of tenantMigrations) h.update(JSON.stringify([m.version, m.statements(sample)]));
  return h.digest("hex").slice(0, 16);
}

async function rows<T>(q: Knex.Raw): Promise<T[]> {
  const res = (await q) as { rows: T[] };
  return res.rows;
}

/**
 * Migrates the control schema, then every tenant schema that is behind, each tenant in its own
 * transaction. Resumable: run it again after an interruption and it continues where it stopped.
 */
export async function migrateAll(db: Database, opts: MigrateOptions = {}): Promise<MigrateResult> {
  const { knex } = db;
  const tenantMigrations = opts.tenantMigrations ?? TENANT_MIGRATIONS;
  const latestTenant = latestVersion(tenantMigrations);
  latestVersion(CONTROL_MIGRATIONS);
  const batchSize = opts.batchSize ?? 200;
  // Everything runs on one pinned connection: the advisory lock belongs to a session, and on
  // PGlite this is the only connection there is.
  const conn: unknown = await knex.client.acquireConnection();
  const on = (sql: string, bindings: readonly Knex.RawBinding[] = []) => knex.raw(sql, bindings).connection(conn);
  const inTransaction = <T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> =>
    knex.transaction(
      async (trx) => {
        if (opts.statementTimeoutMs !== undefined) {
          await trx.raw("select set_config('statement_timeout', ?, true)", [String(opts.statementTimeoutMs)]);
        }
        return fn(trx);
      },
      { connection: conn },
    );
  let locked = false;
  try {
    // Poll with the non-blocking form: a blocking pg_advisory_lock would be cut off by the
    // connection's statement_timeout with an unhelpful error.
    const deadline = Date.now() + (opts.lockWaitMs ?? 60_000);
    for (;;) {
      const [r] = await rows<{ ok: boolean }>(
        on("select pg_try_advisory_lock(?, ?) as ok", [LOCK_CLASS, LOCK_MIGRATE]),
      );
      if (r?.ok) break;
      if (Date.now() >= deadline) {
        throw new Error("another migration run holds the migration lock (advisory lock tntd/1); try again later");
      }
      await new Promise((res) => setTimeout(res, 200));
    }
    locked = true;

    for (const sql of CONTROL_BOOTSTRAP) await on(sql);
    const applied = new Set(
      (await rows<{ version: number }>(on("select version from tenantd.schema_migrations"))).map((r) => r.version),
    );
    const pending: ControlMigration[] = CONTROL_MIGRATIONS.filter((m) => !applied.has(m.version));
    let controlDone = 0;
    opts.onProgress?.({ phase: "control", done: 0, total: pending.length });
    for (const m of pending) {
      await inTransaction(async (trx) => {
        for (const sql of m.statements) await trx.raw(sql);
        await trx.raw("insert into tenantd.schema_migrations (version, name) values (?, ?)", [m.version, m.name]);
      });
      controlDone++;
      opts.onProgress?.({ phase: "control", done: controlDone, total: pending.length });
    }

    const behindSql = `from tenantd.tenants t left join tenantd.tenant_schema_versions v on v.tenant_id = t.id
      where coalesce(v.version, 0) < ?`;
    const [c] = await rows<{ n: number }>(on(`select count(*)::int as n ${behindSql}`, [latestTenant]));
    let total = c?.n ?? 0;
    let done = 0;
    opts.onProgress?.({ phase: "tenants", done, total });
    let cursor = "";
    for (;;) {
      const batch = await rows<{ id: string }>(
        on(`select t.id ${behindSql} and t.id > ? order by t.id limit ?`, [latestTenant, cursor, batchSize]),
      );
      if (batch.length === 0) break;
      for (const { id } of batch) {
        await inTransaction(async (trx) => {
          // Lock the tenant row first: DeleteTenant locks it first too, so a delete and a
          // migration of the same tenant queue up instead of deadlocking on the schema's tables.
          const [row] = await rows<{ version: number | null }>(
            trx.raw(
              `select v.version from tenantd.tenants t left join tenantd.tenant_schema_versions v on v.tenant_id = t.id
               where t.id = ? for no key update of t`,
              [id],
            ),
          );
          if (!row) return; // Deleted since the batch was read.
          await applyTenantSteps(trx, id, row.version ?? 0, tenantMigrations);
        });
        done++;
        // Tenants created during the run with an older schema can raise the count.
        total = Math.max(total, done);
        opts.onProgress?.({ phase: "tenants", done, total });
      }
      cursor = batch[batch.length - 1]!.id;
    }
    return { controlApplied: controlDone, tenantsMigrated: done };
  } finally {
    if (locked) {
      try {
        await on("select pg_advisory_unlock(?, ?)", [LOCK_CLASS, LOCK_MIGRATE]);
      } catch {
        // The session may be broken; make sure a Postgres connection is not pooled again while
        // possibly holding the lock (Knex's pg adapter destroys connections carrying this mark on
        // release). PGlite's one session must survive; its lock is re-entrant for the next run.
        // The original error, if any, is the one worth reporting.
        if (db.kind === "postgres") {
          (conn as { __knex__disposed?: string }).__knex__disposed = "migration lock not released";
        }
      }
    }
    await knex.client.releaseConnection(conn);
  }
}
