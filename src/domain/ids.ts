import { randomBytes } from "node:crypto";

// Ids are a prefix, `_`, then 26 characters of lowercase Crockford base32: 10 for the creation
// time in milliseconds (so ids sort by age) and 16 random (80 bits). Lowercase keeps them usable
// as parts of Postgres identifiers without quoting.
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

export type IdPrefix = "ten" | "evt" | "rev" | "rsv" | "alr";

function encodeTime(ms: number): string {
  let out = "";
  let t = ms;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return out;
}

function randomChars(n: number): string {
  const bytes = randomBytes(n);
  let out = "";
  for (let i = 0; i < n; i++) out += ALPHABET[(bytes[i] as number) % 32];
  return out;
}

export function newId(prefix: IdPrefix, nowMs: number = Date.now()): string {
  return `${prefix}_${encodeTime(nowMs)}${randomChars(16)}`;
}

const TENANT_ID = /^ten_[0-9a-hjkmnp-tv-z]{26}$/;

export function isTenantId(s: string): boolean {
  return TENANT_ID.test(s);
}

/**
 * The Postgres schema of a tenant, derived from the tenant's internal id only (never from a
 * name, slug or header). Throws on anything that is not a well-formed tenant id, so a schema name
 * can never carry input of another shape.
 */
export function tenantSchemaName(tenantId: string): string {
  if (!isTenantId(tenantId)) throw new Error("tenantSchemaName: not a tenant id");
  return `t_${tenantId.slice(4)}`;
}
