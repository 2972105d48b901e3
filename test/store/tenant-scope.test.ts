// withTenantSchema binds one tenant's schema for one transaction only. On Postgres this checks
// every pooled connection afterwards; on PGlite (one connection) the single session.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tenantSchemaName } from "../../src/domain/ids.js";
import type { TenantRecord } from "../../src/domain/types.js";
import { withTenantSchema } from "../../src/store/postgres/tenant-scope.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeEvent, makeTenant } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";
const POOL = 5;

interface RawConnection {
  query(sql: string): Promise<{ rows: Array<Record<string, unknown>> }>;
}

describe(`withTenantSchema (${backend})`, () => {
  let tdb: TestDatabase;
  const tenants: TenantRecord[] = [];

  beforeAll(async () => {
    tdb = await openTestDatabase({ poolMax: POOL });
    for (let i = 0; i < 10; i++) {
      const t = makeTenant();
      await tdb.stores.tenants.create(t);
      await tdb.stores.audit.append(makeEvent(t.id));
      tenants.push(t);
    }
  });
  afterAll(async () => {
    await tdb?.close();
  });

  /** Checks out every pooled connection at once and reads each one's search_path. */
  async function pooledSearchPaths(): Promise<Array<{ pid: number; path: string; reset: string }>> {
    const client = tdb.db.knex.client;
    const n = tdb.db.kind === "postgres" ? POOL : 1;
    const conns = (await Promise.all(Array.from({ length: n }, () => client.acquireConnection()))) as RawConnection[];
    try {
      return await Promise.all(
        conns.map(async (c) => {
          const r = await c.query(
            "select pg_backend_pid() as pid, current_setting('search_path') as path, reset_val as reset from pg_settings where name = 'search_path'",
          );
          const row = r.rows[0] as { pid: number; path: string; reset: string };
          return { pid: Number(row.pid), path: row.path, reset: row.reset };
        }),
      );
    } finally {
      for (const c of conns) await client.releaseConnection(c);
    }
  }

  it("binds the tenant's schema inside the transaction", async () => {
    const t = tenants[0]!;
    const inside = await withTenantSchema(tdb.db.knex, t.id, async (trx) => {
      const path = (await trx.raw("select current_setting('search_path') as p")) as { rows: Array<{ p: string }> };
      const n = (await trx.raw("select count(*)::int as n from audit_events")) as { rows: Array<{ n: number }> };
      return { path: path.rows[0]!.p, n: n.rows[0]!.n };
    });
    expect(inside).toEqual({ path: `"${tenantSchemaName(t.id)}"`, n: 1 });
  });

  it("cannot reach control tables by their unqualified names", async () => {
    await expect(
      withTenantSchema(tdb.db.knex, tenants[0]!.id, (trx) => trx.raw("select * from tenants")),
    ).rejects.toThrow(/does not exist/);
  });

  it("never leaves a tenant's search_path on a pooled connection", async () => {
    // Many concurrent scoped transactions over all pooled connections, some failing half way.
    const results = await Promise.allSettled(
      Array.from({ length: 300 }, (_, i) => {
        const t = tenants[i % tenants.length]!;
        return withTenantSchema(tdb.db.knex, t.id, async (trx) => {
          const r = (await trx.raw(
            "select current_setting('search_path') as p, count(*)::int as n from audit_events",
          )) as {
            rows: Array<{ p: string; n: number }>;
          };
          // Each transaction sees its own tenant's single event, never another's.
          expect(r.rows[0]).toEqual({ p: `"${tenantSchemaName(t.id)}"`, n: 1 });
          if (i % 7 === 0) throw new Error("rollback on purpose");
          return r.rows[0]!.n;
        });
      }),
    );
    const failures = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    expect(failures.every((f) => /rollback on purpose/.test(String(f.reason)))).toBe(true);
    expect(failures).toHaveLength(Math.ceil(300 / 7));

    const paths = await pooledSearchPaths();
    if (tdb.db.kind === "postgres") expect(new Set(paths.map((p) => p.pid)).size).toBe(POOL);
    for (const p of paths) {
      expect(p.path).toBe(p.reset);
      expect(p.path).not.toMatch(/t_/);
    }
  });

  it("takes schema names from tenant ids only", async () => {
    await expect(withTenantSchema(tdb.db.knex, 'ten_"; drop schema tenantd; --', async () => 1)).rejects.toThrow(
      /not a tenant id/,
    );
  });
});
