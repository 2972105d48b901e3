// A database for one test file, on the backend the environment selects: real Postgres when
// DATABASE_URL is set (a fresh database on that server, dropped afterwards), in-memory PGlite
// otherwise. Both are migrated unless asked not to be.
//
// PGlite's cold start (initdb in WASM) takes several seconds; loading a dumped data folder takes
// about a second. The first test file to need a template builds it and writes it to the OS temp
// folder under a name that includes PGlite's version and a digest of every migration, so a
// changed migration never reuses a stale template.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import type { Stores } from "../../src/store/ports.js";
import { type Database, openDatabase } from "../../src/store/postgres/database.js";
import { createPostgresStores } from "../../src/store/postgres/index.js";
import { migrateAll, migrationFingerprint } from "../../src/store/postgres/migrations/index.js";

export interface TestDatabase {
  db: Database;
  kind: Database["kind"];
  /** The stores over `db`; closing them closes `db`. */
  stores: Stores;
  /** Postgres only: the URL of this test file's own database. */
  url?: string;
  /** Closes the database and, on Postgres, drops it. */
  close(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** Apply all migrations (default true); false gives an empty database for migrator tests. */
  migrate?: boolean;
  /** Statement and pool-wait bound. Default 10 s: PGlite serialises concurrent tests' queries. */
  dbTimeoutMs?: number;
  /** Postgres only: pool size. */
  poolMax?: number;
}

export function testDatabaseUrl(): string | undefined {
  const url = process.env.DATABASE_URL;
  return url === undefined || url === "" ? undefined : url;
}

export async function openTestDatabase(opts: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const url = testDatabaseUrl();
  return url ? openPostgresTest(url, opts) : openPgliteTest(opts);
}

async function withAdmin<T>(serverUrl: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function openPostgresTest(serverUrl: string, opts: TestDatabaseOptions): Promise<TestDatabase> {
  const name = `tenantd_test_${randomBytes(6).toString("hex")}`;
  await withAdmin(serverUrl, (c) => c.query(`create database "${name}"`));
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const drop = () => withAdmin(serverUrl, (c) => c.query(`drop database if exists "${name}" with (force)`));
  let db: Database;
  try {
    db = await openDatabase({
      databaseUrl: url,
      dataDir: "",
      dbTimeoutMs: opts.dbTimeoutMs ?? 10_000,
      ...(opts.poolMax !== undefined ? { poolMax: opts.poolMax } : {}),
    });
    if (opts.migrate !== false) await migrateAll(db);
  } catch (e) {
    await drop();
    throw e;
  }
  let closed = false;
  return {
    db,
    kind: db.kind,
    stores: createPostgresStores(db),
    url,
    async close() {
      if (closed) return;
      closed = true;
      await db.close();
      await drop();
    },
  };
}

function pgliteVersion(): string {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve("@electric-sql/pglite"));
  // Walk up from the entry file to the package's own package.json.
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "@electric-sql/pglite" && pkg.version) return pkg.version;
    } catch {
      // Not here; try the parent folder.
    }
    dir = dirname(dir);
  }
  return "unknown";
}

async function pgliteTemplate(migrated: boolean, dbTimeoutMs: number): Promise<Blob> {
  const key = migrated ? migrationFingerprint() : "blank";
  const path = join(tmpdir(), `tenantd-pglite-${pgliteVersion()}-${key}.tar`);
  try {
    return new Blob([await readFile(path)]);
  } catch {
    // No template yet: build one below.
  }
  const db = await openDatabase({ dataDir: "", inMemory: true, dbTimeoutMs });
  try {
    if (migrated) await migrateAll(db);
    const blob = await db.dumpDataDir!();
    // Write then rename, so a concurrent test file never reads a half-written template.
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    await writeFile(tmp, Buffer.from(await blob.arrayBuffer()));
    await rename(tmp, path);
    return blob;
  } finally {
    await db.close();
  }
}

async function openPgliteTest(opts: TestDatabaseOptions): Promise<TestDatabase> {
  const dbTimeoutMs = opts.dbTimeoutMs ?? 10_000;
  const migrated = opts.migrate !== false;
  const template = await pgliteTemplate(migrated, dbTimeoutMs);
  const db = await openDatabase({ dataDir: "", inMemory: true, dbTimeoutMs, loadDataDir: template });
  return { db, kind: db.kind, stores: createPostgresStores(db), close: () => db.close() };
}
