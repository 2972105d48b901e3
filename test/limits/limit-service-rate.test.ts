// Named token buckets, CheckRateLimit and the owner's rate-limit overrides through a real server,
// and the fail modes when the counter store is unreachable (a real Redis client pointed at a
// port where nothing listens).
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ResourceLimit_Period as Period } from "../../gen/tenantd/v1/limit_pb.js";
import { expectError } from "../helpers/app.js";
import { REDIS_URL } from "./helpers.js";
import { deadRedisQuotaStore, type LimitHarness, startLimitHarness } from "./limit-harness.js";

let lh: LimitHarness;
beforeAll(async () => {
  lh = await startLimitHarness();
});
afterAll(async () => {
  await lh?.close();
});

// A refill slow enough that no token comes back during a test, on either limiter (the Redis one
// reads Redis' own clock).
const SLOW = 0.001;

describe("GetRateLimitBuckets / UpdateRateLimitBuckets", () => {
  it("replaces the list with an etag; both refill forms round-trip", async () => {
    const t = await lh.h.newTenant();
    const o = lh.h.as(t.key);
    expect(await lh.limits.getRateLimitBuckets({}, o)).toMatchObject({ buckets: [], etag: 'W/"0"' });
    const up = await lh.limits.updateRateLimitBuckets(
      {
        buckets: [
          { name: "llm.requests", capacity: 10n, refillPerSecond: 2 },
          { name: "exports", capacity: 5n, refillAmount: 5n, refillInterval: { seconds: 3600n } },
        ],
        etag: 'W/"0"',
      },
      o,
    );
    expect(up.etag).toBe('W/"1"');
    const got = await lh.limits.getRateLimitBuckets({}, o);
    expect(
      got.buckets.map((b) => [b.name, b.capacity, b.refillPerSecond, b.refillAmount, b.refillInterval?.seconds]),
    ).toEqual([
      ["llm.requests", 10n, 2, 0n, undefined],
      ["exports", 5n, 0, 5n, 3600n],
    ]);
    await expectError(
      lh.limits.updateRateLimitBuckets({ buckets: [], etag: 'W/"0"' }, o),
      Code.Aborted,
      "ETAG_MISMATCH",
    );
    // Both refill forms, or none, are refused; so are duplicate names.
    await expectError(
      lh.limits.updateRateLimitBuckets({ buckets: [{ name: "x", capacity: 1n }] }, o),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
    await expectError(
      lh.limits.updateRateLimitBuckets(
        {
          buckets: [
            { name: "x", capacity: 1n, refillPerSecond: 1 },
            { name: "x", capacity: 2n, refillPerSecond: 1 },
          ],
        },
        o,
      ),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
  });
});

describe("CheckRateLimit", () => {
  it("takes tokens from a named bucket per subject until it is empty", async () => {
    const t = await lh.h.newTenant();
    const o = lh.h.as(t.key);
    await lh.limits.updateRateLimitBuckets({ buckets: [{ name: "search", capacity: 3n, refillPerSecond: SLOW }] }, o);
    const outs = [];
    for (let i = 0; i < 4; i++) outs.push(await lh.limits.checkRateLimit({ bucket: "search", subject: "user-1" }, o));
    expect(outs.map((r) => [r.allowed, r.remaining])).toEqual([
      [true, 2n],
      [true, 1n],
      [true, 0n],
      [false, 0n],
    ]);
    expect(outs[3]?.limit).toBe(3n);
    expect(Number(outs[3]?.retryAfter?.seconds ?? 0n)).toBeGreaterThan(0);
    expect(outs[0]?.retryAfter?.seconds ?? 0n).toBe(0n);
    // Another subject has its own bucket; cost 0 reads without taking.
    expect((await lh.limits.checkRateLimit({ bucket: "search", subject: "user-2" }, o)).allowed).toBe(true);
    const peek = await lh.limits.checkRateLimit({ bucket: "search", subject: "user-2", cost: 0n }, o);
    expect(peek).toMatchObject({ allowed: true, remaining: 2n });
    expect((await lh.limits.checkRateLimit({ bucket: "search", subject: "user-2", cost: 2n }, o)).allowed).toBe(true);
  });

  it("concurrent takes never admit more than the capacity", async () => {
    const t = await lh.h.newTenant();
    const o = lh.h.as(t.key);
    const definition = { capacity: 20n, refillPerSecond: SLOW };
    const outs = await Promise.all(
      Array.from({ length: 60 }, () => lh.limits.checkRateLimit({ bucket: "burst", subject: "s", definition }, o)),
    );
    expect(outs.filter((r) => r.allowed)).toHaveLength(20);
  });

  it("an unknown bucket without a definition is not found; a cost above the capacity is invalid", async () => {
    const t = await lh.h.newTenant();
    const o = lh.h.as(t.key);
    await expectError(
      lh.limits.checkRateLimit({ bucket: "nope", subject: "s" }, o),
      Code.NotFound,
      "RESOURCE_NOT_FOUND",
    );
    await expectError(
      lh.limits.checkRateLimit(
        { bucket: "b", subject: "s", cost: 6n, definition: { capacity: 5n, refillPerSecond: 1 } },
        o,
      ),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
    await expectError(
      lh.limits.checkRateLimit(
        { bucket: "b", subject: "s", definition: { name: "other", capacity: 5n, refillPerSecond: 1 } },
        o,
      ),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
  });

  it("a stepped bucket gives tokens back in whole steps, and says when the next step comes", async () => {
    const t = await lh.h.newTenant();
    const o = lh.h.as(t.key);
    await lh.limits.updateRateLimitBuckets(
      { buckets: [{ name: "exports", capacity: 2n, refillAmount: 2n, refillInterval: { seconds: 3600n } }] },
      o,
    );
    const check = () => lh.limits.checkRateLimit({ bucket: "exports", subject: "s" }, o);
    expect((await check()).allowed).toBe(true);
    expect((await check()).allowed).toBe(true);
    const refused = await check();
    expect(refused.allowed).toBe(false);
    // The next step is an hour after the first take (the Redis limiter's clock has moved a little).
    const retrySec = Number(refused.retryAfter?.seconds ?? 0n) + (refused.retryAfter?.nanos ?? 0) / 1e9;
    expect(retrySec).toBeGreaterThan(3590);
    expect(retrySec).toBeLessThanOrEqual(3600);
    if (REDIS_URL) return;
    // In process, on the harness clock: half an hour on, a continuous refill at the same
    // average rate would have a token back; the stepped bucket has none until the step.
    lh.h.clock.advance(1800_000);
    expect(await check()).toMatchObject({ allowed: false, retryAfter: { seconds: 1800n } });
    lh.h.clock.advance(1800_000);
    expect(await check()).toMatchObject({ allowed: true, remaining: 1n });
  });

  it("buckets of two tenants with the same name and subject are separate", async () => {
    const a = await lh.h.newTenant();
    const b = await lh.h.newTenant();
    const definition = { capacity: 1n, refillPerSecond: SLOW };
    expect((await lh.limits.checkRateLimit({ bucket: "x", subject: "s", definition }, lh.h.as(a.key))).allowed).toBe(
      true,
    );
    expect((await lh.limits.checkRateLimit({ bucket: "x", subject: "s", definition }, lh.h.as(b.key))).allowed).toBe(
      true,
    );
    expect((await lh.limits.checkRateLimit({ bucket: "x", subject: "s", definition }, lh.h.as(a.key))).allowed).toBe(
      false,
    );
  });
});

describe("GetRateLimitOverride / SetRateLimitOverride", () => {
  it("the plan applies until an override is set; the override ends by itself at its expiry", async () => {
    const t = await lh.h.newTenant();
    const owner = lh.h.as(lh.h.ownerKey);
    const before = await lh.limits.getRateLimitOverride({ tenantId: t.tenant.id }, owner);
    expect(before.override).toBeUndefined();
    expect(before.plan).toBe(t.tenant.plan);
    const planKeyBucket = before.effectivePerKey;
    expect(planKeyBucket?.capacity).toBeGreaterThan(0n);

    const expireAt = lh.h.clock.now() + 60_000;
    const set = await lh.limits.setRateLimitOverride(
      {
        tenantId: t.tenant.id,
        perTenant: { capacity: 5000n, refillPerSecond: 2500 },
        expireTime: { seconds: BigInt(Math.ceil(expireAt / 1000) + 3600), nanos: 0 },
      },
      owner,
    );
    expect(set.override?.perTenant?.capacity).toBe(5000n);
    expect(set.override?.updateKeyId).toMatch(/^key_/);
    expect(set.effectivePerTenant?.capacity).toBe(5000n);
    // per_key unset: the plan's per-key bucket still applies.
    expect(set.effectivePerKey).toEqual(planKeyBucket);
    // The rate-limit policy's cache sees it.
    expect(await lh.overrideCache.get(t.tenant.id)).toMatchObject({ tenant: { capacity: 5000, refillPerSec: 2500 } });

    lh.h.clock.advance(3_700_000);
    const after = await lh.limits.getRateLimitOverride({ tenantId: t.tenant.id }, owner);
    expect(after.override).toBeUndefined();
    expect(after.effectivePerTenant).toEqual(before.effectivePerTenant);
  });

  it("neither bucket removes the override; the change is audited", async () => {
    const t = await lh.h.newTenant();
    const owner = lh.h.as(lh.h.ownerKey);
    await lh.limits.setRateLimitOverride(
      { tenantId: t.tenant.id, perKey: { capacity: 7n, refillPerSecond: 1 } },
      owner,
    );
    expect((await lh.limits.getRateLimitOverride({ tenantId: t.tenant.id }, owner)).override?.perKey?.capacity).toBe(
      7n,
    );
    const removed = await lh.limits.setRateLimitOverride({ tenantId: t.tenant.id }, owner);
    expect(removed.override).toBeUndefined();
    expect((await lh.limits.getRateLimitOverride({ tenantId: t.tenant.id }, owner)).override).toBeUndefined();
    const events = await lh.h.app.stores.audit.list(t.tenant.id, { limit: 50 });
    expect(events.filter((e) => e.method === "tenantd.v1.LimitService/SetRateLimitOverride")).toHaveLength(2);
  });

  it("is for owner keys; unknown tenants are not found; an expiry in the past is invalid", async () => {
    const t = await lh.h.newTenant();
    const owner = lh.h.as(lh.h.ownerKey);
    await expectError(
      lh.limits.getRateLimitOverride({ tenantId: t.tenant.id }, lh.h.as(t.key)),
      Code.PermissionDenied,
      "OWNER_KEY_REQUIRED",
    );
    await expectError(
      lh.limits.getRateLimitOverride({ tenantId: "ten_00000000000000000000000000" }, owner),
      Code.NotFound,
      "TENANT_NOT_FOUND",
    );
    await expectError(
      lh.limits.setRateLimitOverride(
        { tenantId: t.tenant.id, perKey: { capacity: 1n, refillPerSecond: 1 }, expireTime: { seconds: 1n, nanos: 0 } },
        owner,
      ),
      Code.InvalidArgument,
      "FIELD_INVALID",
    );
  });
});

describe("fail modes when the counter store is unreachable", () => {
  const limits = [{ resource: "f", metric: "c", period: Period.DAY, limit: 1n }];

  it("fail-closed answers UNAVAILABLE BACKEND_UNAVAILABLE, promptly", async () => {
    const closed = await startLimitHarness({ quota: deadRedisQuotaStore(), quotaFailMode: "closed", timeoutMs: 200 });
    try {
      const t = await closed.h.newTenant();
      const o = closed.h.as(t.key);
      await closed.limits.updateResourceLimits({ limits }, o);
      const started = Date.now();
      await expectError(
        closed.limits.checkAndTrackResource({ resource: "f", metric: "c" }, o),
        Code.Unavailable,
        "BACKEND_UNAVAILABLE",
      );
      expect(Date.now() - started).toBeLessThan(2000);
      await expectError(closed.limits.getResourceUsage({}, o), Code.Unavailable, "BACKEND_UNAVAILABLE");
    } finally {
      await closed.close();
    }
  });

  it("fail-open allows decisions and says nothing is known; reads still answer UNAVAILABLE", async () => {
    const open = await startLimitHarness({ quota: deadRedisQuotaStore(), quotaFailMode: "open", timeoutMs: 200 });
    try {
      const t = await open.h.newTenant();
      const o = open.h.as(t.key);
      await open.limits.updateResourceLimits({ limits }, o);
      for (let i = 0; i < 3; i++) {
        expect(await open.limits.checkAndTrackResource({ resource: "f", metric: "c" }, o)).toMatchObject({
          allowed: true,
          limit: -1n,
          usages: [],
        });
      }
      expect((await open.limits.checkResource({ resource: "f", metric: "c" }, o)).allowed).toBe(true);
      await expectError(open.limits.getResourceUsage({}, o), Code.Unavailable, "BACKEND_UNAVAILABLE");
    } finally {
      await open.close();
    }
  });
});
