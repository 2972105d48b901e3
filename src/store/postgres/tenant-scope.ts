import type { Knex } from "knex";
import { tenantSchemaName } from "../../domain/ids.js";
import { quoteSchema } from "./migrations/tenant.js";

/**
 * Runs `fn` in one transaction whose search_path is the tenant's schema and nothing else, so
 * unqualified table names resolve inside that tenant only (control tables are unreachable).
 *
 * The path is set with `set_config(…, true)`, which is transaction-local: Postgres restores the
 * session's value at commit or rollback, so a pooled connection never carries a tenant's path to
 * the next caller (a session-level `SET` would). The schema name comes from tenantSchemaName,
 * which accepts well-formed tenant ids only.
 */
export async function withTenantSchema<T>(
  knex: Knex,
  tenantId: string,
  fn: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  const path = quoteSchema(tenantSchemaName(tenantId));
  return knex.transaction(async (trx) => {
    await trx.raw("select set_config('search_path', ?, true)", [path]);
    return fn(trx);
  });
}
