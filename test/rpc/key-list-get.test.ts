// KeyService.ListKeys and GetKey: newest-first pagination that shows every key once, revoked keys
// only on request, public parts (prefix, last four) but never a secret, and NOT_FOUND for keys of
// other tenants.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, expectNoSecret, ownerKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

describe.each(PROTOCOLS)("ListKeys and GetKey over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const owner = () => h.as(h.ownerKey);

  /** A tenant with `n` keys created 1 ms apart, oldest first. */
  async function tenantWithKeys(n: number) {
    const t = await bareTenant(h);
    const created: Array<{ apiKey: string; id: string }> = [];
    for (let i = 0; i < n; i++) {
      h.clock.advance(1);
      const { apiKey, key } = await tenantKey(h, t.id, { label: `k${i}` });
      created.push({ apiKey, id: key.id });
    }
    return { tenant: t, created };
  }

  describe("OK: pagination", () => {
    it("page_size 2 over 5 keys: pages of 2, 2, 1; every key once, newest first", async () => {
      const { tenant, created } = await tenantWithKeys(5);
      const pages: string[][] = [];
      let pageToken = "";
      do {
        const res = await keys().listKeys({ tenantId: tenant.id, pageSize: 2, pageToken }, owner());
        expectNoSecret(res);
        pages.push(res.keys.map((k) => k.id));
        pageToken = res.nextPageToken;
      } while (pageToken !== "" && pages.length < 10);
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(pages.flat()).toEqual(created.map((c) => c.id).reverse());
    });

    it("keys created in the same millisecond are still each listed exactly once", async () => {
      const t = await bareTenant(h);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await tenantKey(h, t.id)).key.id);
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const res = await keys().listKeys({ tenantId: t.id, pageSize: 2, pageToken }, owner());
        seen.push(...res.keys.map((k) => k.id));
        pageToken = res.nextPageToken;
        pages++;
      } while (pageToken !== "" && pages < 10);
      expect(pages).toBe(3);
      expect([...seen].sort()).toEqual([...ids].sort());
    });

    it("a tenant key pages through its own tenant the same way", async () => {
      const { created } = await tenantWithKeys(3);
      const caller = created[0]?.apiKey ?? "";
      const first = await keys().listKeys({ pageSize: 2 }, h.as(caller));
      const second = await keys().listKeys({ pageSize: 2, pageToken: first.nextPageToken }, h.as(caller));
      expect([...first.keys, ...second.keys].map((k) => k.id)).toEqual(created.map((c) => c.id).reverse());
      expect(second.nextPageToken).toBe("");
    });

    it("a page token is bound to its query: reused with include_revoked it is PAGE_TOKEN_INVALID", async () => {
      const { tenant } = await tenantWithKeys(3);
      const first = await keys().listKeys({ tenantId: tenant.id, pageSize: 1 }, owner());
      expect(first.nextPageToken).not.toBe("");
      await expectError(
        keys().listKeys(
          { tenantId: tenant.id, pageSize: 1, pageToken: first.nextPageToken, includeRevoked: true },
          owner(),
        ),
        Code.InvalidArgument,
        "PAGE_TOKEN_INVALID",
      );
    });

    it("a page token of another tenant's listing is PAGE_TOKEN_INVALID", async () => {
      const a = await tenantWithKeys(2);
      const b = await tenantWithKeys(2);
      const first = await keys().listKeys({ tenantId: a.tenant.id, pageSize: 1 }, owner());
      await expectError(
        keys().listKeys({ pageSize: 1, pageToken: first.nextPageToken }, h.as(b.created[0]?.apiKey ?? "")),
        Code.InvalidArgument,
        "PAGE_TOKEN_INVALID",
      );
    });
  });

  describe("OK: revoked keys only with include_revoked", () => {
    it("a revoked key is hidden by default and listed, REVOKED, with include_revoked", async () => {
      const { tenant, created } = await tenantWithKeys(3);
      const victim = created[1]?.id ?? "";
      await keys().revokeKey({ tenantId: tenant.id, keyId: victim }, owner());
      const active = await keys().listKeys({ tenantId: tenant.id }, owner());
      expect(active.keys.map((k) => k.id)).toEqual([created[2]?.id, created[0]?.id]);
      const all = await keys().listKeys({ tenantId: tenant.id, includeRevoked: true }, owner());
      expect(all.keys.map((k) => [k.id, k.state])).toEqual([
        [created[2]?.id, Key_State.ACTIVE],
        [victim, Key_State.REVOKED],
        [created[0]?.id, Key_State.ACTIVE],
      ]);
    });
  });

  describe("OK: public parts", () => {
    it("ListKeys and GetKey show the prefix and last four of the key, and no secret", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      const got = await keys().getKey({ keyId: key.id }, h.as(apiKey));
      const listed = await keys().listKeys({}, h.as(apiKey));
      for (const k of [got.key, listed.keys[0]]) {
        expect(k?.id).toBe(key.id);
        expect(k?.prefix).toBe(apiKey.slice(0, k?.prefix.length));
        expect(k?.prefix).toMatch(/^tdk_tenant_test_[0-9A-Za-z]{16}_$/);
        expect(k?.lastFour).toBe(apiKey.slice(-4));
        expect(k?.permissions).toEqual(["keys:read"]);
        expect(k?.state).toBe(Key_State.ACTIVE);
      }
      expectNoSecret(got, listed);
    });

    it("a tenant lists only its own keys", async () => {
      const a = await tenantWithKeys(2);
      await tenantWithKeys(2);
      const res = await keys().listKeys({}, h.as(a.created[0]?.apiKey ?? ""));
      expect(res.keys.map((k) => k.id).sort()).toEqual(a.created.map((c) => c.id).sort());
      expect(res.keys.every((k) => k.tenantId === a.tenant.id)).toBe(true);
    });

    it("an owner acting as the tenant with x-tenant-id sees the same list", async () => {
      const a = await tenantWithKeys(2);
      const viaHeader = await keys().listKeys({}, h.as(h.ownerKey, a.tenant.id));
      const viaField = await keys().listKeys({ tenantId: a.tenant.id }, owner());
      expect(viaHeader.keys.map((k) => k.id)).toEqual(viaField.keys.map((k) => k.id));
    });
  });

  describe("NOT_FOUND across tenants", () => {
    it("GetKey of another tenant's key is KEY_NOT_FOUND, for the tenant and for the owner naming the wrong tenant", async () => {
      const a = await tenantWithKeys(1);
      const b = await tenantWithKeys(1);
      const bKey = b.created[0]?.id ?? "";
      await expectError(
        keys().getKey({ keyId: bKey }, h.as(a.created[0]?.apiKey ?? "")),
        Code.NotFound,
        "KEY_NOT_FOUND",
      );
      await expectError(keys().getKey({ tenantId: a.tenant.id, keyId: bKey }, owner()), Code.NotFound, "KEY_NOT_FOUND");
      // The owner naming the right tenant does find it: the refusal above is about scope.
      const ok = await keys().getKey({ tenantId: b.tenant.id, keyId: bKey }, owner());
      expect(ok.key?.id).toBe(bKey);
    });

    it("GetKey of an owner key's id from a tenant is KEY_NOT_FOUND", async () => {
      const a = await tenantWithKeys(1);
      const svc = await ownerKey(h, ["keys:verify"]);
      await expectError(
        keys().getKey({ keyId: svc.key.id }, h.as(a.created[0]?.apiKey ?? "")),
        Code.NotFound,
        "KEY_NOT_FOUND",
      );
    });

    it("a garbage or unknown key id is KEY_NOT_FOUND", async () => {
      const a = await tenantWithKeys(1);
      const as = h.as(a.created[0]?.apiKey ?? "");
      for (const keyId of ["garbage", "key_", "key_!!!!!!!!!!!!!!!!", "key_0000000000000000", "ten_x"]) {
        await expectError(keys().getKey({ keyId }, as), Code.NotFound, "KEY_NOT_FOUND");
      }
    });

    it("ListKeys of another tenant by a tenant key is TENANT_NOT_FOUND", async () => {
      const a = await tenantWithKeys(1);
      const b = await tenantWithKeys(1);
      await expectError(
        keys().listKeys({ tenantId: b.tenant.id }, h.as(a.created[0]?.apiKey ?? "")),
        Code.NotFound,
        "TENANT_NOT_FOUND",
      );
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("a key without keys:read can neither list nor get", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id, { permissions: ["tenant:read"] });
      await expectError(keys().listKeys({}, h.as(apiKey)), Code.PermissionDenied, "PERMISSION_MISSING");
      await expectError(keys().getKey({ keyId: key.id }, h.as(apiKey)), Code.PermissionDenied, "PERMISSION_MISSING");
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("an owner listing without naming a tenant is TENANT_CONTEXT_REQUIRED", async () => {
      await expectError(keys().listKeys({}, owner()), Code.FailedPrecondition, "TENANT_CONTEXT_REQUIRED");
    });
  });
});
