// TenantService.GetCurrentTenant, UpdateCurrentTenant and DeleteCurrentTenant: the caller's
// tenant is the key's tenant or, for an owner key, the `x-tenant-id` tenant; tenant keys cannot
// name another tenant; identity fields are immutable; each RPC needs its own permission.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tenant_Environment, Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId, tenantSchemaName } from "../../src/domain/ids.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { expectFieldError, unique } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

/** The body of the seed's `PATCH /v1/tenant` example. */
const seedBody = {
  webhookUrl: "https://acme.com/webhooks/travelbase",
  webhookEnabled: true,
  defaultCurrency: "USD",
  timezone: "Asia/Qatar",
  metadata: { plan: "enterprise" },
};

describe.each(PROTOCOLS)("GetCurrentTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("answers the key's tenant", async () => {
      const { tenant, key } = await h.newTenant();
      const res = await tenants().getCurrentTenant({}, h.as(key));
      expect(res.tenant).toEqual(tenant);
    });

    it("answers the x-tenant-id tenant for an owner key", async () => {
      const { tenant } = await h.newTenant();
      const res = await tenants().getCurrentTenant({}, h.as(h.ownerKey, tenant.id));
      expect(res.tenant).toEqual(tenant);
    });

    it("accepts a tenant key sending its own tenant's id", async () => {
      const { tenant, key } = await h.newTenant();
      const res = await tenants().getCurrentTenant({}, h.as(key, tenant.id));
      expect(res.tenant?.id).toBe(tenant.id);
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("refuses an owner key without x-tenant-id with TENANT_CONTEXT_REQUIRED", async () => {
      await expectError(tenants().getCurrentTenant({}, owner()), Code.FailedPrecondition, "TENANT_CONTEXT_REQUIRED");
    });
  });

  describe("NOT_FOUND", () => {
    it.each([
      ["an unknown well-formed id", () => newId("ten", h.clock.now())],
      ["garbage", () => "garbage"],
    ])("answers TENANT_NOT_FOUND to an owner naming %s", async (_label, id) => {
      await expectError(tenants().getCurrentTenant({}, h.as(h.ownerKey, id())), Code.NotFound, "TENANT_NOT_FOUND");
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key sending another tenant's id with ACT_AS_FORBIDDEN", async () => {
      const mine = await h.newTenant();
      const other = await h.newTenant();
      const err = await expectError(
        tenants().getCurrentTenant({}, h.as(mine.key, other.tenant.id)),
        Code.PermissionDenied,
        "ACT_AS_FORBIDDEN",
      );
      expect(err.message).not.toContain(other.tenant.name);
    });

    it("refuses a key lacking tenant:read with PERMISSION_MISSING", async () => {
      const { key } = await h.newTenant({ permissions: ["keys:read"] });
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.PermissionDenied, "PERMISSION_MISSING");
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("refuses a malformed key with KEY_INVALID", async () => {
      const { key } = await h.newTenant();
      const mutated = `${key.slice(0, -1)}${key.endsWith("a") ? "b" : "a"}`;
      await expectError(tenants().getCurrentTenant({}, h.as(mutated)), Code.Unauthenticated, "KEY_INVALID");
    });
  });
});

describe.each(PROTOCOLS)("UpdateCurrentTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("applies the seed's settings and answers them", async () => {
      const { tenant, key } = await h.newTenant();
      const { tenant: updated } = await tenants().updateCurrentTenant(seedBody, h.as(key));
      expect(updated).toMatchObject({
        id: tenant.id,
        name: tenant.name,
        slug: tenant.slug,
        environment: tenant.environment,
        status: Tenant_Status.ACTIVE,
        ...seedBody,
      });
      expect(updated?.etag).not.toBe(tenant.etag);
      const got = await tenants().getCurrentTenant({}, h.as(key));
      expect(got.tenant).toEqual(updated);
    });

    it("applies an owner's update on behalf of the x-tenant-id tenant", async () => {
      const { tenant } = await h.newTenant();
      const { tenant: updated } = await tenants().updateCurrentTenant(seedBody, h.as(h.ownerKey, tenant.id));
      expect(updated).toMatchObject({ id: tenant.id, ...seedBody });
    });

    it("accepts the current id, slug and environment as a no-op", async () => {
      const { tenant, key } = await h.newTenant();
      h.clock.advance(1000);
      const { tenant: same } = await tenants().updateCurrentTenant(
        { id: tenant.id, slug: tenant.slug, environment: tenant.environment },
        h.as(key),
      );
      expect(same).toEqual(tenant);
    });

    it("refuses a stale etag with ABORTED ETAG_MISMATCH", async () => {
      const { tenant, key } = await h.newTenant();
      await tenants().updateCurrentTenant({ timezone: "Europe/Paris", etag: tenant.etag }, h.as(key));
      await expectError(
        tenants().updateCurrentTenant({ timezone: "Asia/Qatar", etag: tenant.etag }, h.as(key)),
        Code.Aborted,
        "ETAG_MISMATCH",
      );
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("refuses an unknown time zone with FIELD_INVALID and changes nothing", async () => {
      const { tenant, key } = await h.newTenant();
      await expectFieldError(
        tenants().updateCurrentTenant({ ...seedBody, timezone: "Mars/Olympus" }, h.as(key)),
        "FIELD_INVALID",
        "timezone",
      );
      const got = await tenants().getCurrentTenant({}, h.as(key));
      expect(got.tenant).toEqual(tenant);
    });

    it("refuses webhooks enabled without a URL with FIELD_INVALID", async () => {
      const { key } = await h.newTenant();
      await expectFieldError(
        tenants().updateCurrentTenant({ webhookEnabled: true }, h.as(key)),
        "FIELD_INVALID",
        "webhook_enabled",
      );
    });

    it("refuses an update_mask naming a field the tenant cannot change with FIELD_INVALID", async () => {
      const { key } = await h.newTenant();
      await expectFieldError(
        tenants().updateCurrentTenant({ updateMask: { paths: ["plan"] } }, h.as(key)),
        "FIELD_INVALID",
        "update_mask",
      );
    });

    it.each([
      ["id", () => ({ id: newId("ten", h.clock.now()) })],
      ["slug", () => ({ slug: unique("other-") })],
      ["environment", () => ({ environment: Tenant_Environment.LIVE })],
    ])("refuses a change of %s with FIELD_IMMUTABLE and changes nothing", async (field, change) => {
      const { tenant, key } = await h.newTenant();
      await expectFieldError(
        tenants().updateCurrentTenant({ ...seedBody, ...change() }, h.as(key)),
        "FIELD_IMMUTABLE",
        field,
      );
      const got = await tenants().getCurrentTenant({}, h.as(key));
      expect(got.tenant).toEqual(tenant);
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a key holding only tenant:read with PERMISSION_MISSING", async () => {
      const { tenant, key } = await h.newTenant({ permissions: ["tenant:read"] });
      const err = await expectError(
        tenants().updateCurrentTenant(seedBody, h.as(key)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      expect(err.message).toContain("tenant:write");
      const got = await tenants().getCurrentTenant({}, h.as(key));
      expect(got.tenant).toEqual(tenant);
    });

    it("refuses a tenant key sending another tenant's id with ACT_AS_FORBIDDEN", async () => {
      const mine = await h.newTenant();
      const other = await h.newTenant();
      await expectError(
        tenants().updateCurrentTenant(seedBody, h.as(mine.key, other.tenant.id)),
        Code.PermissionDenied,
        "ACT_AS_FORBIDDEN",
      );
      const got = await tenants().getCurrentTenant({}, h.as(other.key));
      expect(got.tenant).toEqual(other.tenant);
    });
  });
});

describe.each(PROTOCOLS)("DeleteCurrentTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  async function schemaExists(tenantId: string): Promise<boolean> {
    const res = (await h.db.knex.raw("select 1 from information_schema.schemata where schema_name = ?", [
      tenantSchemaName(tenantId),
    ])) as { rows: unknown[] };
    return res.rows.length > 0;
  }

  describe("OK", () => {
    it("deletes the key's tenant and refuses its keys afterwards", async () => {
      const { tenant, key } = await h.newTenant({ permissions: ["tenant:read", "tenant:delete"] });
      const res = await tenants().deleteCurrentTenant({}, h.as(key));
      expect(res.tenantId).toBe(tenant.id);
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.Unauthenticated, "KEY_INVALID");
      await expectError(tenants().getTenant({ tenantId: tenant.id }, owner()), Code.NotFound, "TENANT_NOT_FOUND");
      expect(await schemaExists(tenant.id)).toBe(false);
      expect(await h.app.stores.tenants.getTombstone(tenant.id)).toMatchObject({
        tenantId: tenant.id,
        slug: tenant.slug,
      });
    });

    it("deletes the x-tenant-id tenant for an owner key", async () => {
      const { tenant, key } = await h.newTenant();
      const res = await tenants().deleteCurrentTenant({}, h.as(h.ownerKey, tenant.id));
      expect(res.tenantId).toBe(tenant.id);
      await expectError(tenants().getCurrentTenant({}, h.as(key)), Code.Unauthenticated, "KEY_INVALID");
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a key lacking tenant:delete with PERMISSION_MISSING", async () => {
      const { tenant, key } = await h.newTenant({ permissions: ["tenant:read", "tenant:write"] });
      await expectError(tenants().deleteCurrentTenant({}, h.as(key)), Code.PermissionDenied, "PERMISSION_MISSING");
      const got = await tenants().getCurrentTenant({}, h.as(key));
      expect(got.tenant?.id).toBe(tenant.id);
    });

    it("refuses a tenant key sending another tenant's id with ACT_AS_FORBIDDEN", async () => {
      const mine = await h.newTenant();
      const other = await h.newTenant();
      await expectError(
        tenants().deleteCurrentTenant({}, h.as(mine.key, other.tenant.id)),
        Code.PermissionDenied,
        "ACT_AS_FORBIDDEN",
      );
      expect(await schemaExists(other.tenant.id)).toBe(true);
      expect(await schemaExists(mine.tenant.id)).toBe(true);
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("refuses an owner key without x-tenant-id with TENANT_CONTEXT_REQUIRED", async () => {
      await expectError(tenants().deleteCurrentTenant({}, owner()), Code.FailedPrecondition, "TENANT_CONTEXT_REQUIRED");
    });
  });
});
