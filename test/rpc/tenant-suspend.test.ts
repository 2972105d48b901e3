// Suspension through UpdateTenant's status: the tenant's keys are refused at once (even when the
// key's verification is cached), the owner still reads, updates and acts as the tenant, and
// reactivation makes the keys work again.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

describe.each(PROTOCOLS)("suspending a tenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  /** A tenant whose key has just been used, so that its verification is cached. */
  async function suspendedTenant() {
    const t = await h.newTenant();
    const warm = await tenants().getCurrentTenant({}, h.as(t.key));
    expect(warm.tenant?.status).toBe(Tenant_Status.ACTIVE);
    const { tenant } = await tenants().updateTenant(
      { tenantId: t.tenant.id, status: Tenant_Status.SUSPENDED },
      owner(),
    );
    expect(tenant?.status).toBe(Tenant_Status.SUSPENDED);
    return t;
  }

  describe("PERMISSION_DENIED", () => {
    it("refuses the tenant's key at once with TENANT_SUSPENDED", async () => {
      const { tenant, key } = await suspendedTenant();
      const err = await expectError(
        tenants().getCurrentTenant({}, h.as(key)),
        Code.PermissionDenied,
        "TENANT_SUSPENDED",
      );
      expect(err.message).not.toContain(key);
      await expectError(
        tenants().updateCurrentTenant({ timezone: "Asia/Qatar" }, h.as(key)),
        Code.PermissionDenied,
        "TENANT_SUSPENDED",
      );
      await expectError(
        h.client(KeyService, protocol).listKeys({ tenantId: tenant.id }, h.as(key)),
        Code.PermissionDenied,
        "TENANT_SUSPENDED",
      );
    });
  });

  describe("OK", () => {
    it("lets the owner read the suspended tenant", async () => {
      const { tenant } = await suspendedTenant();
      const got = await tenants().getTenant({ tenantId: tenant.id }, owner());
      expect(got.tenant?.status).toBe(Tenant_Status.SUSPENDED);
    });

    it("lets the owner act as the suspended tenant with x-tenant-id", async () => {
      const { tenant } = await suspendedTenant();
      const current = await tenants().getCurrentTenant({}, h.as(h.ownerKey, tenant.id));
      expect(current.tenant).toMatchObject({ id: tenant.id, status: Tenant_Status.SUSPENDED });
      const updated = await tenants().updateCurrentTenant(
        { metadata: { note: "fixed by support" } },
        h.as(h.ownerKey, tenant.id),
      );
      expect(updated.tenant?.metadata).toEqual({ note: "fixed by support" });
    });

    it("makes the key work again on reactivation, with the data kept", async () => {
      const { tenant, key } = await suspendedTenant();
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.PermissionDenied, "TENANT_SUSPENDED");
      const { tenant: reactivated } = await tenants().updateTenant(
        { tenantId: tenant.id, status: Tenant_Status.ACTIVE },
        owner(),
      );
      expect(reactivated?.status).toBe(Tenant_Status.ACTIVE);
      const current = await tenants().getCurrentTenant({}, h.as(key));
      expect(current.tenant).toMatchObject({
        id: tenant.id,
        name: tenant.name,
        slug: tenant.slug,
        status: Tenant_Status.ACTIVE,
      });
    });

    it("keeps a suspended tenant suspended when it is suspended again", async () => {
      const { tenant, key } = await suspendedTenant();
      await tenants().updateTenant({ tenantId: tenant.id, status: Tenant_Status.SUSPENDED }, owner());
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.PermissionDenied, "TENANT_SUSPENDED");
    });
  });
});
