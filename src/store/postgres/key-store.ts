import type { Knex } from "knex";
import type { Credential, KeyRecord, TenantStatus } from "../../domain/types.js";
import type { KeyListQuery, KeyStore, LastUsedUpdate } from "../ports.js";
import { type KeyRow, keyFromRow, keyToRow } from "./rows.js";
import { firstOf } from "./sql.js";

/** Restricts a query to one tenant's keys, or to owner keys when the tenant is null. */
function scoped(b: Knex.QueryBuilder, tenantId: string | null): Knex.QueryBuilder {
  return tenantId === null ? b.whereNull("tenant_id") : b.where("tenant_id", tenantId);
}

/**
 * Page positions carry a key's public id; accept the record id form (`key_<kid>`) too, since a
 * kid never contains an underscore.
 */
function kidOf(id: string): string {
  return id.startsWith("key_") ? id.slice(4) : id;
}

/** One row per kid: the latest time for the current secret and for the previous one. */
export function coalesceTouches(
  updates: readonly LastUsedUpdate[],
): Array<{ kid: string; at: string | null; prev_at: string | null }> {
  const byKid = new Map<string, { at: number | null; prev: number | null }>();
  for (const u of updates) {
    const cur = byKid.get(u.kid) ?? { at: null, prev: null };
    if (u.previous) cur.prev = cur.prev === null ? u.at : Math.max(cur.prev, u.at);
    else cur.at = cur.at === null ? u.at : Math.max(cur.at, u.at);
    byKid.set(u.kid, cur);
  }
  // ISO strings are parsed exactly by timestamptz; they travel inside one jsonb parameter.
  return [...byKid].map(([kid, v]) => ({
    kid,
    at: v.at === null ? null : new Date(v.at).toISOString(),
    prev_at: v.prev === null ? null : new Date(v.prev).toISOString(),
  }));
}

export function createKeyStore(knex: Knex): KeyStore {
  const keys = () => knex("keys").withSchema("tenantd");

  return {
    async insert(key: KeyRecord): Promise<void> {
      await keys().insert(keyToRow(key));
    },

    async credential(kid: string): Promise<Credential | null> {
      const row = await firstOf<KeyRow & { tenant_status: string | null }>(
        knex.raw(
          `select k.*, t.status as tenant_status
           from tenantd.keys k left join tenantd.tenants t on t.id = k.tenant_id
           where k.kid = ?`,
          [kid],
        ),
      );
      if (!row) return null;
      return { key: keyFromRow(row), tenantStatus: row.tenant_status as TenantStatus | null };
    },

    async get(tenantId: string | null, kid: string): Promise<KeyRecord | null> {
      const row = (await scoped(keys().where({ kid }), tenantId).first()) as KeyRow | undefined;
      return row ? keyFromRow(row) : null;
    },

    async list(q: KeyListQuery): Promise<KeyRecord[]> {
      const b = scoped(keys().select("*"), q.tenantId);
      if (!q.includeRevoked) b.whereNull("revoked_at");
      if (q.after) b.whereRaw("(created_at, kid) < (?, ?)", [new Date(q.after.t), kidOf(q.after.id)]);
      const rows = (await b
        .orderBy([
          { column: "created_at", order: "desc" },
          { column: "kid", order: "desc" },
        ])
        .limit(q.limit)) as KeyRow[];
      return rows.map(keyFromRow);
    },

    async revoke(tenantId: string | null, kid: string, at: number): Promise<KeyRecord | null> {
      // coalesce keeps the first revocation time when a key is revoked twice.
      const [row] = (await scoped(keys().where({ kid }), tenantId)
        .update({ revoked_at: knex.raw("coalesce(revoked_at, ?)", [new Date(at)]) })
        .returning("*")) as KeyRow[];
      return row ? keyFromRow(row) : null;
    },

    async rotate(
      tenantId: string | null,
      kid: string,
      next: { hash: string; lastFour: string; at: number; prevValidUntil: number },
    ): Promise<KeyRecord | null> {
      // The replaced secret becomes the previous one, and its last use moves with it:
      // last_used_at describes the current secret, prev_last_used_at the previous one. Column
      // references on the right-hand side read the row as it was before the update.
      const [row] = (await scoped(keys().where({ kid }), tenantId)
        .update({
          prev_hash: knex.ref("hash"),
          prev_valid_until: new Date(next.prevValidUntil),
          prev_last_used_at: knex.ref("last_used_at"),
          hash: next.hash,
          last_four: next.lastFour,
          rotated_at: new Date(next.at),
          last_used_at: null,
        })
        .returning("*")) as KeyRow[];
      return row ? keyFromRow(row) : null;
    },

    async touch(updates: LastUsedUpdate[]): Promise<void> {
      if (updates.length === 0) return;
      // One statement for the whole batch. GREATEST ignores nulls, so a time only ever moves
      // forward: a flush that arrives late (or twice) cannot overwrite a later time.
      await knex.raw(
        `update tenantd.keys k set
           last_used_at = greatest(k.last_used_at, u.at),
           prev_last_used_at = greatest(k.prev_last_used_at, u.prev_at)
         from jsonb_to_recordset(?::jsonb) as u(kid text, at timestamptz, prev_at timestamptz)
         where k.kid = u.kid`,
        [JSON.stringify(coalesceTouches(updates))],
      );
    },

    async countActiveOwnerKeys(permission: string, now: number): Promise<number> {
      const row = await firstOf<{ n: number }>(
        knex.raw(
          `select count(*)::int as n from tenantd.keys
           where tenant_id is null and revoked_at is null and (expires_at is null or expires_at > ?)
             and permissions @> ?::jsonb`,
          [new Date(now), JSON.stringify([permission])],
        ),
      );
      return row?.n ?? 0;
    },

    async anyOwnerKey(): Promise<boolean> {
      const row = await firstOf<{ any: boolean }>(
        knex.raw("select exists (select 1 from tenantd.keys where tenant_id is null) as any"),
      );
      return row?.any === true;
    },
  };
}
