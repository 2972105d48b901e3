// TenantService.GetTenant: the owner reads any tenant by id; unknown and malformed ids answer
// NOT_FOUND alike; tenant keys are refused.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId } from "../../src/domain/ids.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { createTenant, expectFieldError, ownerKeyWith } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

describe.each(PROTOCOLS)("GetTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("answers the tenant as created", async () => {
      const created = await createTenant(h, { metadata: { externalId: "cus_1" } });
      const { tenant } = await tenants().getTenant({ tenantId: created.id }, owner());
      expect(tenant).toEqual(created);
      expect(tenant?.status).toBe(Tenant_Status.ACTIVE);
    });

    it("serves an owner key holding only tenants:read", async () => {
      const created = await createTenant(h);
      const reader = await ownerKeyWith(h, ["tenants:read"]);
      const { tenant } = await tenants().getTenant({ tenantId: created.id }, h.as(reader));
      expect(tenant?.id).toBe(created.id);
    });
  });

  describe("NOT_FOUND", () => {
    it.each([
      ["an unknown well-formed id", () => newId("ten", h.clock.now())],
      ["a malformed id", () => "ten_not-a-real-id"],
      ["garbage", () => "garbage"],
      ["a key id", () => "key_0123456789abcdef"],
    ])("answers TENANT_NOT_FOUND for %s", async (_label, id) => {
      const tenantId = id();
      const err = await expectError(tenants().getTenant({ tenantId }, owner()), Code.NotFound, "TENANT_NOT_FOUND");
      expect(err.message).toContain(tenantId);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("refuses an empty id with FIELD_INVALID", async () => {
      await expectFieldError(tenants().getTenant({ tenantId: "" }, owner()), "FIELD_INVALID", "tenant_id");
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("refuses a call without a key with KEY_MISSING", async () => {
      const created = await createTenant(h);
      await expectError(tenants().getTenant({ tenantId: created.id }), Code.Unauthenticated, "KEY_MISSING");
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key, even for its own tenant, with OWNER_KEY_REQUIRED", async () => {
      const { tenant, key } = await h.newTenant();
      await expectError(
        tenants().getTenant({ tenantId: tenant.id }, h.as(key)),
        Code.PermissionDenied,
        "OWNER_KEY_REQUIRED",
      );
    });

    it("refuses an owner key lacking tenants:read with PERMISSION_MISSING", async () => {
      const created = await createTenant(h);
      const writer = await ownerKeyWith(h, ["tenants:write"]);
      await expectError(
        tenants().getTenant({ tenantId: created.id }, h.as(writer)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });
  });
});
