import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BucketSpec, RateLimiter } from "../../src/services/rate-limit/types.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";
import { freshTenant, LIMITERS, msSince, REDIS_URL, sleep, yieldToLoop } from "./helpers.js";

// The token-bucket guarantees, on both implementations of the port (Redis when REDIS_URL is set):
// concurrent callers never get more than capacity + refill × elapsed, the answer names the
// bucket that refused, a refusal charges nothing, and tenants never share a bucket.

/** 50 clients call `take` back to back for `ms`; returns what passed, per client key, and the elapsed time. */
async function hammer(
  limiter: RateLimiter,
  tenantId: string,
  bucketsOf: (client: number) => BucketSpec[],
  ms: number,
  clients = 50,
) {
  const admitted = new Map<number, number>();
  const tripped = new Map<number, number>();
  let calls = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      while (msSince(start) < ms) {
        const d = await limiter.take(tenantId, bucketsOf(c), 1);
        calls++;
        if (d.allowed) admitted.set(c, (admitted.get(c) ?? 0) + 1);
        else tripped.set(d.tripped, (tripped.get(d.tripped) ?? 0) + 1);
        // The memory limiter answers in a microtask; yielding lets the 50 clients interleave as
        // they would over a network.
        await yieldToLoop();
      }
    }),
  );
  const elapsedSec = msSince(start) / 1000;
  const total = [...admitted.values()].reduce((a, b) => a + b, 0);
  return { admitted, tripped, total, calls, elapsedSec };
}

describe.each(LIMITERS)("$name limiter", ({ skip, make }) => {
  let limiter: RateLimiter;
  beforeAll(async () => {
    if (!skip) limiter = await make();
  });
  afterAll(async () => {
    await limiter?.close();
  });

  it.skipIf(skip)(
    "50 concurrent clients on one bucket: admitted ≤ capacity + refill × time, 0 over-admission",
    async () => {
      const bucket: BucketSpec = { id: "tenant", capacity: 100, refillPerSec: 200 };
      const r = await hammer(limiter, freshTenant(), () => [bucket], 1500);
      const bound = bucket.capacity + bucket.refillPerSec * r.elapsedSec;
      const over = Math.max(0, r.total - Math.floor(bound));
      console.log(
        `[${skip ?? "run"}] one bucket: ${r.calls} calls in ${r.elapsedSec.toFixed(3)} s, admitted ${r.total}, bound ${bound.toFixed(1)}, over-admission ${over}`,
      );
      expect(over).toBe(0);
      // Not vacuous: the clients kept the bucket drained, so nearly everything the refill allowed passed.
      expect(r.total).toBeGreaterThan(bucket.capacity + bucket.refillPerSec * (r.elapsedSec - 0.3) * 0.8);
      expect(r.calls).toBeGreaterThan(r.total * 2);
    },
  );

  it.skipIf(skip)(
    "key ⊂ tenant: 50 clients over 5 keys; both bounds hold and the answer names the bucket",
    async () => {
      const tenant: BucketSpec = { id: "tenant", capacity: 60, refillPerSec: 60 };
      // key_0 is much tighter than the others, so that it runs dry while the tenant bucket is
      // what stops the other four keys' clients: both kinds of refusal must be reported.
      const keys: BucketSpec[] = [0, 1, 2, 3, 4].map((k) =>
        k === 0
          ? { id: "key:key_0", capacity: 5, refillPerSec: 2 }
          : { id: `key:key_${k}`, capacity: 20, refillPerSec: 10 },
      );
      const r = await hammer(limiter, freshTenant(), (c) => [keys[c % 5] as BucketSpec, tenant], 1500);
      const perKey = new Map<number, number>();
      for (const [c, n] of r.admitted) perKey.set(c % 5, (perKey.get(c % 5) ?? 0) + n);
      const tenantBound = tenant.capacity + tenant.refillPerSec * r.elapsedSec;
      const keyBound = (k: number) => {
        const b = keys[k] as BucketSpec;
        return b.capacity + b.refillPerSec * r.elapsedSec;
      };
      console.log(
        `[${skip ?? "run"}] key ⊂ tenant: admitted ${r.total} (bound ${tenantBound.toFixed(1)}), per key ${[0, 1, 2, 3, 4].map((k) => `${perKey.get(k) ?? 0}/${keyBound(k).toFixed(1)}`).join(" ")}, tripped key ${r.tripped.get(0) ?? 0} tenant ${r.tripped.get(1) ?? 0}`,
      );
      expect(r.total).toBeLessThanOrEqual(Math.floor(tenantBound));
      for (const [k, n] of perKey) expect(n).toBeLessThanOrEqual(Math.floor(keyBound(k)));
      expect(r.tripped.get(0) ?? 0).toBeGreaterThan(0);
      expect(r.tripped.get(1) ?? 0).toBeGreaterThan(0);
      expect([...r.tripped.keys()].every((i) => i === 0 || i === 1)).toBe(true);
    },
  );

  it.skipIf(skip)("a refusal names the tripped bucket and charges none", async () => {
    const t = freshTenant();
    const key: BucketSpec = { id: "key:key_a", capacity: 5, refillPerSec: 0.001 };
    const tenant: BucketSpec = { id: "tenant", capacity: 3, refillPerSec: 0.001 };
    for (let i = 0; i < 3; i++) {
      const d = await limiter.take(t, [key, tenant], 1);
      expect(d).toMatchObject({ allowed: true, tripped: -1, remaining: [4 - i, 2 - i], retryAfterMs: 0 });
    }
    const denied = await limiter.take(t, [key, tenant], 1);
    expect(denied.allowed).toBe(false);
    expect(denied.tripped).toBe(1);
    expect(denied.remaining).toEqual([2, 0]);
    expect(denied.retryAfterMs).toBeGreaterThan(900_000);
    // The key bucket kept its 2 tokens: a key alone (another tenant bucket) still gets exactly 2.
    const other: BucketSpec = { id: "tenant2", capacity: 100, refillPerSec: 0.001 };
    expect((await limiter.take(t, [key, other], 1)).remaining[0]).toBe(1);
    expect((await limiter.take(t, [key, other], 1)).remaining[0]).toBe(0);
    const keyTrip = await limiter.take(t, [key, other], 1);
    expect(keyTrip).toMatchObject({ allowed: false, tripped: 0 });
    // The tenant bucket was not charged by the refused call either.
    expect((await limiter.take(t, [other], 1)).remaining).toEqual([97]);
  });

  it.skipIf(skip)("when both lack tokens, the one needing the longer wait is reported", async () => {
    const t = freshTenant();
    const fast: BucketSpec = { id: "key:key_f", capacity: 1, refillPerSec: 100 };
    const slow: BucketSpec = { id: "tenant", capacity: 1, refillPerSec: 1 };
    expect((await limiter.take(t, [fast, slow], 1)).allowed).toBe(true);
    const d = await limiter.take(t, [fast, slow], 1);
    expect(d.allowed).toBe(false);
    expect(d.tripped).toBe(1);
    expect(d.retryAfterMs).toBeGreaterThan(500);
    expect(d.retryAfterMs).toBeLessThanOrEqual(1000);
  });

  it.skipIf(skip)("one tenant at its limit never changes another tenant's decisions", async () => {
    const hot = freshTenant();
    const cold = freshTenant();
    const bucket: BucketSpec = { id: "tenant", capacity: 10, refillPerSec: 0.001 };
    // 25 clients keep the hot tenant pinned at its limit while the cold tenant spends its burst.
    let stop = false;
    const load = Promise.all(
      Array.from({ length: 25 }, async () => {
        while (!stop) {
          await limiter.take(hot, [bucket], 1);
          await yieldToLoop();
        }
      }),
    );
    await sleep(50);
    const answers = [];
    for (let i = 0; i < 11; i++) {
      answers.push(await limiter.take(cold, [bucket], 1));
      await yieldToLoop();
    }
    stop = true;
    await load;
    expect(answers.slice(0, 10).map((d) => d.allowed)).toEqual(Array(10).fill(true));
    expect(answers.slice(0, 10).map((d) => d.remaining[0])).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    expect(answers[10]).toMatchObject({ allowed: false, tripped: 0 });
    expect((await limiter.take(hot, [bucket], 1)).allowed).toBe(false);
  });

  it.skipIf(skip)("a refused caller that waits retryAfterMs passes", async () => {
    const t = freshTenant();
    const b: BucketSpec = { id: "key:key_r", capacity: 1, refillPerSec: 20 };
    expect((await limiter.take(t, [b], 1)).allowed).toBe(true);
    const d = await limiter.take(t, [b], 1);
    expect(d.allowed).toBe(false);
    expect(d.retryAfterMs).toBeGreaterThan(0);
    expect(d.retryAfterMs).toBeLessThanOrEqual(50);
    expect(d.resetMs[0]).toBeLessThanOrEqual(50);
    await sleep(d.retryAfterMs + 5);
    expect((await limiter.take(t, [b], 1)).allowed).toBe(true);
  });

  it.skipIf(skip)("a cost above the capacity never passes; a cost up to it passes on a full bucket", async () => {
    const t = freshTenant();
    const b: BucketSpec = { id: "tenant", capacity: 5, refillPerSec: 1 };
    const d = await limiter.take(t, [b], 6);
    expect(d).toMatchObject({ allowed: false, tripped: 0, remaining: [5] });
    expect((await limiter.take(t, [b], 5)).remaining).toEqual([0]);
  });

  it.skipIf(skip)("refuses buckets that could never refill", async () => {
    await expect(limiter.take(freshTenant(), [{ id: "x", capacity: 1, refillPerSec: 0 }], 1)).rejects.toThrow(
      RangeError,
    );
    await expect(limiter.take(freshTenant(), [], 1)).rejects.toThrow(RangeError);
  });
});

describe.skipIf(!REDIS_URL)("redis and memory give the same answers", () => {
  it("for a random sequence of costs over two buckets (no refill in between to speak of)", async () => {
    const redisCase = LIMITERS.find((l) => l.name === "redis");
    const redis = await (redisCase as (typeof LIMITERS)[number]).make();
    const memory = createMemoryRateLimiter();
    try {
      const t = freshTenant();
      const keys = [0, 1, 2].map((k): BucketSpec => ({ id: `key:key_${k}`, capacity: 7 + k, refillPerSec: 0.0001 }));
      const tenant: BucketSpec = { id: "tenant", capacity: 15, refillPerSec: 0.0001 };
      let seed = 42;
      const rnd = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      for (let i = 0; i < 60; i++) {
        const specs = [keys[Math.floor(rnd() * 3)] as BucketSpec, tenant];
        const cost = 1 + Math.floor(rnd() * 3);
        const a = await redis.take(t, specs, cost);
        const b = await memory.take(t, specs, cost);
        expect({ i, allowed: a.allowed, tripped: a.tripped, remaining: a.remaining }).toEqual({
          i,
          allowed: b.allowed,
          tripped: b.tripped,
          remaining: b.remaining,
        });
      }
    } finally {
      await redis.close();
      await memory.close();
    }
  });
});
