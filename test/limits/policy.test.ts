import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/domain/clock.js";
import { DomainError } from "../../src/domain/errors.js";
import {
  createMemoryOverrideSource,
  createPlanCache,
  createRateLimitPolicy,
  type FailMode,
  type LimitOutcome,
  type LimitSubject,
  OWNER_SCOPE,
  type RateLimitPolicyDeps,
} from "../../src/services/rate-limit/policy.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";
import { createRedisRateLimiter } from "../../src/store/redis/rate-limiter.js";
import { freePort, freshTenant } from "./helpers.js";

// The policy around the limiter: which buckets a caller gets (plan, override with expiry, owner
// keys), the denial cache, and what happens when the limiter cannot answer. Time is a manual
// clock shared by the policy and the in-process limiter, so expiry and retry are exact.

function setup(extra: Partial<RateLimitPolicyDeps> = {}) {
  const clock = new ManualClock();
  const limiter = createMemoryRateLimiter({ clock });
  const overrides = createMemoryOverrideSource();
  const errors: Array<{ err: unknown; n: number }> = [];
  const policy = createRateLimitPolicy({
    limiter,
    overrides,
    clock,
    failMode: "open",
    timeoutMs: 100,
    onError: (err, n) => errors.push({ err, n }),
    ...extra,
  });
  return { clock, limiter, overrides, policy, errors };
}

const tenantKey = (tenantId: string, keyId = "key_a"): LimitSubject => ({ keyId, owner: false, tenantId });

async function passes(check: () => Promise<LimitOutcome>, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) if ((await check()).allowed) ok++;
  return ok;
}

describe("limits of a caller", () => {
  it("the default (free) plan: key burst 20, tenant burst 40 shared by its keys", async () => {
    const { policy } = setup();
    const t = freshTenant();
    expect(await passes(() => policy.check(tenantKey(t, "key_a")), 25)).toBe(20);
    const refused = await policy.check(tenantKey(t, "key_a"));
    expect(refused).toMatchObject({
      allowed: false,
      tripped: { kind: "key", subject: "key:key_a", limit: { capacity: 20, refillPerSec: 10 }, remaining: 0 },
    });
    expect(await passes(() => policy.check(tenantKey(t, "key_b")), 20)).toBe(20);
    const tenantTrip = await policy.check(tenantKey(t, "key_c"));
    expect(tenantTrip).toMatchObject({ allowed: false, tripped: { kind: "tenant", subject: `tenant:${t}` } });
  });

  it("the tenant's plan picks the limits; an unknown plan gets the default", async () => {
    const plans: Record<string, string> = {};
    const { policy } = setup({ planOf: (id) => plans[id] });
    const pro = freshTenant();
    const odd = freshTenant();
    plans[pro] = "pro";
    plans[odd] = "platinum";
    expect((await policy.limitsFor(tenantKey(pro))).buckets.map((b) => b.capacity)).toEqual([200, 1000]);
    expect((await policy.limitsFor(tenantKey(odd))).buckets.map((b) => b.capacity)).toEqual([20, 40]);
  });

  it("a plan table passed in replaces the built-in one", async () => {
    const { policy } = setup({
      plans: {
        plans: { basic: { key: { capacity: 3, refillPerSec: 1 }, tenant: { capacity: 5, refillPerSec: 1 } } },
        defaultPlan: "basic",
      },
    });
    const t = freshTenant();
    expect(await passes(() => policy.check(tenantKey(t)), 10)).toBe(3);
  });

  it("an override applies until it expires, then the plan applies again", async () => {
    const { policy, overrides, clock } = setup();
    const t = freshTenant();
    overrides.set(t, { key: { capacity: 2, refillPerSec: 1 }, expiresAt: clock.now() + 60_000 });
    expect((await policy.limitsFor(tenantKey(t))).buckets.map((b) => b.capacity)).toEqual([2, 40]);
    expect(await passes(() => policy.check(tenantKey(t)), 5)).toBe(2);
    clock.advance(59_999);
    expect((await policy.limitsFor(tenantKey(t))).buckets.map((b) => b.capacity)).toEqual([2, 40]);
    clock.advance(1);
    expect((await policy.limitsFor(tenantKey(t))).buckets.map((b) => b.capacity)).toEqual([20, 40]);
    // The bucket had refilled to its 2 tokens; under the plan's capacity it keeps filling to 20.
    clock.advance(2_000);
    expect(await passes(() => policy.check(tenantKey(t)), 30)).toBe(20);
  });

  it("an override without expiry, and one for the tenant bucket only", async () => {
    const { policy, overrides, clock } = setup();
    const t = freshTenant();
    overrides.set(t, { tenant: { capacity: 500, refillPerSec: 100 } });
    clock.advance(10 * 365 * 86_400_000);
    expect((await policy.limitsFor(tenantKey(t))).buckets.map((b) => b.capacity)).toEqual([20, 500]);
    overrides.set(t, { tenant: { capacity: 500, refillPerSec: 100 }, expiresAt: null });
    expect((await policy.limitsFor(tenantKey(t))).buckets.map((b) => b.capacity)).toEqual([20, 500]);
  });

  it("owner keys: one bucket of their own under the `owner` pseudo-tenant, also when acting as a tenant", async () => {
    const { policy } = setup();
    const t = freshTenant();
    const collection = await policy.limitsFor({ keyId: "key_own", owner: true, tenantId: null });
    const actingAs = await policy.limitsFor({ keyId: "key_own", owner: true, tenantId: t });
    for (const l of [collection, actingAs]) {
      expect(l.tenantId).toBe(OWNER_SCOPE);
      expect(l.buckets).toEqual([{ kind: "key", id: "key:key_own", capacity: 10_000, refillPerSec: 5000 }]);
    }
    // An owner working on a tenant at its limit is not refused by the tenant's bucket.
    await passes(() => policy.check(tenantKey(t, "key_x")), 40);
    await passes(() => policy.check(tenantKey(t, "key_y")), 40);
    expect((await policy.check(tenantKey(t, "key_z"))).allowed).toBe(false);
    expect((await policy.check({ keyId: "key_own", owner: true, tenantId: t })).allowed).toBe(true);
  });
});

describe("stepped buckets", () => {
  it("a stepped key bucket (e.g. from an override) refills in whole steps; the denial cache follows it", async () => {
    const { policy, overrides, clock } = setup();
    const t = freshTenant();
    overrides.set(t, { key: { capacity: 2, refillPerSec: 1, refillAmount: 2, refillIntervalMs: 2000 } });
    expect(await passes(() => policy.check(tenantKey(t)), 2)).toBe(2);
    expect(await policy.check(tenantKey(t))).toMatchObject({ allowed: false, retryAfterMs: 2000 });
    // Continuous refill at the same average rate would have one token back after 1 s.
    clock.advance(1999);
    expect(await policy.check(tenantKey(t))).toMatchObject({ allowed: false, retryAfterMs: 1 });
    expect(policy.stats().cachedDenials).toBe(1);
    clock.advance(1);
    expect(await passes(() => policy.check(tenantKey(t)), 3)).toBe(2);
  });
});

describe("denial cache", () => {
  it("refuses a denied bucket locally until its retry time, then asks the limiter again", async () => {
    const { policy, clock } = setup();
    const t = freshTenant();
    await passes(() => policy.check(tenantKey(t)), 20);
    const first = await policy.check(tenantKey(t));
    expect(first).toMatchObject({ allowed: false, retryAfterMs: 100 });
    const calls = policy.stats().limiterCalls;
    clock.advance(40);
    const cached = await policy.check(tenantKey(t));
    expect(cached).toMatchObject({ allowed: false, retryAfterMs: 60, tripped: { kind: "key", remaining: 0 } });
    expect(policy.stats()).toMatchObject({ limiterCalls: calls, cachedDenials: 1 });
    // Another key of the tenant is not refused by this key's denial.
    expect((await policy.check(tenantKey(t, "key_b"))).allowed).toBe(true);
    clock.advance(60);
    expect((await policy.check(tenantKey(t))).allowed).toBe(true);
    expect(policy.stats().limiterCalls).toBe(calls + 2);
  });

  it("runs on the limiter's clock, not the application's", async () => {
    // As with Redis, whose retry times are real time, while tests freeze the application clock.
    const limiterClock = new ManualClock();
    const { policy, clock } = setup({
      limiter: createMemoryRateLimiter({ clock: limiterClock }),
      limiterClock,
    });
    const t = freshTenant();
    await passes(() => policy.check(tenantKey(t)), 21);
    clock.advance(10_000);
    expect((await policy.check(tenantKey(t))).allowed).toBe(false);
    expect(policy.stats().cachedDenials).toBe(1);
    limiterClock.advance(100);
    expect((await policy.check(tenantKey(t))).allowed).toBe(true);
  });

  it("a denial recorded under other limits is not used after an override", async () => {
    const { policy, overrides } = setup();
    const t = freshTenant();
    await passes(() => policy.check(tenantKey(t)), 21);
    overrides.set(t, { key: { capacity: 100, refillPerSec: 50 } });
    // The bucket keeps its state (empty), but is asked again, under the new refill.
    const d = await policy.check(tenantKey(t));
    expect(policy.stats().cachedDenials).toBe(0);
    expect(d).toMatchObject({ allowed: false, retryAfterMs: 20 });
  });

  it("stays bounded", async () => {
    const { policy } = setup({ maxCachedDenials: 50, plans: { owner: { capacity: 1, refillPerSec: 0.001 } } });
    for (let i = 0; i < 500; i++) {
      const s: LimitSubject = { keyId: `key_${i}`, owner: true, tenantId: null };
      await policy.check(s);
      expect((await policy.check(s)).allowed).toBe(false);
    }
    // Not observable directly: 500 distinct denials went through a 50-entry cache without error,
    // and a recent denial is still answered locally.
    const before = policy.stats();
    expect((await policy.check({ keyId: "key_499", owner: true, tenantId: null })).allowed).toBe(false);
    expect(policy.stats().cachedDenials).toBe(before.cachedDenials + 1);
  });
});

describe("when the limiter cannot answer (Redis with nothing listening)", () => {
  const deadLimiter = async () =>
    createRedisRateLimiter({ url: `redis://127.0.0.1:${await freePort()}`, timeoutMs: 50 });

  it.each<FailMode>(["open", "closed"])("fail-%s", async (failMode) => {
    const limiter = await deadLimiter();
    const { policy, errors, clock } = setup({ limiter, failMode });
    try {
      for (let i = 0; i < 100; i++) {
        if (failMode === "open") {
          expect(await policy.check(tenantKey(freshTenant()))).toEqual({ allowed: true, tightest: null });
        } else {
          const err = await policy.check(tenantKey(freshTenant())).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(DomainError);
          expect(err).toMatchObject({ code: "unavailable", reason: "BACKEND_UNAVAILABLE" });
        }
      }
      // One report per second of clock time, carrying how many failures it stands for.
      expect(errors.map((e) => e.n)).toEqual([1]);
      clock.advance(1000);
      await policy.check(tenantKey(freshTenant())).catch(() => {});
      expect(errors.map((e) => e.n)).toEqual([1, 100]);
      expect(policy.stats().failures).toBe(101);
    } finally {
      await limiter.close();
    }
  });
});

describe("plan cache", () => {
  it("answers synchronously once loaded, reloads after its TTL, and falls back to the default on errors", async () => {
    const clock = new ManualClock();
    let loads = 0;
    let plan: string | Error = "pro";
    const cache = createPlanCache({
      clock,
      ttlMs: 1000,
      load: async () => {
        loads++;
        if (plan instanceof Error) throw plan;
        return plan;
      },
      onError: () => {},
    });
    const a = cache.planOf("ten_a");
    const b = cache.planOf("ten_a");
    expect(a).toBeInstanceOf(Promise);
    expect(await a).toBe("pro");
    expect(await b).toBe("pro");
    expect(loads).toBe(1);
    expect(cache.planOf("ten_a")).toBe("pro");
    plan = "enterprise";
    cache.invalidate("ten_a");
    expect(await cache.planOf("ten_a")).toBe("enterprise");
    clock.advance(1000);
    plan = new Error("database down");
    expect(await cache.planOf("ten_a")).toBeNull();
    expect(cache.planOf("ten_a")).toBeNull();
    clock.advance(1000);
    plan = "pro";
    expect(await cache.planOf("ten_a")).toBe("pro");
    expect(loads).toBe(4);
  });
});
