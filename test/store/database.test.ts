// openDatabase: both backends return the same JavaScript shapes, and every wait is bounded.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/store/postgres/database.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

describe(`openDatabase (${backend})`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase();
  });
  afterAll(async () => {
    await tdb?.close();
  });

  it("returns int8 as string, timestamptz as Date and jsonb parsed, like pg", async () => {
    const r = (await tdb.db.knex.raw(
      "select 9007199254740993::int8 as big, count(*) as n, timestamptz '2026-01-01T00:00:00.123Z' as t, '{\"a\":[1]}'::jsonb as j",
    )) as { rows: Array<{ big: unknown; n: unknown; t: unknown; j: unknown }> };
    expect(r.rows[0]).toEqual({
      big: "9007199254740993",
      n: "1",
      t: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, 123)),
      j: { a: [1] },
    });
  });

  it("bounds the wait for a pooled connection", async () => {
    // A database of its own whose pool holds one connection (PGlite always does) and a short bound.
    const small = await openTestDatabase({ dbTimeoutMs: 300, poolMax: 1 });
    const { db } = small;
    try {
      const held = await db.knex.client.acquireConnection();
      const start = Date.now();
      await expect(db.knex.raw("select 1")).rejects.toThrow(/timeout/i);
      expect(Date.now() - start).toBeLessThan(2000);
      await db.knex.client.releaseConnection(held);
      await expect(db.knex.raw("select 1")).resolves.toBeDefined();
    } finally {
      await small.close();
    }
  });

  it.runIf(backend === "postgres")("cancels statements that outlast dbTimeoutMs", async () => {
    const db = await openDatabase({ databaseUrl: tdb.url, dataDir: "", dbTimeoutMs: 200 });
    try {
      const start = Date.now();
      await expect(db.knex.raw("select pg_sleep(2)")).rejects.toMatchObject({ code: "57014" });
      expect(Date.now() - start).toBeLessThan(1500);
      // A transaction left idle is ended by the server too.
      const settings = (await db.knex.raw(
        "select current_setting('statement_timeout') as s, current_setting('idle_in_transaction_session_timeout') as i",
      )) as { rows: Array<{ s: string; i: string }> };
      expect(settings.rows[0]).toEqual({ s: "200ms", i: "200ms" });
    } finally {
      await db.close();
    }
  });
});
