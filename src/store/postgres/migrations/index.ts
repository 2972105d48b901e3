export { CONTROL_MIGRATIONS, CONTROL_SCHEMA, CONTROL_SCHEMA_VERSION, type ControlMigration } from "./control.js";
export {
  createTenantSchema,
  type MigrateOptions,
  type MigrateProgress,
  type MigrateResult,
  migrateAll,
  migrationFingerprint,
} from "./migrator.js";
export { TENANT_MIGRATIONS, TENANT_SCHEMA_VERSION, type TenantMigration } from "./tenant.js";
