// TenantService.UpdateTenant: partial updates by presence or update_mask, immutable identity
// fields, field checks, etags and update_time. Suspension and its effect on keys live in
// tenant-suspend.test.ts.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Tenant, Tenant_Environment, Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { newId } from "../../src/domain/ids.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { createTenant, expectFieldError, ownerKeyWith, unique } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

/** The fields an update is expected to leave alone, for comparing before and after. */
function unchangedPart(t: Tenant | undefined, ...changed: Array<keyof Tenant>) {
  const copy: Partial<Tenant> = { ...t };
  for (const k of ["updateTime", "etag", ...changed] as Array<keyof Tenant>) delete copy[k];
  return copy;
}

/** A tenant with every optional setting filled, so that an update that resets one shows. */
function richTenant() {
  return createTenant(h, {
    name: unique("Rich "),
    email: "rich@example.com",
    plan: "pro",
    defaultCurrency: "EUR",
    timezone: "Europe/Paris",
    webhookUrl: "https://rich.example/hooks",
    webhookEnabled: true,
    metadata: { externalId: "cus_rich", tier: "gold" },
  });
}

describe.each(PROTOCOLS)("UpdateTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("changes only the status when only the status is sent", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, status: Tenant_Status.SUSPENDED },
        owner(),
      );
      expect(tenant?.status).toBe(Tenant_Status.SUSPENDED);
      expect(unchangedPart(tenant, "status")).toEqual(unchangedPart(before, "status"));
      const got = await tenants().getTenant({ tenantId: before.id }, owner());
      expect(got.tenant).toEqual(tenant);
    });

    it("changes only the sent fields", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, name: "Renamed", plan: "enterprise", timezone: "Asia/Qatar" },
        owner(),
      );
      expect(tenant).toMatchObject({ name: "Renamed", plan: "enterprise", timezone: "Asia/Qatar" });
      expect(unchangedPart(tenant, "name", "plan", "timezone")).toEqual(
        unchangedPart(before, "name", "plan", "timezone"),
      );
    });

    it("replaces all metadata pairs when metadata is sent", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, metadata: { plan: "enterprise" } },
        owner(),
      );
      expect(tenant?.metadata).toEqual({ plan: "enterprise" });
    });

    it("moves update_time with the clock, keeps create_time and changes the etag", async () => {
      const before = await createTenant(h);
      h.clock.advance(90_000);
      const { tenant } = await tenants().updateTenant({ tenantId: before.id, email: "new@example.com" }, owner());
      expect(timestampMs(tenant!.updateTime!)).toBe(timestampMs(before.updateTime!) + 90_000);
      expect(tenant?.createTime).toEqual(before.createTime);
      expect(tenant?.etag).not.toBe(before.etag);
    });

    it("accepts the current slug and environment as a no-op", async () => {
      const before = await createTenant(h, { environment: Tenant_Environment.LIVE });
      h.clock.advance(1000);
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, slug: before.slug, environment: Tenant_Environment.LIVE },
        owner(),
      );
      expect(tenant).toEqual(before);
    });

    it("clears metadata when update_mask names metadata and none is sent", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, updateMask: { paths: ["metadata"] } },
        owner(),
      );
      expect(tenant?.metadata).toEqual({});
      expect(unchangedPart(tenant, "metadata")).toEqual(unchangedPart(before, "metadata"));
    });

    it("changes only the fields named in update_mask, resetting absent ones to their default", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant(
        { tenantId: before.id, name: "Masked", email: "ignored@example.com", updateMask: { paths: ["name", "plan"] } },
        owner(),
      );
      expect(tenant).toMatchObject({ name: "Masked", email: before.email, plan: "free" });
      expect(unchangedPart(tenant, "name", "plan")).toEqual(unchangedPart(before, "name", "plan"));
    });

    it("switches webhooks off when the webhook URL is removed", async () => {
      const before = await richTenant();
      const { tenant } = await tenants().updateTenant({ tenantId: before.id, webhookUrl: "" }, owner());
      expect(tenant).toMatchObject({ webhookUrl: "", webhookEnabled: false });
    });

    it("applies an update carrying the current etag", async () => {
      const before = await createTenant(h);
      const first = await tenants().updateTenant({ tenantId: before.id, name: "One", etag: before.etag }, owner());
      const second = await tenants().updateTenant(
        { tenantId: before.id, name: "Two", etag: first.tenant!.etag },
        owner(),
      );
      expect(second.tenant?.name).toBe("Two");
      expect(new Set([before.etag, first.tenant?.etag, second.tenant?.etag]).size).toBe(3);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("refuses a slug change with FIELD_IMMUTABLE and changes nothing", async () => {
      const before = await createTenant(h);
      await expectFieldError(
        tenants().updateTenant({ tenantId: before.id, slug: unique("other-"), name: "Sneaky" }, owner()),
        "FIELD_IMMUTABLE",
        "slug",
      );
      const got = await tenants().getTenant({ tenantId: before.id }, owner());
      expect(got.tenant).toEqual(before);
    });

    it("refuses an environment change with FIELD_IMMUTABLE", async () => {
      const before = await createTenant(h);
      await expectFieldError(
        tenants().updateTenant({ tenantId: before.id, environment: Tenant_Environment.LIVE }, owner()),
        "FIELD_IMMUTABLE",
        "environment",
      );
    });

    it("refuses a plain http webhook_url for a live tenant with FIELD_INVALID", async () => {
      const live = await createTenant(h, { environment: Tenant_Environment.LIVE });
      await expectFieldError(
        tenants().updateTenant({ tenantId: live.id, webhookUrl: "http://live.example/hook" }, owner()),
        "FIELD_INVALID",
        "webhook_url",
      );
      const sandbox = await createTenant(h);
      const { tenant } = await tenants().updateTenant(
        { tenantId: sandbox.id, webhookUrl: "http://sandbox.example/hook" },
        owner(),
      );
      expect(tenant?.webhookUrl).toBe("http://sandbox.example/hook");
    });

    it("refuses an update_mask naming an immutable field with FIELD_IMMUTABLE", async () => {
      const before = await createTenant(h);
      await expectFieldError(
        tenants().updateTenant({ tenantId: before.id, updateMask: { paths: ["slug"] } }, owner()),
        "FIELD_IMMUTABLE",
        "slug",
      );
    });

    it("refuses an update_mask naming an unknown field with FIELD_INVALID", async () => {
      const before = await createTenant(h);
      await expectFieldError(
        tenants().updateTenant({ tenantId: before.id, name: "X", updateMask: { paths: ["colour"] } }, owner()),
        "FIELD_INVALID",
        "update_mask",
      );
      const got = await tenants().getTenant({ tenantId: before.id }, owner());
      expect(got.tenant?.name).toBe(before.name);
    });

    const cases: Array<[string, Record<string, unknown>, string]> = [
      ["an unknown time zone", { timezone: "Mars/Olympus" }, "timezone"],
      ["an unknown currency", { defaultCurrency: "XYZ" }, "default_currency"],
      ["a lowercase currency", { defaultCurrency: "usd" }, "default_currency"],
      ["an empty name", { name: "" }, "name"],
      ["a 201-character name", { name: "n".repeat(201) }, "name"],
      ["a malformed email", { email: "nope" }, "email"],
      ["a malformed plan", { plan: "Pro Plan" }, "plan"],
      ["an unspecified status", { status: Tenant_Status.STATUS_UNSPECIFIED }, "status"],
      ["webhooks enabled without a URL", { webhookEnabled: true }, "webhook_enabled"],
      [
        "21 metadata pairs",
        { metadata: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, "v"])) },
        "metadata",
      ],
    ];
    it.each(cases)("refuses %s with FIELD_INVALID and changes nothing", async (_label, patch, field) => {
      const before = await createTenant(h);
      await expectFieldError(
        tenants().updateTenant({ tenantId: before.id, ...patch }, owner()),
        "FIELD_INVALID",
        field,
      );
      const got = await tenants().getTenant({ tenantId: before.id }, owner());
      expect(got.tenant).toEqual(before);
    });
  });

  describe("ABORTED", () => {
    it("refuses a stale etag with ETAG_MISMATCH and changes nothing", async () => {
      const before = await createTenant(h);
      const { tenant: current } = await tenants().updateTenant({ tenantId: before.id, name: "First" }, owner());
      await expectError(
        tenants().updateTenant({ tenantId: before.id, name: "Second", etag: before.etag }, owner()),
        Code.Aborted,
        "ETAG_MISMATCH",
      );
      const got = await tenants().getTenant({ tenantId: before.id }, owner());
      expect(got.tenant).toEqual(current);
    });

    it("refuses an etag tenantd never issued with ETAG_MISMATCH", async () => {
      const before = await createTenant(h);
      await expectError(
        tenants().updateTenant({ tenantId: before.id, name: "X", etag: "not-an-etag" }, owner()),
        Code.Aborted,
        "ETAG_MISMATCH",
      );
    });
  });

  describe("NOT_FOUND", () => {
    it.each([
      ["an unknown well-formed id", () => newId("ten", h.clock.now())],
      ["garbage", () => "garbage"],
    ])("answers TENANT_NOT_FOUND for %s", async (_label, id) => {
      await expectError(
        tenants().updateTenant({ tenantId: id(), name: "Ghost" }, owner()),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key, even for its own tenant, with OWNER_KEY_REQUIRED", async () => {
      const { tenant, key } = await h.newTenant();
      await expectError(
        tenants().updateTenant({ tenantId: tenant.id, plan: "enterprise" }, h.as(key)),
        Code.PermissionDenied,
        "OWNER_KEY_REQUIRED",
      );
    });

    it("refuses an owner key lacking tenants:write with PERMISSION_MISSING", async () => {
      const before = await createTenant(h);
      const reader = await ownerKeyWith(h, ["tenants:read"]);
      await expectError(
        tenants().updateTenant({ tenantId: before.id, name: "Nope" }, h.as(reader)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });
  });
});
