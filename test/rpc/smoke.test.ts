import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

describe.each(PROTOCOLS)("walking skeleton over %s", (protocol) => {
  it("an owner creates a tenant whose key reads the current tenant", async () => {
    const { tenant, key } = await h.newTenant({ name: `Smoke ${protocol}` });
    const res = await h.client(TenantService, protocol).getCurrentTenant({}, h.as(key));
    expect(res.tenant?.id).toBe(tenant.id);
  });

  it("a call without a key is refused with KEY_MISSING", async () => {
    await expectError(h.client(TenantService, protocol).getCurrentTenant({}), Code.Unauthenticated, "KEY_MISSING");
  });
});
