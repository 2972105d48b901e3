import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/domain/clock.js";
import type { BucketSpec } from "../../src/services/rate-limit/types.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";

// The in-process limiter under an injected clock: exact refill arithmetic, a model-based check
// of the admission bound over random schedules, and bounded memory.

describe("memory limiter, exact under a manual clock", () => {
  it("refills continuously and reports retry and reset times", async () => {
    const clock = new ManualClock();
    const l = createMemoryRateLimiter({ clock });
    const b: BucketSpec = { id: "key:key_a", capacity: 5, refillPerSec: 2 };
    for (let i = 4; i >= 0; i--) expect((await l.take("ten_a", [b], 1)).remaining).toEqual([i]);
    expect(await l.take("ten_a", [b], 1)).toEqual({
      allowed: false,
      tripped: 0,
      remaining: [0],
      retryAfterMs: 500,
      resetMs: [2500],
    });
    clock.advance(499);
    expect((await l.take("ten_a", [b], 1)).retryAfterMs).toBe(1);
    clock.advance(1);
    expect(await l.take("ten_a", [b], 1)).toEqual({
      allowed: true,
      tripped: -1,
      remaining: [0],
      retryAfterMs: 0,
      resetMs: [2500],
    });
    clock.advance(60_000);
    expect((await l.take("ten_a", [b], 1)).remaining).toEqual([4]);
  });

  it("a clock that steps back refills nothing and takes nothing away", async () => {
    const clock = new ManualClock();
    const l = createMemoryRateLimiter({ clock });
    const b: BucketSpec = { id: "tenant", capacity: 2, refillPerSec: 1 };
    await l.take("ten_a", [b], 2);
    clock.advance(-10_000);
    expect((await l.take("ten_a", [b], 1)).allowed).toBe(false);
    clock.advance(11_000);
    expect((await l.take("ten_a", [b], 1)).remaining).toEqual([0]);
  });

  it("model: over any schedule, admitted ≤ capacity + refill × time, and waiting retryAfterMs always suffices", () => {
    const op = fc.record({ advanceMs: fc.integer({ min: 0, max: 400 }), cost: fc.integer({ min: 1, max: 4 }) });
    return fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(op, { minLength: 1, maxLength: 200 }),
        async (capacity, refillPerSec, ops) => {
          const clock = new ManualClock(0);
          const l = createMemoryRateLimiter({ clock });
          const b: BucketSpec = { id: "tenant", capacity, refillPerSec };
          let admitted = 0;
          for (const o of ops) {
            clock.advance(o.advanceMs);
            const d = await l.take("ten_m", [b], o.cost);
            if (d.allowed) admitted += o.cost;
            expect(admitted).toBeLessThanOrEqual(capacity + (refillPerSec * clock.now()) / 1000 + 1e-9);
            if (!d.allowed && o.cost <= capacity) {
              // Nothing else takes in between: after the reported wait the same call passes.
              clock.advance(d.retryAfterMs);
              const again = await l.take("ten_m", [b], o.cost);
              expect(again.allowed).toBe(true);
              admitted += o.cost;
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("keeps at most maxBuckets, dropping full buckets first", async () => {
    const clock = new ManualClock();
    const l = createMemoryRateLimiter({ clock, maxBuckets: 1000 });
    const b = (id: string): BucketSpec => ({ id, capacity: 10, refillPerSec: 10 });
    // A busy bucket, charged to empty, must survive the churn of many idle ones.
    for (let i = 0; i < 10; i++) await l.take("ten_busy", [b("tenant")], 1);
    for (let i = 0; i < 5000; i++) {
      await l.take(`ten_${i}`, [b("tenant")], 1);
      clock.advance(1);
      if (i % 100 === 0) await l.take("ten_busy", [b("tenant")], 1);
      expect(l.size).toBeLessThanOrEqual(1000);
    }
    // Sub-second idle buckets are not full yet; those older than 1 s (10 tokens at 10/s) are gone.
    l.sweep();
    expect(l.size).toBeLessThanOrEqual(1001);
    const busy = await l.take("ten_busy", [b("tenant")], 1);
    expect(busy.remaining[0]).toBeLessThan(9);
    clock.advance(2000);
    l.sweep();
    expect(l.size).toBe(0);
  });
});
