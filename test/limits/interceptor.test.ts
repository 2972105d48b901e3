import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema, QuotaFailureSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { systemClock } from "../../src/domain/clock.js";
import type { KeyRecord } from "../../src/domain/types.js";
import { type CallScope, scopeKey } from "../../src/services/context.js";
import { createMemoryOverrideSource } from "../../src/services/rate-limit/policy.js";
import type { RateLimiter } from "../../src/services/rate-limit/types.js";
import { createHealthService } from "../../src/transport/health.js";
import { errorInterceptor } from "../../src/transport/interceptors/errors.js";
import { createRateLimiting, type RateLimiting } from "../../src/transport/interceptors/rate-limit.js";
import { startTestServer, type TestServer } from "../../src/transport/server.js";
import { freshTenant, LIMITERS } from "./helpers.js";

// The rate-limit interceptor end to end, through the one-port server and real clients of each
// protocol. The auth interceptor (and its database) is left out: a stand-in puts a CallScope
// into the context from test headers, which is all the rate limiter reads. Health.Check is the
// RPC: it has no dependencies, and asking for an unknown service makes the handler fail.

/** Sets the CallScope auth would set, from `x-test-key` (key id) and `x-test-tenant` (or `owner`). */
const fakeScope: Interceptor = (next) => async (req) => {
  const keyId = req.header.get("x-test-key");
  const tenant = req.header.get("x-test-tenant");
  if (keyId !== null && tenant !== null) {
    const owner = tenant === "owner";
    const key = { kid: keyId.slice(4), tenantId: owner ? null : tenant, kind: owner ? "owner" : "tenant" } as KeyRecord;
    const scope: CallScope = {
      principal: { key, keyId, rotatedSecret: false },
      tenantId: owner ? null : tenant,
      actingAs: false,
      requestId: "req_test",
    };
    req.contextValues.set(scopeKey, scope);
  }
  return next(req);
};

const PROTOCOLS: Record<string, (baseUrl: string) => Transport> = {
  gRPC: (baseUrl) => createGrpcTransport({ baseUrl }),
  Connect: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "gRPC-Web": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
};

function rateHeaders(h: Headers | undefined) {
  return {
    limit: h?.get("ratelimit-limit"),
    remaining: h?.get("ratelimit-remaining"),
    reset: h?.get("ratelimit-reset"),
  };
}

describe.each(LIMITERS)("$name limiter behind the interceptor", ({ skip, make }) => {
  let srv: TestServer;
  let limiting: RateLimiting;
  let limiter: RateLimiter;

  beforeAll(async () => {
    if (skip) return;
    limiter = await make();
    limiting = createRateLimiting({
      limiter,
      overrides: createMemoryOverrideSource(),
      clock: systemClock,
      failMode: "closed",
      timeoutMs: 500,
      onError: () => {},
      // A refill of one token per 2 s keeps the counts exact however slow the machine is.
      plans: {
        plans: { small: { key: { capacity: 3, refillPerSec: 0.5 }, tenant: { capacity: 5, refillPerSec: 0.5 } } },
        defaultPlan: "small",
        owner: { capacity: 2, refillPerSec: 0.5 },
      },
    });
    const health = createHealthService({ probes: {} });
    srv = await startTestServer({
      routes: (router) => health.register(router),
      interceptors: [errorInterceptor(() => {}), fakeScope, limiting.interceptor],
    });
  });
  afterAll(async () => {
    await srv?.close();
    await limiting?.close();
  });

  describe.each(Object.keys(PROTOCOLS))("over %s", (protocol) => {
    const client = () => createClient(Health, (PROTOCOLS[protocol] as (u: string) => Transport)(srv.baseUrl));
    const as = (keyId: string, tenant: string) => ({ headers: { "x-test-key": keyId, "x-test-tenant": tenant } });

    it.skipIf(skip)(
      "answers carry ratelimit-* of the tightest bucket; past the key's burst: RATE_LIMITED naming the key",
      async () => {
        const t = freshTenant();
        const seen = [];
        for (let i = 0; i < 3; i++) {
          let header: Headers | undefined;
          const res = await client().check({ service: "" }, { ...as("key_one", t), onHeader: (h) => (header = h) });
          expect(res.status).toBe(Status.SERVING);
          seen.push(rateHeaders(header));
        }
        // Key bucket (3) is tighter than the tenant bucket (5); reset is the time to refill it, in seconds.
        expect(seen).toEqual([
          { limit: "3", remaining: "2", reset: "2" },
          { limit: "3", remaining: "1", reset: "4" },
          { limit: "3", remaining: "0", reset: "6" },
        ]);

        const err = await client()
          .check({ service: "" }, as("key_one", t))
          .then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
        expect(err?.code).toBe(Code.ResourceExhausted);
        const info = err?.findDetails(ErrorInfoSchema)[0];
        expect(info?.reason).toBe("RATE_LIMITED");
        expect(info?.domain).toBe("tenantd");
        expect(info?.metadata.bucket).toBe("key");
        expect(info?.metadata.limit).toBe("3");
        const retryMs = Number(info?.metadata.retry_after_ms);
        expect(retryMs).toBeGreaterThan(1000);
        expect(retryMs).toBeLessThanOrEqual(2000);
        const retry = err?.findDetails(RetryInfoSchema)[0]?.retryDelay;
        expect(Number(retry?.seconds) * 1000 + (retry?.nanos ?? 0) / 1e6).toBe(retryMs);
        expect(err?.findDetails(QuotaFailureSchema)[0]?.violations).toEqual([
          expect.objectContaining({ subject: "key:key_one", description: expect.stringContaining("3 calls") }),
        ]);
        expect(rateHeaders(err?.metadata)).toEqual({ limit: "3", remaining: "0", reset: "6" });
      },
    );

    it.skipIf(skip)("the tenant bucket trips for the tenant's keys together, naming the tenant", async () => {
      const t = freshTenant();
      for (const k of ["key_a", "key_a", "key_a", "key_b", "key_b"]) await client().check({ service: "" }, as(k, t));
      const err = await client()
        .check({ service: "" }, as("key_c", t))
        .catch((e: unknown) => ConnectError.from(e));
      expect(err).toBeInstanceOf(ConnectError);
      const e = err as ConnectError;
      expect(e.code).toBe(Code.ResourceExhausted);
      expect(e.findDetails(ErrorInfoSchema)[0]?.metadata).toMatchObject({ bucket: "tenant", limit: "5" });
      expect(e.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(`tenant:${t}`);
      expect(rateHeaders(e.metadata)).toMatchObject({ limit: "5", remaining: "0" });
      // Another tenant is untouched.
      let header: Headers | undefined;
      await client().check({ service: "" }, { ...as("key_c", freshTenant()), onHeader: (h) => (header = h) });
      expect(rateHeaders(header)).toEqual({ limit: "3", remaining: "2", reset: "2" });
    });

    it.skipIf(skip)("a handler's own error carries the headers too", async () => {
      const err = await client()
        .check({ service: "no.such.Service" }, as("key_h", freshTenant()))
        .catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.NotFound);
      expect(rateHeaders((err as ConnectError).metadata)).toEqual({ limit: "3", remaining: "2", reset: "2" });
    });

    it.skipIf(skip)("owner keys have their own bucket; calls without a scope are not limited", async () => {
      const ownerKey = `key_own${protocol.replace(/\W/g, "")}${Math.random().toString(36).slice(2, 8)}`;
      await client().check({ service: "" }, as(ownerKey, "owner"));
      await client().check({ service: "" }, as(ownerKey, "owner"));
      const err = await client()
        .check({ service: "" }, as(ownerKey, "owner"))
        .catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(`key:${ownerKey}`);
      for (let i = 0; i < 10; i++) {
        let header: Headers | undefined;
        await client().check({ service: "" }, { onHeader: (h) => (header = h) });
        expect(header?.get("ratelimit-limit")).toBeNull();
      }
    });
  });
});
