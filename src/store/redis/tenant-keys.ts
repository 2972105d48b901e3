import type { Redis } from "ioredis";

/**
 * Deletes every Redis key of a tenant: rate-limit buckets (`rl:{<id>}:…`) and quota counters and
 * reservations (`q:{<id>}:…`). All of them carry the tenant id as their hash tag, so one SCAN
 * pattern finds them. Keys expire by themselves anyway; this makes a deletion leave nothing
 * behind at once. Each SCAN and UNLINK is bounded by the connection's command timeout, and the
 * whole purge by `deadlineMs`.
 */
export async function purgeTenantKeys(redis: Redis, tenantId: string, deadlineMs = 2000): Promise<number> {
  if (!/^ten_[0-9a-z]{26}$/.test(tenantId)) throw new Error("purgeTenantKeys: not a tenant id");
  const until = Date.now() + deadlineMs;
  let cursor = "0";
  let removed = 0;
  do {
    if (Date.now() > until) throw new Error(`purge of ${tenantId}'s Redis keys ran past ${deadlineMs} ms`);
    const [next, keys] = await redis.scan(cursor, "MATCH", `*{${tenantId}}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== "0");
  return removed;
}
