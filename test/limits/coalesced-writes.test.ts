import type { Socket } from "node:net";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BucketSpec, RateLimiter } from "../../src/services/rate-limit/types.js";
import { whenReady } from "../../src/store/redis/client.js";
import { createRateLimitRedis, createRedisRateLimiter } from "../../src/store/redis/rate-limiter.js";
import { freshTenant, REDIS_URL } from "./helpers.js";

// The Redis limiter sends the scripts of one event-loop turn in one write (store/redis/
// rate-limiter.ts, "coalesced"): counted on the connection's real socket, against a real Redis.

describe.skipIf(!REDIS_URL)("coalesced limiter writes", () => {
  let redis: Redis;
  let limiter: RateLimiter;
  let writes = 0;
  beforeAll(async () => {
    redis = createRateLimitRedis({ url: REDIS_URL as string, timeoutMs: 2000 });
    await whenReady(redis, 5000);
    limiter = createRedisRateLimiter({ redis });
    // Load the scripts (EVAL the first time), then count the socket's writes from here on.
    for (const n of [1, 2]) {
      await limiter.take(
        freshTenant(),
        Array.from({ length: n }, (_, i) => ({ id: `b${i}`, capacity: 1, refillPerSec: 1 })),
        1,
      );
    }
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
  });
  afterAll(() => {
    redis?.disconnect();
  });

  it("40 decisions started in one turn leave in one write, and each gets its own answer", async () => {
    const tenant = freshTenant();
    const bucket: BucketSpec = { id: "shared", capacity: 30, refillPerSec: 0.001 };
    writes = 0;
    const decisions = await Promise.all(Array.from({ length: 40 }, () => limiter.take(tenant, [bucket], 1)));
    expect(writes).toBe(1);
    expect(decisions.filter((d) => d.allowed)).toHaveLength(30);
    const remaining = decisions.filter((d) => d.allowed).map((d) => d.remaining[0]);
    expect(new Set(remaining).size).toBe(30); // every allowed call saw its own state of the bucket
    expect(decisions.filter((d) => !d.allowed).every((d) => d.retryAfterMs > 0)).toBe(true);
  });

  it("decisions of different buckets and bucket counts in one turn share the write too", async () => {
    const tenant = freshTenant();
    writes = 0;
    const decisions = await Promise.all([
      limiter.take(tenant, [{ id: "a", capacity: 5, refillPerSec: 1 }], 1),
      limiter.take(
        tenant,
        [
          { id: "a", capacity: 5, refillPerSec: 1 },
          { id: "b", capacity: 5, refillPerSec: 1 },
        ],
        2,
      ),
      limiter.take(tenant, [{ id: "c", capacity: 5, refillPerSec: 1 }], 5),
    ]);
    expect(writes).toBe(1);
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true]);
    expect(decisions.map((d) => d.remaining)).toEqual([[4], [2, 3], [0]]);
  });

  it("serial decisions each leave at once: one write per turn, nothing waits for a later turn", async () => {
    const tenant = freshTenant();
    const bucket: BucketSpec = { id: "serial", capacity: 100, refillPerSec: 1 };
    writes = 0;
    for (let i = 0; i < 5; i++) {
      const d = await limiter.take(tenant, [bucket], 1);
      expect(d.remaining).toEqual([99 - i]);
    }
    expect(writes).toBe(5);
  });
});
