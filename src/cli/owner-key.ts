// `npm run owner-key -- [label]`: creates an owner key holding every permission directly in the
// database and prints it once. It is the way back in when every owner key is lost or revoked; it
// needs the database itself (DATABASE_URL, or the PGlite data folder while the server is stopped),
// which is the trust boundary of a deployment.
import { loadConfig } from "../config.js";
import { systemClock } from "../domain/clock.js";
import { keyIdOf } from "../domain/key-format.js";
import { OWNER_PERMISSIONS } from "../domain/permissions.js";
import { issueKey } from "../services/key-service.js";
import { openDatabase } from "../store/postgres/database.js";
import { createPostgresStores } from "../store/postgres/index.js";
import { migrateAll } from "../store/postgres/migrations/index.js";

async function main(): Promise<void> {
  const label = (process.argv[2] ?? "recovery owner key").slice(0, 100);
  const cfg = loadConfig();
  const db = await openDatabase({ databaseUrl: cfg.databaseUrl, dataDir: cfg.dataDir, dbTimeoutMs: cfg.dbTimeoutMs });
  const stores = createPostgresStores(db);
  try {
    await migrateAll(db, {});
    const { record, apiKey } = issueKey({
      kind: "owner",
      env: "live",
      tenantId: null,
      label,
      permissions: [...OWNER_PERMISSIONS],
      expiresAt: null,
      now: systemClock.now(),
    });
    await stores.keys.insert(record);
    process.stderr.write(`created owner key ${keyIdOf(record.kid)} ("${label}"); it is shown only once:\n`);
    process.stdout.write(`${apiKey}\n`);
  } finally {
    await stores.close();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`owner-key failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
