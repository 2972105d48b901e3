// The audit trail of tenant changes records the actor: an owner acting on behalf of a tenant
// (x-tenant-id) is recorded as an owner acting as the tenant; a tenant key as itself.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { expectFieldError, keyIdOfApiKey } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const UPDATE_CURRENT = "tenantd.v1.TenantService/UpdateCurrentTenant";

async function eventsOf(tenantId: string, method: string) {
  const events = await h.app.stores.audit.list(tenantId, { limit: 50 });
  return events.filter((e) => e.method === method);
}

describe.each(PROTOCOLS)("audit of tenant updates over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  it("records an owner acting on behalf of a tenant as an owner acting as the tenant", async () => {
    const { tenant } = await h.newTenant();
    h.clock.advance(2000);
    await tenants().updateCurrentTenant({ timezone: "Asia/Qatar" }, h.as(h.ownerKey, tenant.id));
    const events = await eventsOf(tenant.id, UPDATE_CURRENT);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      tenantId: tenant.id,
      actorKind: "owner",
      actorKeyId: keyIdOfApiKey(h.ownerKey),
      actingAs: true,
      resource: "tenant",
      createdAt: h.clock.now(),
      details: { fields: "timezone" },
    });
    // The key id is recorded, never the key.
    expect(JSON.stringify(events[0])).not.toContain(h.ownerKey);
    expect(events[0]?.requestId).not.toBe("");
  });

  it("records a tenant key's update as the tenant itself, not acting as anyone", async () => {
    const { tenant, key, keyId } = await h.newTenant();
    await tenants().updateCurrentTenant({ defaultCurrency: "EUR", metadata: { plan: "pro" } }, h.as(key));
    const events = await eventsOf(tenant.id, UPDATE_CURRENT);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      tenantId: tenant.id,
      actorKind: "tenant",
      actorKeyId: keyId,
      actingAs: false,
    });
    expect(events[0]?.details.fields?.split(",")).toHaveLength(2);
  });

  it("records the owner's UpdateTenant on the collection with the owner as actor", async () => {
    const { tenant } = await h.newTenant();
    await tenants().updateTenant({ tenantId: tenant.id, status: Tenant_Status.SUSPENDED }, h.as(h.ownerKey));
    const events = await eventsOf(tenant.id, "tenantd.v1.TenantService/UpdateTenant");
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actorKind: "owner", actorKeyId: keyIdOfApiKey(h.ownerKey) });
  });

  it("records nothing for a refused update", async () => {
    const { tenant, key } = await h.newTenant();
    await expectFieldError(
      tenants().updateCurrentTenant({ timezone: "Mars/Olympus" }, h.as(key)),
      "FIELD_INVALID",
      "timezone",
    );
    expect(await eventsOf(tenant.id, UPDATE_CURRENT)).toEqual([]);
  });
});
