// migrateAll: applies the control schema, then every tenant schema that is behind; resumable
// after an interruption; serialised between concurrent runs. Plus the PGlite data-folder lock and
// the CLI's exit status.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tenantSchemaName } from "../../src/domain/ids.js";
import { openDatabase } from "../../src/store/postgres/database.js";
import { acquireDataDirLock, LOCK_FILE_NAME } from "../../src/store/postgres/lock-file.js";
import {
  CONTROL_SCHEMA_VERSION,
  type MigrateProgress,
  migrateAll,
  TENANT_MIGRATIONS,
  TENANT_SCHEMA_VERSION,
  type TenantMigration,
} from "../../src/store/postgres/migrations/index.js";
import { quoteSchema } from "../../src/store/postgres/migrations/tenant.js";
import { openTestDatabase, type TestDatabase, testDatabaseUrl } from "../helpers/database.js";
import { makeTenant } from "./fixtures.js";

const backend = testDatabaseUrl() ? "postgres" : "pglite";

// A next tenant step, as a future release would add: a table plus one seed row, so applying it
// twice would fail on the table and counting rows proves it ran once.
const NEXT: TenantMigration = {
  version: TENANT_SCHEMA_VERSION + 1,
  name: "test step",
  statements: (schema) => [
    `create table ${quoteSchema(schema)}.extra (id integer primary key)`,
    `insert into ${quoteSchema(schema)}.extra (id) values (1)`,
  ],
};
const WITH_NEXT = [...TENANT_MIGRATIONS, NEXT];

async function versions(tdb: TestDatabase): Promise<Map<string, number>> {
  const r = (await tdb.db.knex.raw("select tenant_id, version from tenantd.tenant_schema_versions")) as {
    rows: Array<{ tenant_id: string; version: number }>;
  };
  return new Map(r.rows.map((x) => [x.tenant_id, x.version]));
}

describe(`migrateAll (${backend})`, () => {
  let tdb: TestDatabase;

  beforeAll(async () => {
    tdb = await openTestDatabase({ migrate: false });
  });
  afterAll(async () => {
    await tdb?.close();
  });

  it("migrates an empty database, and a second run has nothing to do", async () => {
    const progress: MigrateProgress[] = [];
    const first = await migrateAll(tdb.db, { onProgress: (p) => progress.push(p) });
    expect(first).toEqual({ controlApplied: CONTROL_SCHEMA_VERSION, tenantsMigrated: 0 });
    expect(progress.at(-1)).toEqual({ phase: "tenants", done: 0, total: 0 });
    expect(await migrateAll(tdb.db)).toEqual({ controlApplied: 0, tenantsMigrated: 0 });
  });

  it("resumes after an interruption and applies each step to each tenant once", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const t = makeTenant();
      expect((await tdb.stores.tenants.create(t)).kind).toBe("created");
      ids.push(t.id);
    }
    // The process "dies" after five tenants: the progress callback throws mid-run.
    const interrupted = migrateAll(tdb.db, {
      tenantMigrations: WITH_NEXT,
      batchSize: 3,
      onProgress: (p) => {
        if (p.phase === "tenants" && p.done === 5) throw new Error("simulated crash");
      },
    });
    await expect(interrupted).rejects.toThrow("simulated crash");
    const mid = await versions(tdb);
    expect(ids.filter((id) => mid.get(id) === NEXT.version)).toHaveLength(5);
    expect(ids.filter((id) => mid.get(id) === TENANT_SCHEMA_VERSION)).toHaveLength(5);

    const progress: MigrateProgress[] = [];
    const rest = await migrateAll(tdb.db, { tenantMigrations: WITH_NEXT, onProgress: (p) => progress.push(p) });
    expect(rest).toEqual({ controlApplied: 0, tenantsMigrated: 5 });
    expect(progress.filter((p) => p.phase === "tenants").at(-1)).toEqual({ phase: "tenants", done: 5, total: 5 });
    const after = await versions(tdb);
    for (const id of ids) {
      expect(after.get(id)).toBe(NEXT.version);
      const schema = tenantSchemaName(id);
      const r = (await tdb.db.knex.raw(
        `select (select count(*)::int from "${schema}".extra) as n, (select version from "${schema}".schema_version) as v`,
      )) as { rows: Array<{ n: number; v: number }> };
      expect(r.rows[0]).toEqual({ n: 1, v: NEXT.version });
    }
    expect(await migrateAll(tdb.db, { tenantMigrations: WITH_NEXT })).toEqual({
      controlApplied: 0,
      tenantsMigrated: 0,
    });
  });

  it("serialises concurrent runs: every tenant is migrated exactly once", async () => {
    const step: TenantMigration = {
      version: NEXT.version + 1,
      name: "concurrent step",
      statements: (schema) => [`create table ${quoteSchema(schema)}.extra2 (id integer primary key)`],
    };
    const list = [...WITH_NEXT, step];
    const runs = await Promise.all([
      migrateAll(tdb.db, { tenantMigrations: list }),
      migrateAll(tdb.db, { tenantMigrations: list }),
    ]);
    const total = await tdb.stores.tenants.count();
    expect(runs[0]!.tenantsMigrated + runs[1]!.tenantsMigrated).toBe(total);
  });

  it.runIf(backend === "postgres")("gives up with a clear error while another run holds the lock", async () => {
    const other = new pg.Client({ connectionString: tdb.url });
    await other.connect();
    try {
      await other.query("select pg_advisory_lock($1, $2)", [0x746e7464, 1]);
      await expect(migrateAll(tdb.db, { lockWaitMs: 300 })).rejects.toThrow(/another migration run holds/);
    } finally {
      await other.end();
    }
    expect(await migrateAll(tdb.db, { lockWaitMs: 300, tenantMigrations: WITH_NEXT })).toMatchObject({
      controlApplied: 0,
    });
  });
});

describe("PGlite data folder lock", () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), "tenantd-lock-"));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("refuses a second open of the same data folder and releases the lock on close", async () => {
    const dir = tempDir();
    const db = await openDatabase({ dataDir: dir, dbTimeoutMs: 10_000 });
    try {
      expect(readFileSync(join(dir, LOCK_FILE_NAME), "utf8").trim()).toBe(String(process.pid));
      await expect(openDatabase({ dataDir: dir, dbTimeoutMs: 10_000 })).rejects.toThrow(
        `is in use by process ${process.pid}`,
      );
      await db.knex.raw("create table kept (v int)");
    } finally {
      await db.close();
    }
    expect(existsSync(join(dir, LOCK_FILE_NAME))).toBe(false);
  });

  it("refuses a lock held by another live process", () => {
    const dir = tempDir();
    writeFileSync(join(dir, LOCK_FILE_NAME), `${process.ppid}\n`);
    expect(() => acquireDataDirLock(dir)).toThrow(`in use by process ${process.ppid}`);
  });

  it("takes over a stale lock whose process is gone", () => {
    const dir = tempDir();
    const dead = spawnSync(process.execPath, ["-e", ""]).pid;
    writeFileSync(join(dir, LOCK_FILE_NAME), `${dead}\n`);
    const lock = acquireDataDirLock(dir);
    expect(readFileSync(lock.path, "utf8").trim()).toBe(String(process.pid));
    lock.release();
    expect(existsSync(lock.path)).toBe(false);
  });
});

describe("npm run migrate", () => {
  function runCli(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/migrate.ts"], {
        env: { PATH: process.env.PATH, ...env },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      child.on("close", (code) => resolve({ code, stderr }));
    });
  }

  it.runIf(backend === "postgres")("migrates and reports progress", async () => {
    const tdb = await openTestDatabase({ migrate: false });
    try {
      await tdb.db.close();
      const res = await runCli({ DATABASE_URL: tdb.url });
      expect(res.code).toBe(0);
      expect(res.stderr).toMatch(/tenant schemas: 0\/0/);
      expect(res.stderr).toMatch(/done in \d+ ms/);
    } finally {
      await tdb.close();
    }
  });

  it("exits non-zero with the reason when the database is unreachable", async () => {
    const res = await runCli({ DATABASE_URL: "postgres://nobody@127.0.0.1:1/none", TENANTD_DB_TIMEOUT_MS: "1000" });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/migration failed: .*ECONNREFUSED/);
  });
});
