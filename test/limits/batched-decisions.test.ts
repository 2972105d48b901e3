import type { Socket } from "node:net";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BucketSpec, RateLimiter } from "../../src/services/rate-limit/types.js";
import { whenReady } from "../../src/store/redis/client.js";
import { createRateLimitRedis, createRedisRateLimiter, MAX_BATCH } from "../../src/store/redis/rate-limiter.js";
import { freshTenant, REDIS_URL } from "./helpers.js";

// The Redis limiter batches the decisions of one event-loop turn (store/redis/rate-limiter.ts):
// one script call per tenant and turn, every call of the turn in one write. Counted on the real
// connection (its socket's writes, the commands ioredis sends), against a real Redis.

describe.skipIf(!REDIS_URL)("batched limiter decisions", () => {
  let redis: Redis;
  let limiter: RateLimiter;
  let writes = 0;
  let scripts = 0;
  beforeAll(async () => {
    redis = createRateLimitRedis({ url: REDIS_URL as string, timeoutMs: 2000 });
    await whenReady(redis, 5000);
    limiter = createRedisRateLimiter({ redis });
    await limiter.take(freshTenant(), [{ id: "warm", capacity: 1, refillPerSec: 1 }], 1); // loads the script
    const socket = (redis as unknown as { stream: Socket }).stream as Socket & {
      _write: (...a: unknown[]) => void;
      _writev: (...a: unknown[]) => void;
    };
    for (const name of ["_write", "_writev"] as const) {
      const real = socket[name].bind(socket);
      socket[name] = (...a: unknown[]) => {
        writes++;
        real(...a);
      };
    }
    const send = redis.sendCommand.bind(redis);
    redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
      if (command.name === "evalsha" || command.name === "eval") scripts++;
      return (send as (...a: unknown[]) => unknown)(command, ...rest);
    }) as typeof redis.sendCommand;
  });
  afterAll(() => {
    redis?.disconnect();
  });
  const reset = () => {
    writes = 0;
    scripts = 0;
  };

  it(`40 decisions of one tenant in one turn: 2 script calls (at most ${MAX_BATCH} each) in one write, each decision its own answer`, async () => {
    const tenant = freshTenant();
    const bucket: BucketSpec = { id: "shared", capacity: 30, refillPerSec: 0.001 };
    reset();
    const decisions = await Promise.all(Array.from({ length: 40 }, () => limiter.take(tenant, [bucket], 1)));
    expect(scripts).toBe(2);
    expect(writes).toBe(1);
    // In the order taken, as 40 calls in a row would be: the first 30 pass, each seeing one token less.
    expect(decisions.map((d) => d.allowed)).toEqual([...Array(30).fill(true), ...Array(10).fill(false)]);
    expect(decisions.slice(0, 30).map((d) => d.remaining[0])).toEqual(Array.from({ length: 30 }, (_, i) => 29 - i));
    expect(decisions.slice(30).every((d) => d.retryAfterMs > 0 && d.tripped === 0)).toBe(true);
  });

  it("decisions with different bucket counts and a second decision share one script call", async () => {
    const tenant = freshTenant();
    const a: BucketSpec = { id: "a", capacity: 5, refillPerSec: 1 };
    const b: BucketSpec = { id: "b", capacity: 5, refillPerSec: 1 };
    const small: BucketSpec = { id: "small", capacity: 1, refillPerSec: 0.001 };
    reset();
    const [one, two, withAfter, refusedAfter, refused] = await Promise.all([
      limiter.take(tenant, [a], 1),
      limiter.take(tenant, [a, b], 2),
      limiter.take(tenant, [b], 1, { bucket: small, cost: 1 }),
      limiter.take(tenant, [b], 1, { bucket: small, cost: 1 }),
      limiter.take(tenant, [a, b], 5),
    ]);
    expect(scripts).toBe(1);
    expect(one).toMatchObject({ allowed: true, remaining: [4] });
    expect(two).toMatchObject({ allowed: true, remaining: [2, 3] });
    expect(withAfter).toMatchObject({ allowed: true, remaining: [2], after: { allowed: true, remaining: [0] } });
    expect(refusedAfter).toMatchObject({ allowed: true, remaining: [1], after: { allowed: false } });
    expect(refusedAfter.after?.retryAfterMs).toBeGreaterThan(0);
    // The n refused: nothing charged, and the second decision of a refused call is not made.
    expect(refused).toMatchObject({ allowed: false, tripped: 1, remaining: [2, 1] }); // b waits longest
    expect(refused.after).toBeUndefined();
  });

  it("a refused decision with a second one leaves the second undecided, and the next decision in the batch reads on correctly", async () => {
    const tenant = freshTenant();
    const key: BucketSpec = { id: "key", capacity: 1, refillPerSec: 0.001 };
    const extra: BucketSpec = { id: "extra", capacity: 10, refillPerSec: 0.001 };
    reset();
    const [first, second, third] = await Promise.all([
      limiter.take(tenant, [key], 1, { bucket: extra, cost: 1 }),
      limiter.take(tenant, [key], 1, { bucket: extra, cost: 1 }),
      limiter.take(tenant, [extra], 2),
    ]);
    expect(scripts).toBe(1);
    expect(first).toMatchObject({ allowed: true, after: { allowed: true, remaining: [9] } });
    expect(second).toMatchObject({ allowed: false });
    expect(second.after).toBeUndefined();
    expect(third).toMatchObject({ allowed: true, remaining: [7] });
  });

  it("different tenants in one turn: one script call each (one Cluster slot per call), all in one write", async () => {
    const tenants = [freshTenant(), freshTenant(), freshTenant()];
    const bucket: BucketSpec = { id: "t", capacity: 10, refillPerSec: 1 };
    reset();
    const decisions = await Promise.all(
      tenants.flatMap((t) => [limiter.take(t, [bucket], 1), limiter.take(t, [bucket], 3)]),
    );
    expect(scripts).toBe(3);
    expect(writes).toBe(1);
    expect(decisions.map((d) => d.remaining[0])).toEqual([9, 6, 9, 6, 9, 6]);
  });

  it("serial decisions each leave at once: one script call and one write per decision", async () => {
    const tenant = freshTenant();
    const bucket: BucketSpec = { id: "serial", capacity: 100, refillPerSec: 1 };
    reset();
    for (let i = 0; i < 5; i++) {
      const d = await limiter.take(tenant, [bucket], 1);
      expect(d.remaining).toEqual([99 - i]);
    }
    expect(scripts).toBe(5);
    expect(writes).toBe(5);
  });

  it("a batch that fails fails each of its decisions, and the next turn's batch works again", async () => {
    const tenant = freshTenant();
    const bucket: BucketSpec = { id: "f", capacity: 10, refillPerSec: 1 };
    const failing = createRateLimitRedis({ url: REDIS_URL as string, timeoutMs: 2000 });
    await whenReady(failing, 5000);
    const l = createRedisRateLimiter({ redis: failing });
    await l.take(tenant, [bucket], 1);
    failing.disconnect(); // no offline queue: commands fail at once
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => l.take(tenant, [bucket], 1)));
    expect(outcomes.map((o) => o.status)).toEqual(Array(5).fill("rejected"));
    const d = await limiter.take(tenant, [bucket], 1);
    expect(d).toMatchObject({ allowed: true, remaining: [8] }); // only the one decision before was charged
  });
});
