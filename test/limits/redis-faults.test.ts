import { monitorEventLoopDelay } from "node:perf_hooks";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { systemClock } from "../../src/domain/clock.js";
import type { KeyRecord } from "../../src/domain/types.js";
import { type CallScope, scopeKey } from "../../src/services/context.js";
import { createMemoryOverrideSource, type FailMode } from "../../src/services/rate-limit/policy.js";
import { createRateLimitRedis, createRedisRateLimiter } from "../../src/store/redis/rate-limiter.js";
import { createHealthService } from "../../src/transport/health.js";
import { errorInterceptor } from "../../src/transport/interceptors/errors.js";
import { createRateLimiting, type RateLimiting } from "../../src/transport/interceptors/rate-limit.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { freshTenant, hasRedisServer, msSince, RedisServer, ready, sleep } from "./helpers.js";

// Redis faults under load, against a real redis-server this file starts on a free port and then
// kills (SIGKILL) or pauses (SIGSTOP/SIGCONT) while 16 clients call through the rate-limit
// interceptor over gRPC and Connect. The bars (quality.md, "Redis faults"): no call waits longer
// than the timeout + 50 ms; fail-open answers no error caused by the limiter; fail-closed answers
// only UNAVAILABLE BACKEND_UNAVAILABLE; enforcement resumes within 5 s of recovery. "Enforced" is
// shown by a probe: a fresh key with a burst of 1 must be refused RATE_LIMITED on its second
// call, which only a working Redis can decide.
//
// Every call's wait is measured twice, with hrtime. On the server: from the moment the call
// reaches the rate limiter until the limiter lets it through or refuses it. This is the wait the
// limiter causes, and it must stay within timeout + 50 ms for every call.
//
// That bound is a timer, and a timer cannot fire while the process is not running: on a shared
// 2-core machine with other suites running (load averages of 8–11 were seen) Node's event loop
// alone stalls for 100 ms and more. The test therefore measures the event loop's own delay over
// the run (perf_hooks.monitorEventLoopDelay) and widens the 50 ms slack to that delay when, and
// only when, the loop itself was later than 50 ms. On a quiet machine the bar is exactly the
// spec's; on a busy one it still fails on any wait the limiter adds beyond the process's own
// stalls (a hang, a wait for the 10 s command timeout, a retry).
//
// At the client the whole call is measured too and reported (p50, p99, max). A call crosses the
// event loop several times (the clients share the process with the server), so on a busy
// machine its latency is mostly the machine's; it is held to 2 s, which still catches a hang or
// a wait for the 10 s Redis command timeout, and the report shows how close to the bar it came.
// Clients pause 2 ms between calls: load, without starving the event loop the server shares.

const TIMEOUT_MS = 100;
const SLACK_MS = 50;
const CLIENTS = 16;
const OUTAGE_MS = 1000;
/** Ceiling on a whole call as the client sees it (see above). */
const CLIENT_CEILING_MS = 2000;

const hasServer = hasRedisServer();

/** Server-side time each call spent in the rate limiter, in ms; see limiterTimer. */
const limiterWaits: number[] = [];
const enteredKey = Symbol("entered");

/**
 * Two interceptors around the rate limiter: the outer notes when a call reaches it, the inner
 * when the limiter passes it on; a refusal ends the wait when it comes back out.
 */
const limiterTimer = {
  outer: ((next) => async (req) => {
    const start = process.hrtime.bigint();
    const state = { passedAt: undefined as bigint | undefined };
    (req as unknown as Record<symbol, unknown>)[enteredKey] = state;
    try {
      return await next(req);
    } finally {
      limiterWaits.push(Number((state.passedAt ?? process.hrtime.bigint()) - start) / 1e6);
    }
  }) as Interceptor,
  inner: ((next) => async (req) => {
    const state = (req as unknown as Record<symbol, { passedAt: bigint | undefined }>)[enteredKey];
    if (state) state.passedAt = process.hrtime.bigint();
    return next(req);
  }) as Interceptor,
};

const fakeScope: Interceptor = (next) => async (req) => {
  const keyId = req.header.get("x-test-key") as string;
  const tenantId = req.header.get("x-test-tenant") as string;
  const key = { kid: keyId.slice(4), tenantId, kind: "tenant" } as KeyRecord;
  const scope: CallScope = {
    principal: { key, keyId, rotatedSecret: false },
    tenantId,
    actingAs: false,
    requestId: "",
  };
  req.contextValues.set(scopeKey, scope);
  return next(req);
};

interface CallRecord {
  /** ms since the scenario started */
  at: number;
  latencyMs: number;
  code: Code | undefined;
  reason: string | undefined;
}

async function call(client: ReturnType<typeof createClient<typeof Health>>, keyId: string, tenant: string) {
  const start = process.hrtime.bigint();
  try {
    await client.check({ service: "" }, { headers: { "x-test-key": keyId, "x-test-tenant": tenant } });
    return { latencyMs: msSince(start), code: undefined, reason: undefined };
  } catch (e) {
    const err = ConnectError.from(e);
    return { latencyMs: msSince(start), code: err.code, reason: err.findDetails(ErrorInfoSchema)[0]?.reason };
  }
}

interface Env {
  redis: RedisServer;
  srv: TestServer;
  limiting: RateLimiting;
  failures: number;
  close(): Promise<void>;
}

async function startEnv(failMode: FailMode, commandTimeoutMs: number): Promise<Env> {
  const redis = await RedisServer.start();
  const conn = createRateLimitRedis({ url: redis.url, timeoutMs: commandTimeoutMs });
  await ready(conn);
  const overrides = createMemoryOverrideSource();
  const env = { redis, failures: 0 } as Env;
  env.limiting = createRateLimiting({
    limiter: createRedisRateLimiter({ redis: conn, ownsConnection: true }),
    overrides,
    clock: systemClock,
    failMode,
    timeoutMs: TIMEOUT_MS,
    onError: (_err, n) => {
      env.failures += n;
    },
    // Probes get a burst of 1 that never refills in the test's time; the load tenant (below)
    // gets limits it never reaches, so that every refusal seen under load is a fault's doing.
    plans: {
      plans: { probe: { key: { capacity: 1, refillPerSec: 0.001 }, tenant: { capacity: 1e6, refillPerSec: 1e6 } } },
      defaultPlan: "probe",
    },
  });
  overrides.set("ten_load", {
    key: { capacity: 1e6, refillPerSec: 1e6 },
    tenant: { capacity: 1e6, refillPerSec: 1e6 },
  });
  const health = createHealthService({ probes: {} });
  env.srv = await startTestServer({
    routes: (router) => health.register(router),
    interceptors: [
      errorInterceptor(() => {}),
      fakeScope,
      limiterTimer.outer,
      env.limiting.interceptor,
      limiterTimer.inner,
    ],
  });
  env.close = async () => {
    await env.srv.close();
    await env.limiting.close();
    await redis.stop();
  };
  return env;
}

/** The event loop's longest delay during the last `underLoad`, in ms. */
let loopDelayMaxMs = 0;

/** Runs `scenario` while CLIENTS clients call in a loop; returns every call's record. */
async function underLoad(env: Env, scenario: (t0: bigint) => Promise<void>): Promise<CallRecord[]> {
  const records: CallRecord[] = [];
  limiterWaits.length = 0;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  let stop = false;
  const t0 = process.hrtime.bigint();
  const workers = Array.from({ length: CLIENTS }, async (_, i) => {
    const transport: Transport =
      i % 2 === 0
        ? createGrpcTransport({ baseUrl: env.srv.baseUrl })
        : createConnectTransport({ baseUrl: env.srv.baseUrl, httpVersion: "1.1" });
    const client = createClient(Health, transport);
    while (!stop) {
      const at = msSince(t0);
      records.push({ at, ...(await call(client, `key_load${i}`, "ten_load")) });
      await sleep(2);
    }
  });
  try {
    await scenario(t0);
  } finally {
    stop = true;
    await Promise.all(workers);
    loop.disable();
    loopDelayMaxMs = loop.max / 1e6;
  }
  return records;
}

function makeProbe(env: Env, records: CallRecord[], t0: () => bigint) {
  const client = createClient(Health, createGrpcTransport({ baseUrl: env.srv.baseUrl }));
  /** True when a fresh key's second call is refused RATE_LIMITED: Redis decides again. */
  return async (): Promise<boolean> => {
    const keyId = `key_probe${Math.random().toString(36).slice(2)}`;
    const tenant = freshTenant();
    const a = await call(client, keyId, tenant);
    const b = await call(client, keyId, tenant);
    records.push({ at: msSince(t0()), ...a }, { at: msSince(t0()), ...b });
    return a.code === undefined && b.code === Code.ResourceExhausted && b.reason === "RATE_LIMITED";
  };
}

const quantile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
};

/** Client latency p99 before the fault (the first `beforeMs` of the run): the machine's own noise. */
const baselineP99 = (records: CallRecord[], beforeMs: number) =>
  quantile(
    records.filter((r) => r.at + r.latencyMs < beforeMs).map((r) => r.latencyMs),
    0.99,
  );

/** timeout + 50 ms, or timeout + the event loop's own worst delay when that was longer. */
const waitBound = () => TIMEOUT_MS + Math.max(SLACK_MS, loopDelayMaxMs);

function summarize(name: string, records: CallRecord[], resumeMs: number, baselineMs: number) {
  const lat = records.map((r) => r.latencyMs);
  const errors = records.filter((r) => r.code !== undefined);
  console.log(
    `[fault] ${name}: ${records.length} calls, ${errors.length} errors; limiter wait (server) p50 ${quantile(limiterWaits, 0.5).toFixed(2)} ms p99 ${quantile(limiterWaits, 0.99).toFixed(1)} ms max ${Math.max(...limiterWaits).toFixed(1)} ms (bound ${waitBound().toFixed(1)}, event-loop delay max ${loopDelayMaxMs.toFixed(1)} ms); call latency (client) p50 ${quantile(lat, 0.5).toFixed(1)} ms p99 ${quantile(lat, 0.99).toFixed(1)} ms max ${Math.max(...lat).toFixed(1)} ms (ceiling ${CLIENT_CEILING_MS}; before the fault p99 ${baselineMs.toFixed(1)} ms); enforcement resumed ${resumeMs.toFixed(0)} ms after recovery`,
  );
}

/** Polls the probe until it shows enforcement; returns ms since `since`. */
async function untilEnforced(probe: () => Promise<boolean>, since: bigint): Promise<number> {
  while (msSince(since) < 10_000) {
    if (await probe()) return msSince(since);
    await sleep(50);
  }
  return Number.POSITIVE_INFINITY;
}

function expectBars(failMode: FailMode, records: CallRecord[], resumeMs: number) {
  // Every call that reached the server was timed there.
  expect(limiterWaits.length).toBeGreaterThanOrEqual(records.length);
  expect(Math.max(...limiterWaits)).toBeLessThanOrEqual(waitBound());
  expect(Math.max(...records.map((r) => r.latencyMs))).toBeLessThanOrEqual(CLIENT_CEILING_MS);
  const errors = records.filter((r) => r.code !== undefined && r.reason !== "RATE_LIMITED");
  if (failMode === "open") {
    expect(errors).toEqual([]);
  } else {
    // Not vacuous: the outage did refuse calls, and every refusal is the configured one.
    expect(errors.length).toBeGreaterThan(0);
    const kinds = new Set(errors.map((r) => `${Code[r.code as Code]} ${r.reason}`));
    expect([...kinds]).toEqual(["Unavailable BACKEND_UNAVAILABLE"]);
  }
  // Load calls never reach their limits; only probes may be RATE_LIMITED.
  expect(records.filter((r) => r.code === undefined).length).toBeGreaterThan(100);
  expect(resumeMs).toBeLessThan(5000);
}

describe.skipIf(!hasServer)("Redis faults under load (redis-server started by the test)", () => {
  describe.each<FailMode>(["open", "closed"])("fail-%s", (failMode) => {
    let env: Env;
    beforeAll(async () => {
      env = await startEnv(failMode, TIMEOUT_MS);
    });
    afterAll(async () => {
      await env?.close();
    });

    it("Redis killed (SIGKILL) under load, then restarted", async () => {
      let t0 = 0n;
      let resumeMs = Number.NaN;
      let outageProbe: boolean | undefined;
      const probeRecords: CallRecord[] = [];
      const probe = makeProbe(env, probeRecords, () => t0);
      const records = await underLoad(env, async (start) => {
        t0 = start;
        await sleep(300);
        // Enforced before the fault (polled: on a loaded machine a healthy round trip can
        // exceed the timeout, and fail-open then lets the probe's second call through).
        expect(await untilEnforced(probe, process.hrtime.bigint())).toBeLessThan(5000);
        await env.redis.kill();
        await sleep(OUTAGE_MS / 2);
        outageProbe = await probe();
        await sleep(OUTAGE_MS / 2);
        await env.redis.restart();
        resumeMs = await untilEnforced(probe, process.hrtime.bigint());
        await sleep(300);
      });
      const all = [...records, ...probeRecords];
      const baseline = baselineP99(records, 300);
      summarize(`killed, fail-${failMode}`, all, resumeMs, baseline);
      expect(outageProbe).toBe(false);
      expect(env.failures).toBeGreaterThan(0);
      expectBars(failMode, all, resumeMs);
    });

    it("Redis paused (SIGSTOP) under load, then continued (SIGCONT)", async () => {
      let t0 = 0n;
      let resumeMs = Number.NaN;
      let outageProbe: boolean | undefined;
      const probeRecords: CallRecord[] = [];
      const probe = makeProbe(env, probeRecords, () => t0);
      const records = await underLoad(env, async (start) => {
        t0 = start;
        await sleep(300);
        // Enforced before the fault (polled: on a loaded machine a healthy round trip can
        // exceed the timeout, and fail-open then lets the probe's second call through).
        expect(await untilEnforced(probe, process.hrtime.bigint())).toBeLessThan(5000);
        env.redis.pause();
        try {
          await sleep(OUTAGE_MS / 2);
          outageProbe = await probe();
          await sleep(OUTAGE_MS / 2);
        } finally {
          env.redis.resume();
        }
        resumeMs = await untilEnforced(probe, process.hrtime.bigint());
        await sleep(300);
      });
      const all = [...records, ...probeRecords];
      const baseline = baselineP99(records, 300);
      summarize(`paused, fail-${failMode}`, all, resumeMs, baseline);
      expect(outageProbe).toBe(false);
      expectBars(failMode, all, resumeMs);
    });
  });

  describe("the hard bound holds when the Redis command timeout is far longer", () => {
    let env: Env;
    beforeAll(async () => {
      env = await startEnv("closed", 10_000);
    });
    afterAll(async () => {
      await env?.close();
    });

    it("Redis paused with a 10 s command timeout: calls still end within the 100 ms bound", async () => {
      let t0 = 0n;
      let resumeMs = Number.NaN;
      const probeRecords: CallRecord[] = [];
      const probe = makeProbe(env, probeRecords, () => t0);
      const records = await underLoad(env, async (start) => {
        t0 = start;
        await sleep(300);
        env.redis.pause();
        try {
          await sleep(OUTAGE_MS);
        } finally {
          env.redis.resume();
        }
        resumeMs = await untilEnforced(probe, process.hrtime.bigint());
        await sleep(300);
      });
      const all = [...records, ...probeRecords];
      const baseline = baselineP99(records, 300);
      summarize("paused, 10 s command timeout, fail-closed", all, resumeMs, baseline);
      expectBars("closed", all, resumeMs);
    });
  });
});

if (!hasServer) {
  describe("Redis faults", () => {
    it.skip("skipped: redis-server is not on PATH (install Debian's redis-server to run the fault tests)", () => {});
  });
}
