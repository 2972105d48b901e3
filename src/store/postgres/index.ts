import type { Stores } from "../ports.js";
import { createAuditStore } from "./audit-store.js";
import type { Database } from "./database.js";
import { createKeyStore } from "./key-store.js";
import { createSettingsStore } from "./settings-store.js";
import { createTenantStore } from "./tenant-store.js";

export { type Database, type DatabaseConfig, openDatabase } from "./database.js";
export { createTenantSchema, type MigrateOptions, type MigrateProgress, migrateAll } from "./migrations/index.js";
export { withTenantSchema } from "./tenant-scope.js";
export { createUsageStore } from "./usage-store.js";

/** The storage ports over one database (Postgres or PGlite); close() closes the database. */
export function createPostgresStores(db: Database): Stores {
  const { knex } = db;
  return {
    tenants: createTenantStore(knex),
    keys: createKeyStore(knex),
    audit: createAuditStore(knex),
    settings: createSettingsStore(knex),
    async ping() {
      await knex.raw("select 1");
    },
    close: () => db.close(),
  };
}
