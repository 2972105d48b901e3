import { join, resolve } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import knexModule, { type Knex } from "knex";
import ClientPgLite from "knex-pglite";
import pg from "pg";
import { acquireDataDirLock, type DataDirLock } from "./lock-file.js";

// One entry point for both SQL backends. Postgres when a URL is configured; otherwise PGlite
// (Postgres compiled to WASM, running inside this process) on a data folder, so a developer needs
// nothing installed. Both go through the same Knex instance and the same SQL, and both return the
// same JavaScript shapes: int8 as strings, timestamptz as Date, jsonb parsed.

export interface DatabaseConfig {
  /** Postgres connection string; unset selects PGlite. */
  databaseUrl?: string | undefined;
  /** tenantd's data folder for PGlite: the database lives in `<dataDir>/pgdata`, the lock beside it. */
  dataDir: string;
  /** Bound on every SQL statement, on waiting for a pooled connection and on idle transactions. */
  dbTimeoutMs: number;
  /** PGlite only: keep the database in memory (tests); no data folder and no lock file. */
  inMemory?: boolean;
  /** PGlite only: start from a dump made by `Database.dumpDataDir` instead of running initdb. */
  loadDataDir?: Blob;
  /** Postgres only: largest number of pooled connections. Default 10. */
  poolMax?: number;
  /** Receives Knex's warnings; default: dropped (every failure also reaches the caller as an error). */
  onWarn?: (message: string) => void;
}

export interface Database {
  knex: Knex;
  kind: "postgres" | "pglite";
  /** PGlite only: a tarball of the whole data folder, loadable through `loadDataDir`. */
  dumpDataDir?: () => Promise<Blob>;
  close(): Promise<void>;
}

/** Folder inside tenantd's data folder that holds PGlite's Postgres files. */
export const PGLITE_SUBDIR = "pgdata";

// Knex ships as CommonJS whose module object is the factory itself.
const createKnex = knexModule.knex;

// Knex logs every failed pool acquisition to the console before rejecting with the same error;
// route its messages to the caller's logger instead of stdout.
function knexLog(cfg: DatabaseConfig): Knex.Logger {
  const warn = (message: unknown) => cfg.onWarn?.(String(message));
  return { warn, error: warn, deprecate: warn, debug: () => {} };
}

export async function openDatabase(cfg: DatabaseConfig): Promise<Database> {
  return cfg.databaseUrl ? openPostgres(cfg.databaseUrl, cfg) : openPglite(cfg);
}

function openPostgres(url: string, cfg: DatabaseConfig): Database {
  // A pg.Pool handed to Knex as a native pool. statement_timeout and
  // idle_in_transaction_session_timeout are sent as start-up parameters, so every pooled
  // connection carries them from its first query and no query can run unbounded. The pool's
  // connectionTimeoutMillis bounds both opening a connection and waiting for a free one.
  const pool = new pg.Pool({
    connectionString: url,
    max: cfg.poolMax ?? 10,
    statement_timeout: cfg.dbTimeoutMs,
    idle_in_transaction_session_timeout: cfg.dbTimeoutMs,
    connectionTimeoutMillis: cfg.dbTimeoutMs,
    idleTimeoutMillis: 30_000,
    application_name: "tenantd",
    keepAlive: true,
  });
  // An idle connection can fail (server restart, network); pg-pool drops the client, and without
  // a listener the 'error' event would crash the process.
  pool.on("error", () => {});
  const knex = createKnex({ client: "pg", connectionPool: pool, log: knexLog(cfg) });
  let closed = false;
  return {
    knex,
    kind: "postgres",
    async close() {
      if (closed) return;
      closed = true;
      await knex.destroy();
      await pool.end();
    },
  };
}

async function openPglite(cfg: DatabaseConfig): Promise<Database> {
  const lock: DataDirLock | null = cfg.inMemory ? null : acquireDataDirLock(cfg.dataDir);
  let pglite: PGlite;
  try {
    pglite = new PGlite({
      ...(cfg.inMemory ? {} : { dataDir: join(resolve(cfg.dataDir), PGLITE_SUBDIR) }),
      ...(cfg.loadDataDir ? { loadDataDir: cfg.loadDataDir } : {}),
      // PGlite returns int8 as number (BigInt above 2^53) where pg returns a string; keep pg's
      // shape so that row mappers need no backend switch.
      parsers: { 20: (v: string) => v },
    });
    await pglite.waitReady;
    // PGlite runs one backend in this thread, without the timer signals Postgres uses to cancel
    // statements: statement_timeout is accepted but never fires. It is set anyway so that the
    // session looks like a pooled Postgres connection; the wait for the single connection is
    // bounded by acquireConnectionTimeout below.
    await pglite.query(`set statement_timeout = ${Math.trunc(cfg.dbTimeoutMs)}`);
  } catch (e) {
    lock?.release();
    throw e;
  }
  // knex-pglite pins the pool to exactly one connection (PGlite has one), so a query on the outer
  // knex inside a transaction would wait for itself: inside transactions use only `trx`.
  const knex = createKnex({
    client: ClientPgLite,
    dialect: "postgres",
    connection: () => ({ pglite }) as object,
    acquireConnectionTimeout: cfg.dbTimeoutMs,
    log: knexLog(cfg),
  });
  let closed = false;
  return {
    knex,
    kind: "pglite",
    dumpDataDir: () => pglite.dumpDataDir("none"),
    async close() {
      if (closed) return;
      closed = true;
      try {
        // Destroying the pool closes its one connection, which is the PGlite instance; close it
        // directly too in case the pool never opened it.
        await knex.destroy();
        if (!pglite.closed) await pglite.close();
      } finally {
        lock?.release();
      }
    },
  };
}
