// Deleting a tenant leaves no Redis keys behind: its rate-limit buckets and quota counters are
// removed at once (they would otherwise expire by themselves).
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ResourceLimit_Period as Period } from "../../gen/tenantd/v1/limit_pb.js";
import { LimitService } from "../../gen/tenantd/v1/limit_service_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { type Harness, startHarness } from "../helpers/app.js";

const redisUrl = process.env.REDIS_URL;

describe.skipIf(!redisUrl)("DeleteTenant with Redis", () => {
  let h: Harness;
  let redis: Redis;
  beforeAll(async () => {
    // Buckets that take a while to refill, so that their keys exist when the tenant is deleted
    // (a full bucket's key expires at once).
    const slow = { capacity: 1000, refillPerSec: 1 };
    h = await startHarness({
      rateLimitPlans: {
        plans: { free: { key: slow, tenant: slow } },
        owner: { capacity: 1e12, refillPerSec: 1e12 },
      },
    });
    redis = new Redis(redisUrl as string);
  });
  afterAll(async () => {
    redis?.disconnect();
    await h?.close();
  });

  async function keysOf(tenantId: string): Promise<string[]> {
    const found: string[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `*{${tenantId}}*`, "COUNT", 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== "0");
    return found;
  }

  it("removes the tenant's rate-limit buckets and quota counters", async () => {
    const { tenant, key } = await h.newTenant();
    const limits = h.client(LimitService, "connect");
    await limits.updateResourceLimits(
      { limits: [{ resource: "workflow", metric: "count", period: Period.DAY, limit: 10n }] },
      h.as(key),
    );
    await limits.checkAndTrackResource({ resource: "workflow", metric: "count", amount: 1n }, h.as(key));
    const before = await keysOf(tenant.id);
    expect(before.some((k) => k.startsWith("rl:"))).toBe(true);
    expect(before.some((k) => k.startsWith("q:"))).toBe(true);

    await h.client(TenantService, "connect").deleteTenant({ tenantId: tenant.id }, h.as(h.ownerKey));
    expect(await keysOf(tenant.id)).toEqual([]);
  });
});
