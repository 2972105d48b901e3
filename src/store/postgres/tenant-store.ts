import type { Knex } from "knex";
import { tenantSchemaName } from "../../domain/ids.js";
import type { TenantPatch, TenantRecord, Tombstone } from "../../domain/types.js";
import type { CreateTenantResult, IdempotencyClaim, TenantListQuery, TenantStore } from "../ports.js";
import { createTenantSchema } from "./migrations/migrator.js";
import { quoteSchema } from "./migrations/tenant.js";
import {
  type TenantRow,
  type TombstoneRow,
  tenantFromRow,
  tenantPatchToRow,
  tenantToRow,
  tombstoneFromRow,
  uniqueViolation,
} from "./rows.js";
import { firstOf, rowsOf } from "./sql.js";

const TENANTS = "tenantd.tenants";

export function createTenantStore(knex: Knex): TenantStore {
  const tenants = (db: Knex | Knex.Transaction = knex) => db("tenants").withSchema("tenantd");

  return {
    async create(tenant: TenantRecord, idem?: IdempotencyClaim): Promise<CreateTenantResult> {
      try {
        return await knex.transaction(async (trx): Promise<CreateTenantResult> => {
          if (idem) {
            // The claim's primary key decides between concurrent identical requests: the first
            // insert wins, the others wait on its row lock until it commits, then insert nothing
            // and read the winner's claim (visible to their next statement under READ
            // COMMITTED). If the winner rolls back, a waiter's insert goes through instead.
            // Claims bind their request id for ttlMs only: an expired claim for this id is
            // dropped first, and now and then every expired claim is purged so the table stays
            // small.
            const cutoff = new Date(tenant.createdAt - idem.ttlMs);
            await trx.raw("delete from tenantd.idempotency where scope = ? and request_id = ? and created_at <= ?", [
              idem.scope,
              idem.requestId,
              cutoff,
            ]);
            if (Math.random() < 0.01) {
              await trx.raw("delete from tenantd.idempotency where created_at <= ?", [cutoff]);
            }
            const claimed = await rowsOf(
              trx.raw(
                `insert into tenantd.idempotency (scope, request_id, request_hash, resource_id, created_at)
                 values (?, ?, ?, ?, ?) on conflict (scope, request_id) do nothing returning request_id`,
                [idem.scope, idem.requestId, idem.requestHash, tenant.id, new Date(tenant.createdAt)],
              ),
            );
            if (claimed.length === 0) {
              const prior = await firstOf<{ request_hash: string; resource_id: string }>(
                trx.raw(
                  "select request_hash, resource_id from tenantd.idempotency where scope = ? and request_id = ?",
                  [idem.scope, idem.requestId],
                ),
              );
              if (!prior) throw new Error("idempotency claim disappeared while being read; retry the request");
              if (prior.request_hash !== idem.requestHash) return { kind: "conflict" };
              const row = await firstOf<TenantRow>(
                trx.raw(`select * from ${TENANTS} where id = ?`, [prior.resource_id]),
              );
              // Deleting a tenant removes its claims in the same transaction, so the row exists.
              if (!row) throw new Error(`idempotency claim points at missing tenant ${prior.resource_id}`);
              return { kind: "replayed", tenant: tenantFromRow(row) };
            }
          }
          const [row] = (await tenants(trx).insert(tenantToRow(tenant)).returning("*")) as TenantRow[];
          await createTenantSchema(trx, tenant.id);
          return { kind: "created", tenant: tenantFromRow(row!) };
        });
      } catch (e) {
        // The unique index is the only safe judge of slug uniqueness under concurrency; the
        // whole transaction (claim included) rolled back, so a retry starts clean.
        if (uniqueViolation(e) === "tenants_slug_key") return { kind: "slug_taken" };
        throw e;
      }
    },

    async get(id: string): Promise<TenantRecord | null> {
      const row = (await tenants().where({ id }).first()) as TenantRow | undefined;
      return row ? tenantFromRow(row) : null;
    },

    async list(q: TenantListQuery): Promise<TenantRecord[]> {
      const b = tenants().select("*");
      if (q.status !== undefined) b.where("status", q.status);
      if (q.environment !== undefined) b.where("environment", q.environment);
      if (q.plan !== undefined) b.where("plan", q.plan);
      if (q.after) b.whereRaw("(created_at, id) < (?, ?)", [new Date(q.after.t), q.after.id]);
      const rows = (await b
        .orderBy([
          { column: "created_at", order: "desc" },
          { column: "id", order: "desc" },
        ])
        .limit(q.limit)) as TenantRow[];
      return rows.map(tenantFromRow);
    },

    async update(
      id: string,
      patch: TenantPatch,
      at: number,
      expectedVersion?: number,
    ): Promise<TenantRecord | null | "etag_mismatch"> {
      // Compare-and-set in the UPDATE itself: no read-modify-write window between check and write.
      const b = tenants()
        .update({ ...tenantPatchToRow(patch), updated_at: new Date(at), version: knex.raw("version + 1") })
        .where({ id });
      if (expectedVersion !== undefined) b.andWhere("version", expectedVersion);
      const [row] = (await b.returning("*")) as TenantRow[];
      if (row) return tenantFromRow(row);
      if (expectedVersion === undefined) return null;
      const exists = await tenants().where({ id }).first("id");
      return exists ? "etag_mismatch" : null;
    },

    async delete(id: string, deletedBy: string, at: number): Promise<Tombstone | null> {
      const schema = quoteSchema(tenantSchemaName(id));
      return knex.transaction(async (trx) => {
        // Lock the row first (migrateAll does the same) so concurrent deletes and migrations of
        // this tenant queue up on one lock instead of deadlocking on the schema's tables.
        const row = await firstOf<TenantRow>(trx.raw(`select * from ${TENANTS} where id = ? for update`, [id]));
        if (!row) return null;
        await trx.raw("delete from tenantd.keys where tenant_id = ?", [id]);
        const tomb = await firstOf<TombstoneRow>(
          trx.raw(
            `insert into tenantd.tombstones (tenant_id, slug, deleted_at, deleted_by) values (?, ?, ?, ?)
             on conflict (tenant_id) do update set slug = excluded.slug, deleted_at = excluded.deleted_at,
               deleted_by = excluded.deleted_by
             returning *`,
            [id, row.slug, new Date(at), deletedBy],
          ),
        );
        await trx.raw(`drop schema if exists ${schema} cascade`);
        // A replay of the create after the delete must not resurrect a pointer to nothing.
        await trx.raw("delete from tenantd.idempotency where resource_id = ?", [id]);
        await trx.raw(`delete from ${TENANTS} where id = ?`, [id]);
        return tombstoneFromRow(tomb!);
      });
    },

    async getTombstone(id: string): Promise<Tombstone | null> {
      const row = await firstOf<TombstoneRow>(knex.raw("select * from tenantd.tombstones where tenant_id = ?", [id]));
      return row ? tombstoneFromRow(row) : null;
    },

    async slugInUse(slug: string): Promise<boolean> {
      const row = await firstOf<{ used: boolean }>(
        knex.raw(
          `select exists (select 1 from ${TENANTS} where slug = ?)
               or exists (select 1 from tenantd.tombstones where slug = ?) as used`,
          [slug, slug],
        ),
      );
      return row?.used === true;
    },

    async count(): Promise<number> {
      const row = await firstOf<{ n: number }>(knex.raw(`select count(*)::int as n from ${TENANTS}`));
      return row?.n ?? 0;
    },
  };
}
