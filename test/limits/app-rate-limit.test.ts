// Rate limits on every authenticated call, through the whole app: the key bucket trips first,
// the refusal carries RetryInfo, QuotaFailure and RateLimit-* on gRPC, Connect and REST (429 with
// Retry-After), the bucket refills with time, and another tenant is never affected.
import { Code, type ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QuotaFailureSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError, type Harness, startHarness } from "../helpers/app.js";

const KEY = { capacity: 3, refillPerSec: 2 };
const UNREACHABLE = { capacity: 1e12, refillPerSec: 1e12 };

let h: Harness;
beforeAll(async () => {
  h = await startHarness({
    rateLimitPlans: {
      plans: { free: { key: KEY, tenant: { capacity: 1000, refillPerSec: 1000 } } },
      defaultPlan: "free",
      owner: UNREACHABLE,
    },
  });
});
afterAll(async () => {
  await h?.close();
});

/** Waits for the bucket to have tokens again: the clock with the in-process limiter, real time with Redis. */
async function refill(ms: number): Promise<void> {
  h.clock.advance(ms);
  if (process.env.REDIS_URL) await new Promise((r) => setTimeout(r, ms));
}

describe("per-call rate limits", () => {
  it.each(["grpc", "connect"] as const)(
    "over %s the key bucket trips with RetryInfo, QuotaFailure and headers",
    async (protocol) => {
      const { key, keyId } = await h.newTenant();
      const client = h.client(TenantService, protocol);
      const headers: Array<string | null> = [];
      for (let i = 0; i < KEY.capacity; i++) {
        await client.getCurrentTenant(
          {},
          { ...h.as(key), onHeader: (hd) => headers.push(hd.get("ratelimit-remaining")) },
        );
      }
      expect(headers).toEqual(["2", "1", "0"]);
      const err: ConnectError = await expectError(
        client.getCurrentTenant({}, h.as(key)),
        Code.ResourceExhausted,
        "RATE_LIMITED",
      );
      const retry = err.findDetails(RetryInfoSchema)[0];
      expect(Number(retry?.retryDelay?.seconds ?? 0n) * 1000 + (retry?.retryDelay?.nanos ?? 0) / 1e6).toBeGreaterThan(
        0,
      );
      expect(err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(`key:${keyId}`);
      expect(err.metadata.get("ratelimit-limit")).toBe(String(KEY.capacity));
      await refill(600);
      await client.getCurrentTenant({}, h.as(key));
    },
  );

  it("over REST answers 429 with Retry-After and RateLimit-* headers", async () => {
    const { key } = await h.newTenant();
    const get = () => fetch(`${h.baseUrl}/v1/tenant`, { headers: { authorization: `Bearer ${key}` } });
    for (let i = 0; i < KEY.capacity; i++) expect((await get()).status).toBe(200);
    const res = await get();
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(res.headers.get("ratelimit-limit")).toBe(String(KEY.capacity));
    expect(res.headers.get("ratelimit-remaining")).toBe("0");
    const body = (await res.json()) as { code: number; details: Array<{ "@type": string; reason?: string }> };
    expect(body.code).toBe(Code.ResourceExhausted);
    expect(body.details.find((d) => d["@type"].endsWith("google.rpc.ErrorInfo"))?.reason).toBe("RATE_LIMITED");
  });

  it("one tenant at its limit never affects another", async () => {
    const a = await h.newTenant();
    const b = await h.newTenant();
    const client = h.client(TenantService, "connect");
    for (let i = 0; i < KEY.capacity; i++) await client.getCurrentTenant({}, h.as(a.key));
    await expectError(client.getCurrentTenant({}, h.as(a.key)), Code.ResourceExhausted, "RATE_LIMITED");
    for (let i = 0; i < KEY.capacity; i++) await client.getCurrentTenant({}, h.as(b.key));
  });
});
