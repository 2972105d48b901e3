// CheckRateLimit with a tenant key decides the caller's per-call buckets (key and tenant) and the
// requested bucket in ONE limiter call (src/services/rate-limit/fold.ts). These tests count the
// limiter calls, pin the semantics (the caller's tokens are taken exactly once, never half; a
// refused caller leaves the requested bucket untouched and is refused before anything after the
// per-call limit, such as usage counting, sees the call; a request the planner does not plan —
// invalid, unknown bucket — is charged once, as any call) and show, as a model test over random
// call sequences and every protocol, that a folded server answers exactly like one that decides
// the two separately.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type CallOptions, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema, QuotaFailureSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { type CheckRateLimitRequestSchema, LimitService } from "../../gen/tenantd/v1/limit_service_pb.js";
import { type Clock, systemClock } from "../../src/domain/clock.js";
import { createAuditRecorder } from "../../src/services/audit.js";
import { createLimitService } from "../../src/services/limit-service.js";
import type { RateLimitPlans } from "../../src/services/rate-limit/policy.js";
import type { RateLimiter } from "../../src/services/rate-limit/types.js";
import { createMemoryQuotaStore } from "../../src/store/memory/quota-store.js";
import { createMemoryRateLimiter } from "../../src/store/memory/rate-limiter.js";
import { createLimitStore, createOverrideStore } from "../../src/store/postgres/limit-store.js";
import { authInterceptor } from "../../src/transport/interceptors/auth.js";
import { errorInterceptor } from "../../src/transport/interceptors/errors.js";
import { createRateLimiting, type RateLimiting } from "../../src/transport/interceptors/rate-limit.js";
import { validationInterceptor } from "../../src/transport/interceptors/validation.js";
import { requestIdKey } from "../../src/transport/logging.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { type Harness, startHarness } from "../helpers/app.js";
import { LIMITERS } from "./helpers.js";

/** Key bucket 3, no refill within a test on either limiter; tenant bucket out of reach. */
const PLANS: Partial<RateLimitPlans> = {
  plans: {
    small: { key: { capacity: 3, refillPerSec: 0.001 }, tenant: { capacity: 1e6, refillPerSec: 1e6 } },
  },
  defaultPlan: "small",
  owner: { capacity: 1e9, refillPerSec: 1e9 },
};

interface FoldServer {
  srv: TestServer;
  limiting: RateLimiting;
  /** Limiter calls so far (the per-call limit's and the LimitService's). */
  calls(): number;
  /** Calls that got past the per-call limit, as an interceptor right after it (usage counting) sees them. */
  passed(): number;
  client(protocol?: "grpc" | "connect" | "grpc-web"): ReturnType<typeof createClient<typeof LimitService>>;
  close(): Promise<void>;
}

/** Counts every `take`, whoever makes it. */
function counting(inner: RateLimiter): RateLimiter & { n: number } {
  const c = {
    n: 0,
    take: ((...args: Parameters<RateLimiter["take"]>) => {
      c.n++;
      return inner.take(...args);
    }) as RateLimiter["take"],
    close: () => inner.close(),
  };
  return c;
}

/**
 * The LimitService behind the interceptors app.ts installs (errors, auth, rate limit, validation),
 * on the harness's database and key verifier, with one limiter shared by the per-call limit and
 * the service, as in the app.
 */
async function startFoldServer(
  h: Harness,
  opts: {
    fold: boolean;
    limiter: RateLimiter;
    limiterClock: Clock;
    leaseMax?: number;
    plans?: Partial<RateLimitPlans>;
  },
): Promise<FoldServer> {
  const limiter = counting(opts.limiter);
  const limiting = createRateLimiting({
    limiter,
    limiterClock: opts.limiterClock,
    clock: h.clock,
    overrides: { get: () => null },
    plans: opts.plans ?? PLANS,
    failMode: "closed",
    timeoutMs: 2000,
    onError: () => {},
    fold: opts.fold,
    ...(opts.leaseMax ? { leaseMax: opts.leaseMax } : {}),
  });
  const service = createLimitService({
    limits: createLimitStore(h.db.knex),
    overrides: createOverrideStore(h.db.knex),
    quota: createMemoryQuotaStore(),
    rateLimiter: limiter,
    tenants: h.app.stores.tenants,
    clock: h.clock,
    audit: createAuditRecorder({ audit: h.app.stores.audit, clock: h.clock, onError: () => {} }),
    quotaFailMode: "closed",
    rateLimitFailMode: "closed",
    timeoutMs: 2000,
    bus: h.app.bus,
    perCallFolds: limiting,
  });
  const passed: string[] = [];
  const srv = await startTestServer({
    routes: (r) => {
      r.service(LimitService, service);
    },
    interceptors: [
      errorInterceptor(() => {}),
      authInterceptor({
        verifier: h.app.verifier,
        tenants: h.app.stores.tenants,
        requestIdOf: (values) => values.get(requestIdKey),
      }),
      limiting.interceptor,
      // Where the usage meter sits in app.ts: it must see only calls the per-call limit let through.
      (next) => (req) => {
        passed.push(req.method.name);
        return next(req);
      },
      validationInterceptor(),
    ],
  });
  const transports: Record<string, Transport> = {
    grpc: createGrpcTransport({ baseUrl: srv.baseUrl }),
    connect: createConnectTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
    "grpc-web": createGrpcWebTransport({ baseUrl: srv.baseUrl, httpVersion: "1.1" }),
  };
  return {
    srv,
    limiting,
    calls: () => limiter.n,
    passed: () => passed.length,
    client: (protocol = "grpc") => createClient(LimitService, transports[protocol] as Transport),
    async close() {
      await srv.close(100);
      await limiting.close();
    },
  };
}

/** Everything a client can observe of one call, in a comparable form. */
interface Observed {
  code: string;
  reason?: string;
  message?: string;
  response?: unknown;
  retryMs?: number;
  quotaSubject?: string;
  headers: Record<string, string | null>;
}

const HEADERS = ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"];

async function observe(
  client: ReturnType<typeof createClient<typeof LimitService>>,
  req: MessageInitShape<typeof CheckRateLimitRequestSchema>,
  auth: CallOptions,
): Promise<Observed> {
  let header: Headers | undefined;
  let trailer: Headers | undefined;
  const pick = (h: Headers | undefined, t: Headers | undefined) =>
    Object.fromEntries(HEADERS.map((n) => [n, h?.get(n) ?? t?.get(n) ?? null]));
  try {
    const res = await client.checkRateLimit(req, {
      ...auth,
      onHeader: (h) => (header = h),
      onTrailer: (t) => (trailer = t),
    });
    return {
      code: "ok",
      response: {
        allowed: res.allowed,
        limit: res.limit,
        remaining: res.remaining,
        resetTime: res.resetTime,
        retryAfter: res.retryAfter,
      },
      headers: pick(header, trailer),
    };
  } catch (e) {
    const err = ConnectError.from(e);
    const retry = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    return {
      code: Code[err.code],
      reason: err.findDetails(ErrorInfoSchema)[0]?.reason,
      message: err.rawMessage,
      ...(retry ? { retryMs: Number(retry.seconds) * 1000 + retry.nanos / 1e6 } : {}),
      quotaSubject: err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject,
      headers: pick(err.metadata, undefined),
    };
  }
}

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

describe.each(LIMITERS)("$name limiter: CheckRateLimit folded into the per-call limit", ({ skip, make }) => {
  let fs: FoldServer;
  beforeAll(async () => {
    if (skip) return;
    // Both limiters here run on real time (Redis on its own TIME); the refills are slow enough.
    fs = await startFoldServer(h, { fold: true, limiter: await make(), limiterClock: systemClock });
  });
  afterAll(async () => {
    await fs?.close();
  });

  const slow = { capacity: 10n, refillPerSecond: 0.001 };

  it.skipIf(skip)("one limiter call per decision with a tenant key, over every protocol", async () => {
    const t = await h.newTenant();
    for (const protocol of ["grpc", "connect", "grpc-web"] as const) {
      const before = fs.calls();
      const res = await fs
        .client(protocol)
        .checkRateLimit({ bucket: "b", subject: protocol, definition: slow }, h.as(t.key));
      expect(res).toMatchObject({ allowed: true, remaining: 9n });
      expect(fs.calls() - before).toBe(1);
    }
  });

  it.skipIf(skip)("an owner acting on behalf is not folded: two limiter calls, same answer", async () => {
    const t = await h.newTenant();
    const before = fs.calls();
    const res = await fs
      .client()
      .checkRateLimit({ bucket: "b", subject: "s", definition: slow }, h.as(h.ownerKey, t.tenant.id));
    expect(res).toMatchObject({ allowed: true, remaining: 9n });
    expect(fs.calls() - before).toBe(2);
  });

  it.skipIf(skip)(
    "the caller over its limit: RATE_LIMITED as before the handler, the requested bucket untouched",
    async () => {
      const t = await h.newTenant();
      const c = fs.client();
      const req = { bucket: "b", subject: "s", definition: slow };
      const seen: Observed[] = [];
      const passedBefore = fs.passed();
      for (let i = 0; i < 4; i++) seen.push(await observe(c, req, h.as(t.key)));
      // Refused before anything after the limit (usage counting) saw the call.
      expect(fs.passed() - passedBefore).toBe(3);
      expect(seen.map((o) => [o.code, o.headers["ratelimit-remaining"]])).toEqual([
        ["ok", "2"],
        ["ok", "1"],
        ["ok", "0"],
        ["ResourceExhausted", "0"],
      ]);
      const refused = seen[3] as Observed;
      expect(refused).toMatchObject({ reason: "RATE_LIMITED", quotaSubject: `key:${t.keyId}` });
      expect(refused.retryMs).toBeGreaterThan(0);
      expect(refused.headers["ratelimit-limit"]).toBe("3");
      // The requested bucket was charged 3 times, not 4 (read by the owner, whose calls are not folded).
      const peek = await c.checkRateLimit({ ...req, cost: 0n }, h.as(h.ownerKey, t.tenant.id));
      expect(peek.remaining).toBe(7n);
      // Refused again from the denial cache: no limiter call at all.
      const before = fs.calls();
      expect((await observe(c, req, h.as(t.key))).reason).toBe("RATE_LIMITED");
      expect(fs.calls()).toBe(before);
    },
  );

  it.skipIf(skip)("a refused requested bucket takes the caller's token once, and nothing else", async () => {
    const t = await h.newTenant();
    const c = fs.client();
    const req = { bucket: "one", subject: "s", definition: { capacity: 1n, refillPerSecond: 0.001 } };
    const seen: Observed[] = [];
    for (let i = 0; i < 4; i++) seen.push(await observe(c, req, h.as(t.key)));
    expect(
      seen.map((o) => [
        o.code,
        (o.response as { allowed?: boolean } | undefined)?.allowed,
        o.headers["ratelimit-remaining"],
      ]),
    ).toEqual([
      ["ok", true, "2"],
      ["ok", false, "1"],
      ["ok", false, "0"],
      ["ResourceExhausted", undefined, "0"],
    ]);
    const refusal = seen[1]?.response as { remaining: bigint; retryAfter?: { seconds: bigint } };
    expect(refusal.remaining).toBe(0n);
    expect(Number(refusal.retryAfter?.seconds)).toBeGreaterThan(0);
  });

  it.skipIf(skip)(
    "requests the planner leaves to the handler (invalid, unknown bucket) are charged once, with headers",
    async () => {
      const t = await h.newTenant();
      const c = fs.client("connect");
      const invalidCost = await observe(c, { bucket: "b", subject: "s", cost: 11n, definition: slow }, h.as(t.key));
      const unknown = await observe(c, { bucket: "nope", subject: "s" }, h.as(t.key));
      const badName = await observe(c, { bucket: "Bad Name", subject: "s", definition: slow }, h.as(t.key));
      const over = await observe(c, { bucket: "nope", subject: "s" }, h.as(t.key));
      expect(
        [invalidCost, unknown, badName, over].map((o) => [o.code, o.reason, o.headers["ratelimit-remaining"]]),
      ).toEqual([
        ["InvalidArgument", "FIELD_INVALID", "2"],
        ["NotFound", "RESOURCE_NOT_FOUND", "1"],
        ["InvalidArgument", "FIELD_INVALID", "0"],
        ["ResourceExhausted", "RATE_LIMITED", "0"],
      ]);
    },
  );
});

describe.each(LIMITERS)("$name limiter: the fold with leases, concurrent callers", ({ skip, make }) => {
  let fs: FoldServer;
  beforeAll(async () => {
    if (skip) return;
    fs = await startFoldServer(h, {
      fold: true,
      limiter: await make(),
      limiterClock: systemClock,
      leaseMax: 64,
      plans: LEASE_PLANS,
    });
  });
  afterAll(async () => {
    await fs?.close();
  });

  it.skipIf(skip)(
    "60 concurrent calls of one key (40 tokens) on a bucket of 30: 40 pass the key, 30 get the bucket, at most one limiter call each",
    async () => {
      const t = await h.newTenant();
      const c = fs.client();
      const req = { bucket: "b", subject: "s", definition: { capacity: 30n, refillPerSecond: 0.001 } };
      const before = fs.calls();
      const seen = await Promise.all(Array.from({ length: 60 }, () => observe(c, req, h.as(t.key))));
      const calls = fs.calls() - before;
      const passed = seen.filter((o) => o.code === "ok");
      const granted = passed.filter((o) => (o.response as { allowed: boolean }).allowed);
      const refused = seen.filter((o) => o.code !== "ok");
      console.log(
        `[fold] leases, 60 concurrent: ${passed.length} passed, ${granted.length} granted, ${calls} limiter calls`,
      );
      expect(passed.length).toBe(40);
      expect(refused.every((o) => o.reason === "RATE_LIMITED")).toBe(true);
      expect(granted.length).toBe(30);
      expect(calls).toBeLessThanOrEqual(60);
      // The requested bucket was charged only for the 40 calls that passed: 30 granted, none left.
      const peek = await c.checkRateLimit({ ...req, cost: 0n }, h.as(h.ownerKey, t.tenant.id));
      expect(peek.remaining).toBe(0n);
    },
  );
});

/** Key bucket 40 (leases of up to 5 tokens), no refill within a test; tenant bucket out of reach. */
const LEASE_PLANS: Partial<RateLimitPlans> = {
  plans: {
    leased: { key: { capacity: 40, refillPerSec: 0.001 }, tenant: { capacity: 1e6, refillPerSec: 1e6 } },
  },
  defaultPlan: "leased",
  owner: { capacity: 1e9, refillPerSec: 1e9 },
};

describe.each([
  { name: "without leases", leaseMax: undefined, plans: PLANS, refillMs: 3_001_000 },
  { name: "with leases of per-call tokens", leaseMax: 64, plans: LEASE_PLANS, refillMs: 40_001_000 },
])("model: a folded server answers exactly like an unfolded one, $name", ({ leaseMax, plans, refillMs }) => {
  // Both on the in-process limiter and the harness's manual clock, so that every figure (retry
  // times, reset times, remaining counts, headers) is deterministic and can be compared.
  let folded: FoldServer;
  let separate: FoldServer;
  beforeAll(async () => {
    folded = await startFoldServer(h, {
      fold: true,
      limiter: createMemoryRateLimiter({ clock: h.clock }),
      limiterClock: h.clock,
      leaseMax,
      plans,
    });
    separate = await startFoldServer(h, {
      fold: false,
      limiter: createMemoryRateLimiter({ clock: h.clock }),
      limiterClock: h.clock,
      leaseMax,
      plans,
    });
  });
  afterAll(async () => {
    await folded?.close();
    await separate?.close();
  });

  it("over random call sequences on every protocol; folded uses one limiter call where separate uses two", async () => {
    const t = await h.newTenant();
    await folded.client().updateRateLimitBuckets(
      {
        buckets: [
          { name: "named", capacity: 2n, refillPerSecond: 1 },
          { name: "stepped", capacity: 3n, refillAmount: 2n, refillInterval: { seconds: 2n } },
        ],
      },
      h.as(t.key),
    );
    // That call took one of the key's tokens on the folded server only: refill before comparing.
    h.clock.advance(refillMs);
    const requests: Array<MessageInitShape<typeof CheckRateLimitRequestSchema>> = [
      { bucket: "named", subject: "a" },
      { bucket: "named", subject: "b", cost: 2n },
      { bucket: "named", subject: "a", cost: 0n },
      { bucket: "stepped", subject: "a" },
      { bucket: "stepped", subject: "a", cost: 3n },
      { bucket: "inline", subject: "a", definition: { capacity: 1n, refillPerSecond: 0.5 } },
      { bucket: "inline", subject: "a", cost: 2n, definition: { capacity: 1n, refillPerSecond: 0.5 } },
      { bucket: "missing", subject: "a" },
      { bucket: "Bad Name", subject: "a", definition: { capacity: 1n, refillPerSecond: 1 } },
    ];
    const op = fc.record({
      request: fc.integer({ min: 0, max: requests.length - 1 }),
      caller: fc.constantFrom("tenant", "owner"),
      protocol: fc.constantFrom("grpc", "connect", "grpc-web"),
      advanceMs: fc.constantFrom(0, 0, 0, 100, 700, 2000, 40_000),
    });
    let run = 0;
    let foldedCalls = 0;
    let separateCalls = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 25 }), async (ops) => {
        // A fresh subject space per run: subjects carry the run number.
        run++;
        for (const o of ops) {
          h.clock.advance(o.advanceMs);
          const base = requests[o.request] as MessageInitShape<typeof CheckRateLimitRequestSchema>;
          const req = { ...base, subject: `${base.subject}-${run}` };
          const auth = o.caller === "tenant" ? h.as(t.key) : h.as(h.ownerKey, t.tenant.id);
          const f0 = folded.calls();
          const s0 = separate.calls();
          const fp = folded.passed();
          const sp = separate.passed();
          const a = await observe(folded.client(o.protocol), req, auth);
          const b = await observe(separate.client(o.protocol), req, auth);
          expect(a).toEqual(b);
          // What usage counting would count is the same too.
          expect(folded.passed() - fp).toBe(separate.passed() - sp);
          foldedCalls += folded.calls() - f0;
          separateCalls += separate.calls() - s0;
        }
        // Let the caller's key bucket refill fully between runs (at 0.001/s).
        h.clock.advance(refillMs);
      }),
      { numRuns: 25 },
    );
    console.log(
      `[fold] model: ${run} runs; limiter calls folded ${foldedCalls}, separate ${separateCalls} (${(foldedCalls / separateCalls).toFixed(2)}×)`,
    );
    expect(foldedCalls).toBeLessThan(separateCalls);
  });
});

describe("through the whole app: REST answers as the other protocols do", () => {
  let app: Harness;
  beforeAll(async () => {
    app = await startHarness({ rateLimitPlans: PLANS });
  });
  afterAll(async () => {
    await app?.close();
  });

  it("200 with the requested bucket's answer and the caller's ratelimit-*; 429 with Retry-After past the caller's limit", async () => {
    const t = await app.newTenant();
    const post = (body: unknown) =>
      fetch(`${app.baseUrl}/v1/tenant/limits/rate:check`, {
        method: "POST",
        headers: { authorization: `Bearer ${t.key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const body = { bucket: "one", subject: "s", definition: { capacity: "1", refillPerSecond: 0.001 } };
    const seen = [];
    for (let i = 0; i < 3; i++) {
      const res = await post(body);
      const json = (await res.json()) as { allowed?: boolean };
      seen.push([res.status, json.allowed ?? false, res.headers.get("ratelimit-remaining")]);
    }
    expect(seen).toEqual([
      [200, true, "2"],
      [200, false, "1"],
      [200, false, "0"],
    ]);
    const refused = await post(body);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(refused.headers.get("ratelimit-limit")).toBe("3");
    // gRPC (the fast path) gives the same refusal.
    const err = await app
      .client(LimitService, "grpc")
      .checkRateLimit({ bucket: "one", subject: "s" }, app.as(t.key))
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).findDetails(ErrorInfoSchema)[0]?.reason).toBe("RATE_LIMITED");
  });
});
