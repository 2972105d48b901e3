// TenantService.ListTenants: newest first, page by page without gaps or repeats, filters, and
// page tokens bound to the filters of the first request and to their signature. The database is
// shared by every test of this file, so each test filters on a plan name of its own.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tenant_Environment, Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { createTenant, expectFieldError, ownerKeyWith, uniquePlan } from "../helpers/tenants.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const owner = () => h.as(h.ownerKey);

/** Creates `n` tenants on `plan`, one second apart, and answers their ids oldest first. */
async function tenantsOnPlan(plan: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    ids.push((await createTenant(h, { plan })).id);
    h.clock.advance(1000);
  }
  return ids;
}

describe.each(PROTOCOLS)("ListTenants over %s", (protocol) => {
  const tenants = () => h.client(TenantService, protocol);

  describe("OK", () => {
    it("walks every page of size 2, newest first, with no gaps and no repeats", async () => {
      const plan = uniquePlan();
      const created = await tenantsOnPlan(plan, 5);
      const pages: string[][] = [];
      let pageToken = "";
      do {
        const res = await tenants().listTenants({ plan, pageSize: 2, pageToken }, owner());
        pages.push(res.tenants.map((t) => t.id));
        pageToken = res.nextPageToken;
        expect(pages.length).toBeLessThanOrEqual(3);
      } while (pageToken !== "");
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(pages.flat()).toEqual([...created].reverse());
    });

    it("pages without gaps or repeats through tenants created in the same millisecond", async () => {
      const plan = uniquePlan();
      const created = new Set<string>();
      for (let i = 0; i < 5; i++) created.add((await createTenant(h, { plan })).id);
      const seen: string[] = [];
      let pageToken = "";
      for (let page = 0; page < 3; page++) {
        const res = await tenants().listTenants({ plan, pageSize: 2, pageToken }, owner());
        seen.push(...res.tenants.map((t) => t.id));
        pageToken = res.nextPageToken;
      }
      expect(pageToken).toBe("");
      expect(seen).toHaveLength(5);
      expect(new Set(seen)).toEqual(created);
      // Ties on the creation time are broken by id, descending.
      expect(seen).toEqual([...seen].sort().reverse());
    });

    it("answers an empty last token when everything fits on one page", async () => {
      const plan = uniquePlan();
      const created = await tenantsOnPlan(plan, 2);
      const res = await tenants().listTenants({ plan }, owner());
      expect(res.tenants.map((t) => t.id)).toEqual([...created].reverse());
      expect(res.nextPageToken).toBe("");
    });

    it("filters by status", async () => {
      const plan = uniquePlan();
      const [active, suspended] = await tenantsOnPlan(plan, 2);
      await tenants().updateTenant({ tenantId: suspended!, status: Tenant_Status.SUSPENDED }, owner());
      const onlySuspended = await tenants().listTenants({ plan, status: Tenant_Status.SUSPENDED }, owner());
      expect(onlySuspended.tenants.map((t) => t.id)).toEqual([suspended]);
      const onlyActive = await tenants().listTenants({ plan, status: Tenant_Status.ACTIVE }, owner());
      expect(onlyActive.tenants.map((t) => t.id)).toEqual([active]);
      const any = await tenants().listTenants({ plan }, owner());
      expect(any.tenants.map((t) => t.id)).toEqual([suspended, active]);
    });

    it("filters by environment", async () => {
      const plan = uniquePlan();
      const sandbox = await createTenant(h, { plan, environment: Tenant_Environment.SANDBOX });
      const live = await createTenant(h, { plan, environment: Tenant_Environment.LIVE });
      const onlyLive = await tenants().listTenants({ plan, environment: Tenant_Environment.LIVE }, owner());
      expect(onlyLive.tenants.map((t) => t.id)).toEqual([live.id]);
      const onlySandbox = await tenants().listTenants({ plan, environment: Tenant_Environment.SANDBOX }, owner());
      expect(onlySandbox.tenants.map((t) => t.id)).toEqual([sandbox.id]);
    });

    it("filters by plan", async () => {
      const planA = uniquePlan();
      const planB = uniquePlan();
      const a = await createTenant(h, { plan: planA });
      const b = await createTenant(h, { plan: planB });
      const resA = await tenants().listTenants({ plan: planA }, owner());
      expect(resA.tenants.map((t) => t.id)).toEqual([a.id]);
      expect(resA.tenants[0]?.plan).toBe(planA);
      const resB = await tenants().listTenants({ plan: planB }, owner());
      expect(resB.tenants.map((t) => t.id)).toEqual([b.id]);
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("refuses a page token reused with another filter with PAGE_TOKEN_INVALID", async () => {
      const plan = uniquePlan();
      await tenantsOnPlan(plan, 2);
      const first = await tenants().listTenants({ plan, pageSize: 1 }, owner());
      expect(first.nextPageToken).not.toBe("");
      await expectError(
        tenants().listTenants(
          { plan, pageSize: 1, pageToken: first.nextPageToken, status: Tenant_Status.ACTIVE },
          owner(),
        ),
        Code.InvalidArgument,
        "PAGE_TOKEN_INVALID",
      );
      await expectError(
        tenants().listTenants({ plan: uniquePlan(), pageSize: 1, pageToken: first.nextPageToken }, owner()),
        Code.InvalidArgument,
        "PAGE_TOKEN_INVALID",
      );
      // The same filters with another page size are fine: the size is not part of the query.
      const second = await tenants().listTenants({ plan, pageSize: 5, pageToken: first.nextPageToken }, owner());
      expect(second.tenants).toHaveLength(1);
    });

    it("refuses a tampered or made-up page token with PAGE_TOKEN_INVALID", async () => {
      const plan = uniquePlan();
      await tenantsOnPlan(plan, 2);
      const { nextPageToken } = await tenants().listTenants({ plan, pageSize: 1 }, owner());
      const dot = nextPageToken.indexOf(".");
      expect(dot).toBeGreaterThan(0);
      // Change one character of the payload, keeping the signature.
      const flipped = nextPageToken[0] === "A" ? "B" : "A";
      const tampered = [
        `${flipped}${nextPageToken.slice(1)}`,
        `${nextPageToken.slice(0, -1)}${nextPageToken.endsWith("A") ? "B" : "A"}`,
        nextPageToken.slice(0, dot),
        "garbage",
      ];
      for (const pageToken of tampered) {
        await expectError(
          tenants().listTenants({ plan, pageSize: 1, pageToken }, owner()),
          Code.InvalidArgument,
          "PAGE_TOKEN_INVALID",
        );
      }
    });

    it("refuses a page size over 100 with FIELD_INVALID", async () => {
      await expectFieldError(tenants().listTenants({ pageSize: 101 }, owner()), "FIELD_INVALID", "page_size");
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("refuses a tenant key with OWNER_KEY_REQUIRED", async () => {
      const { key } = await h.newTenant();
      await expectError(tenants().listTenants({}, h.as(key)), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
    });

    it("refuses an owner key lacking tenants:read with PERMISSION_MISSING", async () => {
      const writeOnly = await ownerKeyWith(h, ["tenants:write"]);
      await expectError(tenants().listTenants({}, h.as(writeOnly)), Code.PermissionDenied, "PERMISSION_MISSING");
    });
  });
});
