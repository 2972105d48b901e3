import type { Knex } from "knex";
import type { PagePosition } from "../../domain/page-token.js";
import type { AuditEvent } from "../../domain/types.js";
import type { AuditStore } from "../ports.js";
import { type AuditRow, auditFromRow, auditToRow } from "./rows.js";
import { withTenantSchema } from "./tenant-scope.js";

// The audit trail lives inside each tenant's schema, so it goes with the tenant on delete and
// can only be reached through withTenantSchema: the table names below are unqualified on purpose.

export function createAuditStore(knex: Knex): AuditStore {
  return {
    async append(event: AuditEvent): Promise<void> {
      await withTenantSchema(knex, event.tenantId, async (trx) => {
        await trx("audit_events").insert(auditToRow(event));
      });
    },

    async list(tenantId: string, q: { after?: PagePosition; limit: number }): Promise<AuditEvent[]> {
      return withTenantSchema(knex, tenantId, async (trx) => {
        const b = trx("audit_events").select("*");
        if (q.after) b.whereRaw("(created_at, id) < (?, ?)", [new Date(q.after.t), q.after.id]);
        const rows = (await b
          .orderBy([
            { column: "created_at", order: "desc" },
            { column: "id", order: "desc" },
          ])
          .limit(q.limit)) as AuditRow[];
        return rows.map((r) => auditFromRow(tenantId, r));
      });
    },
  };
}
