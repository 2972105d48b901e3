// The migration entry points under the path the composition root imports them from.
export {
  createTenantSchema,
  type MigrateOptions,
  type MigrateProgress,
  type MigrateResult,
  migrateAll,
} from "./migrations/index.js";
