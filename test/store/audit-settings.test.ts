// AuditStore (inside each tenant's schema) and SettingsStore on the selected backend.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId, tenantSchemaName } from "../../src/domain/ids.js";
import type { Stores } from "../../src/store/ports.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeEvent, makeTenant, T0, uniqueSuffix } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

describe(`AuditStore and SettingsStore (${backend})`, () => {
  let tdb: TestDatabase;
  let stores: Stores;

  beforeAll(async () => {
    tdb = await openTestDatabase();
    stores = tdb.stores;
  });
  afterAll(async () => {
    await tdb?.close();
  });

  describe("audit", () => {
    it("appends into the tenant's own schema and lists newest first with pagination", async () => {
      const a = makeTenant();
      const b = makeTenant();
      await stores.tenants.create(a);
      await stores.tenants.create(b);
      const events = [];
      for (let i = 0; i < 5; i++) {
        const e = makeEvent(a.id, { createdAt: T0 + Math.floor(i / 2), details: { i: String(i) } });
        await stores.audit.append(e);
        events.push(e);
      }
      await stores.audit.append(makeEvent(b.id));
      const expected = [...events].sort((x, y) => y.createdAt - x.createdAt || (x.id < y.id ? 1 : -1));
      const p1 = await stores.audit.list(a.id, { limit: 3 });
      const last = p1[p1.length - 1]!;
      const p2 = await stores.audit.list(a.id, { limit: 3, after: { t: last.createdAt, id: last.id } });
      expect([...p1, ...p2]).toEqual(expected);

      // The rows are physically in A's schema; B's trail holds only B's event.
      const inA = (await tdb.db.knex.raw(
        `select count(*)::int as n from "${tenantSchemaName(a.id)}".audit_events`,
      )) as {
        rows: Array<{ n: number }>;
      };
      expect(inA.rows[0]!.n).toBe(5);
      const listB = await stores.audit.list(b.id, { limit: 100 });
      expect(listB.map((e) => e.tenantId)).toEqual([b.id]);
    });

    it("fails for a tenant without a schema and refuses malformed tenant ids", async () => {
      await expect(stores.audit.append(makeEvent(newId("ten")))).rejects.toThrow();
      await expect(stores.audit.list("ten_x; drop schema tenantd", { limit: 1 })).rejects.toThrow(/not a tenant id/);
    });
  });

  describe("settings", () => {
    it("getOrCreate agrees on one value under concurrent first calls", async () => {
      const name = `secret-${uniqueSuffix()}`;
      let made = 0;
      const values = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          stores.settings.getOrCreate(name, () => {
            made++;
            return `value-${i}`;
          }),
        ),
      );
      expect(new Set(values).size).toBe(1);
      expect(made).toBeGreaterThanOrEqual(1);
      expect(await stores.settings.getOrCreate(name, () => "later")).toBe(values[0]);
    });
  });

  it("ping answers", async () => {
    await expect(stores.ping()).resolves.toBeUndefined();
  });
});
