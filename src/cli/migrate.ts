// `npm run migrate`: migrates the control schema and every tenant schema that is behind, with
// progress on stderr. Safe to interrupt and run again: finished tenants stay migrated and the
// next run continues with the rest. Exits non-zero with the reason on failure.
import { loadConfig } from "../config.js";
import { openDatabase } from "../store/postgres/database.js";
import { migrateAll } from "../store/postgres/migrations/index.js";

async function main(): Promise<void> {
  const cfg = loadConfig();
  const target = cfg.databaseUrl ? "Postgres (DATABASE_URL)" : `PGlite in ${cfg.dataDir}`;
  process.stderr.write(`migrating ${target}\n`);
  const db = await openDatabase({ databaseUrl: cfg.databaseUrl, dataDir: cfg.dataDir, dbTimeoutMs: cfg.dbTimeoutMs });
  const started = Date.now();
  let lastReport = 0;
  try {
    const result = await migrateAll(db, {
      // Schema changes on large tenants can outlast the request-path bound.
      statementTimeoutMs: Math.max(cfg.dbTimeoutMs, 60_000),
      onProgress: (p) => {
        const now = Date.now();
        // Report at most every 500 ms, and always the first and last step of each phase.
        if (p.done !== 0 && p.done !== p.total && now - lastReport < 500) return;
        lastReport = now;
        const label = p.phase === "control" ? "control schema migrations" : "tenant schemas";
        process.stderr.write(`${label}: ${p.done}/${p.total}\n`);
      },
    });
    process.stderr.write(
      `done in ${Date.now() - started} ms: ${result.controlApplied} control migration(s), ${result.tenantsMigrated} tenant schema(s) migrated\n`,
    );
  } finally {
    await db.close();
  }
}

main().catch((e: unknown) => {
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`migration failed: ${msg}\nrun \`npm run migrate\` again to resume once the cause is fixed\n`);
  process.exit(1);
});
