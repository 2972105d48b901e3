// TenantService.CreateTenant: defaults, explicit fields, field bounds, slug uniqueness,
// request_id idempotency (also under 100 concurrent identical requests) and who may create.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tenant_Environment, Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { isTenantId } from "../../src/domain/ids.js";
import { expectError, type Harness, PROTOCOLS, type Protocol, startHarness } from "../helpers/app.js";
import { createTenant, expectFieldError, ownerKeyWith, unique, uniquePlan } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

describe.each(PROTOCOLS)("CreateTenant over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("fills the defaults and derives the slug from the name", async () => {
      const suffix = unique();
      const { tenant } = await tenants().createTenant(
        { name: `Acme Travel ${suffix}`, email: "admin@acme.com" },
        owner(),
      );
      expect(tenant).toBeDefined();
      if (!tenant) return;
      expect(isTenantId(tenant.id)).toBe(true);
      expect(tenant).toMatchObject({
        name: `Acme Travel ${suffix}`,
        email: "admin@acme.com",
        slug: `acme-travel-${suffix}`,
        environment: Tenant_Environment.SANDBOX,
        status: Tenant_Status.ACTIVE,
        plan: "free",
        defaultCurrency: "USD",
        timezone: "UTC",
        webhookUrl: "",
        webhookEnabled: false,
        metadata: {},
      });
      expect(tenant.etag).not.toBe("");
      expect(timestampMs(tenant.createTime!)).toBe(h.clock.now());
      expect(timestampMs(tenant.updateTime!)).toBe(h.clock.now());
      const got = await tenants().getTenant({ tenantId: tenant.id }, owner());
      expect(got.tenant).toEqual(tenant);
    });

    it("gives a second tenant with the same name a different derived slug", async () => {
      const name = `Globex ${unique()}`;
      const first = await createTenant(h, { name }, protocol);
      const second = await createTenant(h, { name }, protocol);
      expect(second.id).not.toBe(first.id);
      expect(second.slug).not.toBe(first.slug);
      expect(second.slug.startsWith(`${first.slug}-`)).toBe(true);
      expect(second.slug).toMatch(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
    });

    it("keeps an explicit slug and every given setting", async () => {
      const slug = unique("initech-");
      const plan = uniquePlan();
      const { tenant } = await tenants().createTenant(
        {
          name: "Initech Trips",
          email: "ops@initech.example",
          slug,
          environment: Tenant_Environment.LIVE,
          plan,
          defaultCurrency: "EUR",
          timezone: "Europe/Paris",
          webhookUrl: "https://initech.example/hooks",
          webhookEnabled: true,
          metadata: { externalId: "cus_initech_001", "tier.level": "gold" },
        },
        owner(),
      );
      expect(tenant).toMatchObject({
        slug,
        environment: Tenant_Environment.LIVE,
        status: Tenant_Status.ACTIVE,
        plan,
        defaultCurrency: "EUR",
        timezone: "Europe/Paris",
        webhookUrl: "https://initech.example/hooks",
        webhookEnabled: true,
        metadata: { externalId: "cus_initech_001", "tier.level": "gold" },
      });
    });

    it("accepts the bounds: a 200-character name, 20 metadata pairs, 40-character keys, 500-character values", async () => {
      const metadata: Record<string, string> = {};
      for (let i = 0; i < 19; i++) metadata[`k${i}`] = "v";
      metadata["k".repeat(40)] = "v".repeat(500);
      const tenant = await createTenant(h, { name: "n".repeat(200), metadata }, protocol);
      expect(tenant.name).toHaveLength(200);
      expect(Object.keys(tenant.metadata)).toHaveLength(20);
    });

    it("accepts a plain http webhook_url for a sandbox tenant", async () => {
      const tenant = await createTenant(
        h,
        { webhookUrl: "http://sandbox.example/hook", webhookEnabled: true },
        protocol,
      );
      expect(tenant).toMatchObject({
        environment: Tenant_Environment.SANDBOX,
        webhookUrl: "http://sandbox.example/hook",
        webhookEnabled: true,
      });
    });

    it("returns the tenant created first for a repeated request_id with the same body", async () => {
      const requestId = unique("req-");
      const body = { name: unique("Idem "), email: "idem@example.com", requestId };
      const first = await tenants().createTenant(body, owner());
      h.clock.advance(1000);
      const again = await tenants().createTenant(body, owner());
      expect(again.tenant?.id).toBe(first.tenant?.id);
      expect(again.tenant).toEqual(first.tenant);
    });
  });

  describe("ALREADY_EXISTS", () => {
    it("refuses an explicit slug that another tenant holds with SLUG_TAKEN", async () => {
      const taken = await createTenant(h, {}, protocol);
      const err = await expectError(
        tenants().createTenant({ name: "Copycat", email: "c@example.com", slug: taken.slug }, owner()),
        Code.AlreadyExists,
        "SLUG_TAKEN",
      );
      expect(err.message).toContain(taken.slug);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    const manyPairs = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, "v"]));
    const longKey = "k".repeat(41);
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ["an empty name", { name: "" }, "name"],
      ["a 201-character name", { name: "n".repeat(201) }, "name"],
      ["a malformed email", { email: "not-an-email" }, "email"],
      ["a slug starting with a dash", { slug: "-acme" }, "slug"],
      ["a slug with capitals and underscores", { slug: "Acme_Travel" }, "slug"],
      ["a 64-character slug", { slug: "a".repeat(64) }, "slug"],
      ["an unknown currency", { defaultCurrency: "XYZ" }, "default_currency"],
      ["a lowercase currency", { defaultCurrency: "usd" }, "default_currency"],
      ["an unknown time zone", { timezone: "Mars/Olympus" }, "timezone"],
      ["21 metadata pairs", { metadata: manyPairs }, "metadata"],
      ["a 41-character metadata key", { metadata: { [longKey]: "v" } }, `metadata["${longKey}"]`],
      ["a 501-character metadata value", { metadata: { note: "v".repeat(501) } }, `metadata["note"]`],
      ["webhook_enabled without a webhook_url", { webhookEnabled: true }, "webhook_enabled"],
      ["a webhook_url that is not http(s)", { webhookUrl: "ftp://example.com/hook" }, "webhook_url"],
      ["a webhook_url with credentials", { webhookUrl: "https://user:pw@example.com/hook" }, "webhook_url"],
      [
        "a plain http webhook_url for a live tenant",
        { environment: Tenant_Environment.LIVE, webhookUrl: "http://example.com/hook" },
        "webhook_url",
      ],
      ["a malformed plan", { plan: "Pro" }, "plan"],
      ["a request_id with spaces", { requestId: "not ok" }, "request_id"],
    ];
    it.each(cases)("refuses %s with FIELD_INVALID", async (_label, patch, field) => {
      const plan = uniquePlan();
      await expectFieldError(
        tenants().createTenant({ name: unique("Invalid "), email: "admin@example.com", plan, ...patch }, owner()),
        "FIELD_INVALID",
        field,
      );
      // Nothing was created.
      const list = await tenants().listTenants({ plan }, owner());
      expect(list.tenants).toEqual([]);
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("refuses a repeated request_id with another body with REQUEST_ID_CONFLICT", async () => {
      const requestId = unique("req-");
      const name = unique("Conflict ");
      await tenants().createTenant({ name, email: "a@example.com", requestId }, owner());
      const err = await expectError(
        tenants().createTenant({ name, email: "b@example.com", requestId }, owner()),
        Code.FailedPrecondition,
        "REQUEST_ID_CONFLICT",
      );
      expect(err.message).not.toContain("b@example.com");
    });

    it("remembers a request_id for 24 hours only", async () => {
      const requestId = unique("req-");
      const first = await tenants().createTenant(
        { name: unique("Day one "), email: "a@example.com", requestId },
        owner(),
      );
      h.clock.advance(24 * 3600_000 - 1);
      await expectError(
        tenants().createTenant({ name: unique("Day two "), email: "a@example.com", requestId }, owner()),
        Code.FailedPrecondition,
        "REQUEST_ID_CONFLICT",
      );
      h.clock.advance(1);
      const later = await tenants().createTenant(
        { name: unique("Day two "), email: "a@example.com", requestId },
        owner(),
      );
      expect(later.tenant?.id).not.toBe(first.tenant?.id);
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("refuses a call without a key with KEY_MISSING", async () => {
      await expectError(
        tenants().createTenant({ name: "Anonymous", email: "a@example.com" }),
        Code.Unauthenticated,
        "KEY_MISSING",
      );
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key with OWNER_KEY_REQUIRED", async () => {
      const { key } = await h.newTenant();
      await expectError(
        tenants().createTenant({ name: "Sub-tenant", email: "a@example.com" }, h.as(key)),
        Code.PermissionDenied,
        "OWNER_KEY_REQUIRED",
      );
    });

    it("refuses an owner key lacking tenants:write with PERMISSION_MISSING", async () => {
      const readOnly = await ownerKeyWith(h, ["tenants:read"]);
      const err = await expectError(
        tenants().createTenant({ name: "Nope", email: "a@example.com" }, h.as(readOnly)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      expect(err.message).toContain("tenants:write");
    });
  });
});

describe("CreateTenant under concurrency", () => {
  it("10 concurrent creates with one name and no request_id make 10 tenants with distinct slugs", async () => {
    const plan = uniquePlan();
    const name = unique("Crowd ");
    const created = await Promise.all(
      Array.from({ length: 10 }, (_, i) => createTenant(h, { name, plan }, PROTOCOLS[i % PROTOCOLS.length])),
    );
    expect(new Set(created.map((t) => t.id)).size).toBe(10);
    expect(new Set(created.map((t) => t.slug)).size).toBe(10);
    const list = await h.client(TenantService).listTenants({ plan, pageSize: 100 }, owner());
    expect(list.tenants).toHaveLength(10);
  });

  it("100 concurrent identical creates with one request_id make exactly one tenant", async () => {
    const plan = uniquePlan();
    const body = { name: unique("Race "), email: "race@example.com", plan, requestId: unique("race-") };
    const protocols: Protocol[] = PROTOCOLS;
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        h.client(TenantService, protocols[i % protocols.length]).createTenant(body, owner()),
      ),
    );
    const ids = new Set(responses.map((r) => r.tenant?.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    expect(id && isTenantId(id)).toBe(true);
    const list = await h.client(TenantService).listTenants({ plan, pageSize: 100 }, owner());
    expect(list.tenants.map((t) => t.id)).toEqual([id]);
  });
});
