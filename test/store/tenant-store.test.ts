// TenantStore contract, run against the backend the environment selects (Postgres with
// DATABASE_URL, PGlite otherwise).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId, tenantSchemaName } from "../../src/domain/ids.js";
import type { Stores } from "../../src/store/ports.js";
import { TENANT_SCHEMA_VERSION } from "../../src/store/postgres/migrations/index.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeKey, makeTenant, T0, uniqueSuffix } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

describe(`TenantStore (${backend})`, () => {
  let tdb: TestDatabase;
  let stores: Stores;

  beforeAll(async () => {
    tdb = await openTestDatabase();
    stores = tdb.stores;
  });
  afterAll(async () => {
    await tdb?.close();
  });

  async function schemaExists(tenantId: string): Promise<boolean> {
    const res = (await tdb.db.knex.raw("select 1 from information_schema.schemata where schema_name = ?", [
      tenantSchemaName(tenantId),
    ])) as { rows: unknown[] };
    return res.rows.length === 1;
  }

  describe("create", () => {
    it("stores the tenant and creates its schema at the latest version", async () => {
      const t = makeTenant({ metadata: { a: "1", "b c": "ü" }, webhookUrl: "https://example.com/h" });
      const res = await stores.tenants.create(t);
      expect(res).toEqual({ kind: "created", tenant: t });
      expect(await stores.tenants.get(t.id)).toEqual(t);
      expect(await schemaExists(t.id)).toBe(true);
      const schema = tenantSchemaName(t.id);
      const marker = (await tdb.db.knex.raw(`select version from "${schema}".schema_version`)) as {
        rows: Array<{ version: number }>;
      };
      expect(marker.rows).toEqual([{ version: TENANT_SCHEMA_VERSION }]);
      const tables = (await tdb.db.knex.raw("select table_name from information_schema.tables where table_schema = ?", [
        schema,
      ])) as { rows: Array<{ table_name: string }> };
      expect(tables.rows.map((r) => r.table_name).sort()).toEqual([
        "audit_events",
        "limit_lists",
        "rate_limit_buckets",
        "resource_limits",
        "schema_version",
      ]);
    });

    it("answers slug_taken for a slug another tenant holds, and leaves nothing behind", async () => {
      const a = makeTenant();
      const b = makeTenant({ slug: a.slug });
      expect((await stores.tenants.create(a)).kind).toBe("created");
      expect(await stores.tenants.create(b)).toEqual({ kind: "slug_taken" });
      expect(await stores.tenants.get(b.id)).toBeNull();
      expect(await schemaExists(b.id)).toBe(false);
    });

    it("is all-or-nothing: a failing schema creation leaves no tenant row and no claim", async () => {
      const t = makeTenant();
      // Occupy the schema name so that createTenantSchema fails after the row was inserted.
      await tdb.db.knex.raw(`create schema "${tenantSchemaName(t.id)}"`);
      const claim = { scope: "test", requestId: `r-${uniqueSuffix()}`, requestHash: "h1", ttlMs: 86_400_000 };
      await expect(stores.tenants.create(t, claim)).rejects.toThrow(/already exists/);
      expect(await stores.tenants.get(t.id)).toBeNull();
      expect(await stores.tenants.slugInUse(t.slug)).toBe(false);
      // The claim rolled back with the rest: the same request can be retried and succeed.
      await tdb.db.knex.raw(`drop schema "${tenantSchemaName(t.id)}"`);
      expect((await stores.tenants.create(t, claim)).kind).toBe("created");
    });
  });

  describe("idempotency", () => {
    it("100 concurrent identical creates produce exactly one tenant", async () => {
      const slug = `same-${uniqueSuffix()}`;
      const claim = {
        scope: "CreateTenant",
        requestId: `req-${uniqueSuffix()}`,
        requestHash: "hash-a",
        ttlMs: 86_400_000,
      };
      // Each request gets its own generated id, as the service would do.
      const attempts = Array.from({ length: 100 }, () => makeTenant({ slug }));
      const results = await Promise.all(attempts.map((t) => stores.tenants.create(t, claim)));
      const created = results.filter((r) => r.kind === "created");
      const replayed = results.filter((r) => r.kind === "replayed");
      expect(created).toHaveLength(1);
      expect(replayed).toHaveLength(99);
      const winner = created[0]!.kind === "created" ? created[0]!.tenant : null;
      for (const r of replayed) if (r.kind === "replayed") expect(r.tenant).toEqual(winner);
      const n = (await tdb.db.knex.raw("select count(*)::int as n from tenantd.tenants where slug = ?", [slug])) as {
        rows: Array<{ n: number }>;
      };
      expect(n.rows[0]!.n).toBe(1);
      const schemas = await Promise.all(attempts.map((t) => schemaExists(t.id)));
      expect(schemas.filter(Boolean)).toHaveLength(1);
    });

    it("answers conflict for the same request id with another body", async () => {
      const claim = {
        scope: "CreateTenant",
        requestId: `req-${uniqueSuffix()}`,
        requestHash: "hash-a",
        ttlMs: 86_400_000,
      };
      const first = makeTenant();
      expect((await stores.tenants.create(first, claim)).kind).toBe("created");
      const other = makeTenant();
      expect(await stores.tenants.create(other, { ...claim, requestHash: "hash-b" })).toEqual({ kind: "conflict" });
      expect(await stores.tenants.get(other.id)).toBeNull();
      // The same request id in another scope is another request.
      expect((await stores.tenants.create(other, { ...claim, scope: "other" })).kind).toBe("created");
    });

    it("forgets a claim older than its ttl: the request id makes a new tenant", async () => {
      const claim = { scope: "CreateTenant", requestId: `req-${uniqueSuffix()}`, requestHash: "hash-a", ttlMs: 60_000 };
      const first = makeTenant();
      expect((await stores.tenants.create(first, claim)).kind).toBe("created");
      const later = { ...makeTenant(), createdAt: first.createdAt + 60_000, updatedAt: first.createdAt + 60_000 };
      const again = await stores.tenants.create(later, { ...claim, requestHash: "hash-b" });
      expect(again.kind).toBe("created");
      // Within the ttl of the new claim, the id replays the new tenant.
      const replay = await stores.tenants.create(makeTenant(), { ...claim, requestHash: "hash-b" });
      expect(replay).toMatchObject({ kind: "replayed", tenant: { id: later.id } });
    });

    it("replays the tenant as it is now", async () => {
      const claim = {
        scope: "CreateTenant",
        requestId: `req-${uniqueSuffix()}`,
        requestHash: "hash-a",
        ttlMs: 86_400_000,
      };
      const t = makeTenant();
      await stores.tenants.create(t, claim);
      const updated = await stores.tenants.update(t.id, { name: "Renamed" }, T0 + 1000);
      const replay = await stores.tenants.create(makeTenant(), claim);
      expect(replay).toEqual({ kind: "replayed", tenant: updated });
    });
  });

  describe("list", () => {
    it("pages by (createdAt desc, id desc) with filters", async () => {
      const plan = `plan-${uniqueSuffix()}`;
      const made = [];
      for (let i = 0; i < 7; i++) {
        // Two pairs share a creation time, so the id breaks ties.
        const createdAt = T0 + Math.floor(i / 2) * 1000;
        const t = makeTenant({
          plan,
          createdAt,
          status: i % 3 === 0 ? "suspended" : "active",
          environment: i % 2 === 0 ? "live" : "sandbox",
        });
        await stores.tenants.create(t);
        made.push(t);
      }
      const expected = [...made].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
      const seen = [];
      let after: { t: number; id: string } | undefined;
      for (;;) {
        const page = await stores.tenants.list({ plan, limit: 3, ...(after ? { after } : {}) });
        seen.push(...page);
        if (page.length < 3) break;
        const last = page[page.length - 1]!;
        after = { t: last.createdAt, id: last.id };
      }
      expect(seen.map((t) => t.id)).toEqual(expected.map((t) => t.id));

      const suspended = await stores.tenants.list({ plan, status: "suspended", limit: 100 });
      expect(suspended.map((t) => t.id).sort()).toEqual(
        made
          .filter((t) => t.status === "suspended")
          .map((t) => t.id)
          .sort(),
      );
      const liveActive = await stores.tenants.list({ plan, status: "active", environment: "live", limit: 100 });
      expect(liveActive.map((t) => t.id).sort()).toEqual(
        made
          .filter((t) => t.status === "active" && t.environment === "live")
          .map((t) => t.id)
          .sort(),
      );
    });
  });

  describe("update", () => {
    it("applies a patch, bumps version and updatedAt", async () => {
      const t = makeTenant();
      await stores.tenants.create(t);
      const res = await stores.tenants.update(
        t.id,
        { name: "New", status: "suspended", metadata: { x: "y" }, webhookEnabled: true },
        T0 + 5000,
      );
      expect(res).toEqual({
        ...t,
        name: "New",
        status: "suspended",
        metadata: { x: "y" },
        webhookEnabled: true,
        updatedAt: T0 + 5000,
        version: 2,
      });
      expect(await stores.tenants.get(t.id)).toEqual(res);
    });

    it("compares and sets on expectedVersion", async () => {
      const t = makeTenant();
      await stores.tenants.create(t);
      expect(await stores.tenants.update(t.id, { plan: "pro" }, T0 + 1, 7)).toBe("etag_mismatch");
      const ok = await stores.tenants.update(t.id, { plan: "pro" }, T0 + 1, 1);
      expect(ok).toMatchObject({ plan: "pro", version: 2 });
      // Two writers holding version 2: exactly one wins.
      const [a, b] = await Promise.all([
        stores.tenants.update(t.id, { plan: "a" }, T0 + 2, 2),
        stores.tenants.update(t.id, { plan: "b" }, T0 + 2, 2),
      ]);
      expect([a, b].filter((r) => r === "etag_mismatch")).toHaveLength(1);
      expect((await stores.tenants.get(t.id))?.version).toBe(3);
    });

    it("returns null for an unknown tenant, with or without expectedVersion", async () => {
      const id = newId("ten");
      expect(await stores.tenants.update(id, { plan: "x" }, T0)).toBeNull();
      expect(await stores.tenants.update(id, { plan: "x" }, T0, 1)).toBeNull();
    });
  });

  describe("delete", () => {
    it("removes row, keys and schema and keeps a tombstone", async () => {
      const t = makeTenant();
      await stores.tenants.create(t);
      const key = makeKey(t.id);
      await stores.keys.insert(key);
      const before = await stores.tenants.count();

      const tomb = await stores.tenants.delete(t.id, "key_deleter", T0 + 9000);
      expect(tomb).toEqual({ tenantId: t.id, slug: t.slug, deletedAt: T0 + 9000, deletedBy: "key_deleter" });
      expect(await stores.tenants.get(t.id)).toBeNull();
      expect(await schemaExists(t.id)).toBe(false);
      expect(await stores.keys.credential(key.kid)).toBeNull();
      expect(await stores.tenants.getTombstone(t.id)).toEqual(tomb);
      expect(await stores.tenants.slugInUse(t.slug)).toBe(true);
      expect(await stores.tenants.count()).toBe(before - 1);
      const versions = (await tdb.db.knex.raw("select 1 from tenantd.tenant_schema_versions where tenant_id = ?", [
        t.id,
      ])) as { rows: unknown[] };
      expect(versions.rows).toHaveLength(0);
      expect(await stores.tenants.delete(t.id, "key_deleter", T0 + 9001)).toBeNull();
    });

    it("forgets the create's idempotency claim, so a retried create makes a new tenant", async () => {
      const claim = { scope: "CreateTenant", requestId: `req-${uniqueSuffix()}`, requestHash: "h", ttlMs: 86_400_000 };
      const t = makeTenant();
      await stores.tenants.create(t, claim);
      await stores.tenants.delete(t.id, "key_x", T0);
      const again = makeTenant();
      expect((await stores.tenants.create(again, claim)).kind).toBe("created");
    });

    it("returns null for an unknown tenant", async () => {
      expect(await stores.tenants.delete(newId("ten"), "key_x", T0)).toBeNull();
      expect(await stores.tenants.getTombstone(newId("ten"))).toBeNull();
    });
  });

  describe("slugInUse", () => {
    it("is true for live tenants and false for unused slugs", async () => {
      const t = makeTenant();
      expect(await stores.tenants.slugInUse(t.slug)).toBe(false);
      await stores.tenants.create(t);
      expect(await stores.tenants.slugInUse(t.slug)).toBe(true);
    });
  });
});
