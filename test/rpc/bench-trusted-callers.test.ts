import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { UsageService } from "../../gen/tenantd/v1/usage_service_pb.js";
import { type Harness, startHarness } from "../helpers/app.js";

// AppOptions.benchTrustCallers: the bench's "same RPC with auth disabled" baseline
// (bench/unauthenticated-main.ts). A caller is verified on its first call of a method and then
// trusted; the per-call rate limit and usage counting are off. No configuration reaches it.

let h: Harness;
beforeAll(async () => {
  h = await startHarness({}, { benchTrustCallers: true });
});
afterAll(async () => {
  await h?.close();
});

describe("benchTrustCallers (bench baseline only)", () => {
  it("verifies the first call, then trusts the same header: a revoked key keeps working", async () => {
    const t = await h.newTenant();
    const tenants = h.client(TenantService);
    let header: Headers | undefined;
    const first = await tenants.getCurrentTenant({}, { ...h.as(t.key), onHeader: (x) => (header = x) });
    expect(first.tenant?.id).toBe(t.tenant.id);
    // No per-call rate limit: no RateLimit headers.
    expect(header?.get("ratelimit-limit")).toBeNull();
    await h.client(KeyService).revokeKey({ tenantId: t.tenant.id, keyId: t.keyId }, h.as(h.ownerKey));
    expect((await tenants.getCurrentTenant({}, h.as(t.key))).tenant?.id).toBe(t.tenant.id);
  });

  it("still refuses a key that fails its first verification, and checks permissions on it", async () => {
    const err = await h
      .client(TenantService)
      .getCurrentTenant({}, h.as("tdk_tenant_live_0000000000000000_00000000000000000000000000000000000000"))
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(err?.code).toBe(Code.Unauthenticated);
    const t = await h.newTenant({ permissions: ["tenant:read"] });
    const denied = await h
      .client(UsageService)
      .recordUsage({ metric: "llm_tokens", quantity: 1n }, h.as(t.key))
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(denied?.code).toBe(Code.PermissionDenied);
  });

  it("counts no api_calls", async () => {
    const t = await h.newTenant();
    for (let i = 0; i < 3; i++) await h.client(TenantService).getCurrentTenant({}, h.as(t.key));
    await h.app.usage.flush();
    const s = await h.client(UsageService).getUsageSummary({}, h.as(t.key));
    expect(s.summary?.apiCalls ?? 0n).toBe(0n);
  });
});
