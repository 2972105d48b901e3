// Micro-benchmark of the rate limiter (not part of `npm run bench` yet): decisions per second of
// the Redis limiter one call at a time and with 4 and 64 concurrent callers, each with and
// without ioredis auto-pipelining, of the in-process limiter, and of the policy's denial cache;
// plus the Redis ceiling for the same script from `redis-benchmark` (EVALSHA, unpipelined and
// pipelined). Every decision is a key bucket + tenant bucket pair, as on the hot path, spread
// over 10k distinct keys.
//
//   REDIS_URL=redis://127.0.0.1:6379 npx tsx bench/limiter.ts
//
// Absolute numbers drift on a shared machine; compare the rows of one run.
import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/domain/clock.js";
import { createMemoryOverrideSource, createRateLimitPolicy } from "../src/services/rate-limit/policy.js";
import type { BucketSpec, RateLimiter } from "../src/services/rate-limit/types.js";
import { createMemoryRateLimiter } from "../src/store/memory/rate-limiter.js";
import { whenReady } from "../src/store/redis/client.js";
import { createRateLimitRedis, createRedisRateLimiter, TAKE_TOKENS_LUA } from "../src/store/redis/rate-limiter.js";

const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const SERIAL = Number(process.env.BENCH_SERIAL ?? 20_000);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 100_000);
const KEYS = 10_000;
const RUN = `b${Date.now().toString(36)}`;

interface Row {
  case: string;
  decisions_per_s: number;
  p50_us: number | null;
  p99_us: number | null;
}
const rows: Row[] = [];

const tenantBucket: BucketSpec = { id: "tenant", capacity: 1e9, refillPerSec: 1e9 };
const bucketsOf = (i: number): BucketSpec[] => [
  { id: `key:key_${i % KEYS}`, capacity: 1e9, refillPerSec: 1e9 },
  tenantBucket,
];
const tenantOf = (i: number) => `ten_${RUN}_${i % 100}`;

const q = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;

async function serial(name: string, limiter: RateLimiter, n: number) {
  for (let i = 0; i < 500; i++) await limiter.take(tenantOf(i), bucketsOf(i), 1); // warm-up
  const lat = new Float64Array(n);
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await limiter.take(tenantOf(i), bucketsOf(i), 1);
    lat[i] = performance.now() - t;
  }
  const secs = (performance.now() - start) / 1000;
  const sorted = Array.from(lat).sort((a, b) => a - b);
  rows.push({
    case: name,
    decisions_per_s: Math.round(n / secs),
    p50_us: Math.round(q(sorted, 0.5) * 1000),
    p99_us: Math.round(q(sorted, 0.99) * 1000),
  });
}

async function concurrent(name: string, limiter: RateLimiter, n: number, callers = 64) {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      while (next < n) {
        const i = next++;
        await limiter.take(tenantOf(i), bucketsOf(i), 1);
      }
    }),
  );
  rows.push({
    case: name,
    decisions_per_s: Math.round(n / ((performance.now() - start) / 1000)),
    p50_us: null,
    p99_us: null,
  });
}

function redisBenchmark(port: string, sha: string, pipeline: number): number | null {
  try {
    const out = execFileSync(
      "redis-benchmark",
      [
        "-p",
        port,
        "-n",
        "100000",
        "-q",
        "-P",
        String(pipeline),
        "EVALSHA",
        sha,
        "2",
        `rl:{${RUN}rb}:key:k`,
        `rl:{${RUN}rb}:tenant`,
        // TAKE_TOKENS_LUA's arguments: Redis TIME, then one decision of 2 keys, both decided
        // together at cost 1, no extra bucket; then capacity, refill per second and step (0:
        // continuous) of each bucket.
        "",
        "2",
        "2",
        "1",
        "0",
        "1000000000",
        "1000000000",
        "0",
        "1000000000",
        "1000000000",
        "0",
      ],
      { encoding: "utf8", timeout: 120_000 },
    );
    // "EVALSHA ...: 31250.00 requests per second, p50=0.799 msec"
    const m = /([\d.]+) requests per second/.exec(out.split("\r").at(-1) ?? out);
    return m ? Math.round(Number(m[1])) : null;
  } catch {
    return null;
  }
}

async function main() {
  const auto = createRateLimitRedis({ url: REDIS_URL, timeoutMs: 2000, autoPipelining: true });
  await whenReady(auto, 5000);
  const plain = createRateLimitRedis({ url: REDIS_URL, timeoutMs: 2000 });
  await whenReady(plain, 5000);
  const redisAuto = createRedisRateLimiter({ redis: auto });
  const redisPlain = createRedisRateLimiter({ redis: plain });
  const memory = createMemoryRateLimiter();

  await serial("redis, serial (1 round trip per decision)", redisPlain, SERIAL);
  await serial("redis, serial, auto-pipelining", redisAuto, SERIAL);
  for (const callers of [4, 64]) {
    await concurrent(`redis, ${callers} concurrent`, redisPlain, CONCURRENT, callers);
    await concurrent(`redis, ${callers} concurrent, auto-pipelining`, redisAuto, CONCURRENT, callers);
  }
  await serial("memory, serial", memory, 200_000);
  await concurrent("memory, 64 concurrent", memory, 1_000_000);

  // The policy on the hot path: plan + override lookup + timeout race + limiter.
  const policy = createRateLimitPolicy({
    limiter: redisPlain,
    overrides: createMemoryOverrideSource(),
    clock: systemClock,
    failMode: "open",
    timeoutMs: 1000,
    onError: () => {},
    plans: {
      plans: { big: { key: { capacity: 1e9, refillPerSec: 1e9 }, tenant: { capacity: 1e9, refillPerSec: 1e9 } } },
      defaultPlan: "big",
    },
  });
  const policyLimiter: RateLimiter = {
    take: async (tenantId, _b, _c) => {
      await policy.check({ keyId: `key_${tenantId}`, owner: false, tenantId });
      return { allowed: true, tripped: -1, remaining: [], retryAfterMs: 0, resetMs: [] };
    },
    close: async () => {},
  };
  await concurrent("policy.check over redis, 64 concurrent", policyLimiter, CONCURRENT);
  // A client hammering past its limit: answered from the denial cache, no Redis call.
  const denyPolicy = createRateLimitPolicy({
    limiter: redisPlain,
    overrides: createMemoryOverrideSource(),
    clock: systemClock,
    failMode: "open",
    timeoutMs: 1000,
    onError: () => {},
    plans: { owner: { capacity: 1, refillPerSec: 0.001 } },
  });
  const owner = { keyId: `key_${RUN}`, owner: true, tenantId: null };
  await denyPolicy.check(owner);
  const before = denyPolicy.stats().limiterCalls;
  const deniedLimiter: RateLimiter = {
    take: async () => {
      await denyPolicy.check(owner);
      return { allowed: false, tripped: 0, remaining: [], retryAfterMs: 0, resetMs: [] };
    },
    close: async () => {},
  };
  await serial("policy.check, denied from the denial cache", deniedLimiter, 200_000);
  const redisCallsForDenials = denyPolicy.stats().limiterCalls - before;

  const port = new URL(REDIS_URL).port || "6379";
  const sha = String(await plain.script("LOAD", TAKE_TOKENS_LUA));
  const rb1 = redisBenchmark(port, sha, 1);
  const rb16 = redisBenchmark(port, sha, 16);
  if (rb1 !== null)
    rows.push({
      case: "redis-benchmark EVALSHA (ceiling, 50 clients)",
      decisions_per_s: rb1,
      p50_us: null,
      p99_us: null,
    });
  if (rb16 !== null)
    rows.push({
      case: "redis-benchmark EVALSHA -P 16 (pipelined ceiling)",
      decisions_per_s: rb16,
      p50_us: null,
      p99_us: null,
    });

  const width = Math.max(...rows.map((r) => r.case.length));
  console.log(`${"case".padEnd(width)}  decisions/s    p50 µs   p99 µs`);
  for (const r of rows) {
    console.log(
      `${r.case.padEnd(width)}  ${String(r.decisions_per_s).padStart(11)}  ${String(r.p50_us ?? "").padStart(8)} ${String(r.p99_us ?? "").padStart(8)}`,
    );
  }
  const rate = (name: string) => rows.find((r) => r.case === name)?.decisions_per_s ?? Number.NaN;
  console.log(
    `auto-pipelining / plain: 4 concurrent ${(rate("redis, 4 concurrent, auto-pipelining") / rate("redis, 4 concurrent")).toFixed(2)}×, 64 concurrent ${(rate("redis, 64 concurrent, auto-pipelining") / rate("redis, 64 concurrent")).toFixed(2)}×; 64 concurrent / serial ${(rate("redis, 64 concurrent") / rate("redis, serial (1 round trip per decision)")).toFixed(2)}×; Redis calls for 200k cached denials: ${redisCallsForDenials}`,
  );

  // The benchmark's buckets expire by themselves (PEXPIRE to full); remove them now anyway.
  const stream = plain.scanStream({ match: `rl:{ten_${RUN}_*`, count: 1000 });
  for await (const keys of stream) if ((keys as string[]).length > 0) await plain.del(...(keys as string[]));
  await plain.del(`rl:{${RUN}rb}:key:k`, `rl:{${RUN}rb}:tenant`, `rl:{owner}:key:key_${RUN}`);
  auto.disconnect();
  plain.disconnect();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
