// TenantService.DeleteTenant: the tenant's keys are refused at once (even cached ones), the
// tenant is gone for every read, its schema is dropped, a tombstone remains, and a second delete
// answers NOT_FOUND.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId, tenantSchemaName } from "../../src/domain/ids.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { createTenant, keyIdOfApiKey, ownerKeyWith } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

async function schemaExists(tenantId: string): Promise<boolean> {
  const res = (await h.db.knex.raw("select 1 from information_schema.schemata where schema_name = ?", [
    tenantSchemaName(tenantId),
  ])) as { rows: unknown[] };
  return res.rows.length > 0;
}

describe.each(PROTOCOLS)("DeleteTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("answers the id and the delete time, and leaves a tombstone naming the deleter", async () => {
      const tenant = await createTenant(h);
      h.clock.advance(5000);
      const res = await tenants().deleteTenant({ tenantId: tenant.id }, owner());
      expect(res.tenantId).toBe(tenant.id);
      expect(timestampMs(res.deleteTime!)).toBe(h.clock.now());
      const tomb = await h.app.stores.tenants.getTombstone(tenant.id);
      expect(tomb).toEqual({
        tenantId: tenant.id,
        slug: tenant.slug,
        deletedAt: h.clock.now(),
        deletedBy: keyIdOfApiKey(h.ownerKey),
      });
    });

    it("refuses the tenant's keys at once, even one whose verification is cached", async () => {
      const { tenant, key } = await h.newTenant();
      // Warm the verification cache with this very key.
      const warm = await tenants().getCurrentTenant({}, h.as(key));
      expect(warm.tenant?.id).toBe(tenant.id);
      await tenants().deleteTenant({ tenantId: tenant.id }, owner());
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.Unauthenticated, "KEY_INVALID");
      await expectError(
        tenants().updateCurrentTenant({ timezone: "Asia/Qatar" }, h.as(key)),
        Code.Unauthenticated,
        "KEY_INVALID",
      );
    });

    it("makes the tenant unknown to every read", async () => {
      const tenant = await createTenant(h);
      await tenants().deleteTenant({ tenantId: tenant.id }, owner());
      await expectError(tenants().getTenant({ tenantId: tenant.id }, owner()), Code.NotFound, "TENANT_NOT_FOUND");
      await expectError(tenants().getCurrentTenant({}, h.as(h.ownerKey, tenant.id)), Code.NotFound, "TENANT_NOT_FOUND");
      await expectError(
        tenants().updateTenant({ tenantId: tenant.id, name: "Zombie" }, owner()),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
      const list = await tenants().listTenants({ plan: tenant.plan, pageSize: 100 }, owner());
      expect(list.tenants.map((t) => t.id)).not.toContain(tenant.id);
    });

    it("drops the tenant's schema", async () => {
      const tenant = await createTenant(h);
      expect(await schemaExists(tenant.id)).toBe(true);
      await tenants().deleteTenant({ tenantId: tenant.id }, owner());
      expect(await schemaExists(tenant.id)).toBe(false);
    });

    it("leaves other tenants and their keys alone", async () => {
      const doomed = await h.newTenant();
      const survivor = await h.newTenant();
      await tenants().deleteTenant({ tenantId: doomed.tenant.id }, owner());
      const current = await tenants().getCurrentTenant({}, h.as(survivor.key));
      expect(current.tenant?.id).toBe(survivor.tenant.id);
      expect(await schemaExists(survivor.tenant.id)).toBe(true);
    });
  });

  describe("NOT_FOUND", () => {
    it("answers TENANT_NOT_FOUND to a second delete and keeps the first tombstone", async () => {
      const tenant = await createTenant(h);
      await tenants().deleteTenant({ tenantId: tenant.id }, owner());
      const tomb = await h.app.stores.tenants.getTombstone(tenant.id);
      h.clock.advance(1000);
      await expectError(tenants().deleteTenant({ tenantId: tenant.id }, owner()), Code.NotFound, "TENANT_NOT_FOUND");
      expect(await h.app.stores.tenants.getTombstone(tenant.id)).toEqual(tomb);
    });

    it.each([
      ["an unknown well-formed id", () => newId("ten", h.clock.now())],
      ["garbage", () => "garbage"],
    ])("answers TENANT_NOT_FOUND for %s", async (_label, id) => {
      await expectError(tenants().deleteTenant({ tenantId: id() }, owner()), Code.NotFound, "TENANT_NOT_FOUND");
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key, even for its own tenant, with OWNER_KEY_REQUIRED", async () => {
      const { tenant, key } = await h.newTenant();
      await expectError(
        tenants().deleteTenant({ tenantId: tenant.id }, h.as(key)),
        Code.PermissionDenied,
        "OWNER_KEY_REQUIRED",
      );
      expect(await schemaExists(tenant.id)).toBe(true);
    });

    it("refuses an owner key lacking tenants:delete with PERMISSION_MISSING", async () => {
      const tenant = await createTenant(h);
      const writer = await ownerKeyWith(h, ["tenants:read", "tenants:write"]);
      await expectError(
        tenants().deleteTenant({ tenantId: tenant.id }, h.as(writer)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      const got = await tenants().getTenant({ tenantId: tenant.id }, owner());
      expect(got.tenant?.id).toBe(tenant.id);
    });
  });
});
