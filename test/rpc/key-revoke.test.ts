// KeyService.RevokeKey: a revoked key is refused at once, even when the previous call put it in the
// verification cache; revoking twice is a state conflict; only keys:write may revoke, and only
// keys of the caller's own tenant.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, jsonOf, msOf, probeTenantKey, SECRET_RE, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

describe.each(PROTOCOLS)("RevokeKey over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const owner = () => h.as(h.ownerKey);

  describe("OK: the key is refused at once", () => {
    it("a key used a moment ago (cached) is UNAUTHENTICATED KEY_REVOKED on the very next call", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await probeTenantKey(h, protocol, apiKey);
      await probeTenantKey(h, protocol, apiKey); // served from the verification cache
      const res = await keys().revokeKey({ tenantId: t.id, keyId: key.id }, owner());
      expect(res.key?.state).toBe(Key_State.REVOKED);
      expect(msOf(res.key?.revokeTime)).toBe(h.clock.now());
      const err = await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
      // The refusal names the key by id, never by secret.
      expect(jsonOf({ message: err.rawMessage, metadata: err.metadata })).not.toMatch(SECRET_RE);
    });

    it("a key may revoke itself, and is refused right after", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await keys().revokeKey({ keyId: key.id }, h.as(apiKey));
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
    });

    it("revoking one key leaves the tenant's other keys working", async () => {
      const t = await bareTenant(h);
      const a = await tenantKey(h, t.id);
      const b = await tenantKey(h, t.id);
      await probeTenantKey(h, protocol, b.apiKey);
      await keys().revokeKey({ keyId: a.key.id }, h.as(b.apiKey));
      await expectError(probeTenantKey(h, protocol, a.apiKey), Code.Unauthenticated, "KEY_REVOKED");
      await probeTenantKey(h, protocol, b.apiKey);
    });

    it("an owner acting as the tenant revokes with x-tenant-id", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await probeTenantKey(h, protocol, apiKey);
      await keys().revokeKey({ keyId: key.id }, h.as(h.ownerKey, t.id));
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
    });

    it("the revoked key stays refused however far the clock moves", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await keys().revokeKey({ tenantId: t.id, keyId: key.id }, owner());
      h.clock.advance(60 * 60 * 1000);
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("revoking a revoked key is STATE_CONFLICT", async () => {
      const t = await bareTenant(h);
      const { key } = await tenantKey(h, t.id);
      const first = await keys().revokeKey({ tenantId: t.id, keyId: key.id }, owner());
      h.clock.advance(1000);
      await expectError(
        keys().revokeKey({ tenantId: t.id, keyId: key.id }, owner()),
        Code.FailedPrecondition,
        "STATE_CONFLICT",
      );
      // The first revocation time is kept.
      const got = await keys().getKey({ tenantId: t.id, keyId: key.id }, owner());
      expect(got.key?.revokeTime).toEqual(first.key?.revokeTime);
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("a key that lacks keys:write is PERMISSION_MISSING and the target stays active", async () => {
      const t = await bareTenant(h);
      const target = await tenantKey(h, t.id);
      const reader = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      await expectError(
        keys().revokeKey({ keyId: target.key.id }, h.as(reader.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      await probeTenantKey(h, protocol, target.apiKey);
    });
  });

  describe("NOT_FOUND across tenants", () => {
    it("revoking another tenant's key is KEY_NOT_FOUND and the key keeps working", async () => {
      const a = await bareTenant(h);
      const b = await bareTenant(h);
      const aKey = await tenantKey(h, a.id);
      const bKey = await tenantKey(h, b.id);
      await expectError(keys().revokeKey({ keyId: bKey.key.id }, h.as(aKey.apiKey)), Code.NotFound, "KEY_NOT_FOUND");
      await expectError(
        keys().revokeKey({ tenantId: a.id, keyId: bKey.key.id }, owner()),
        Code.NotFound,
        "KEY_NOT_FOUND",
      );
      await probeTenantKey(h, protocol, bKey.apiKey);
    });

    it("a garbage key id is KEY_NOT_FOUND", async () => {
      const t = await bareTenant(h);
      await expectError(keys().revokeKey({ tenantId: t.id, keyId: "nope" }, owner()), Code.NotFound, "KEY_NOT_FOUND");
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("a revoked key cannot revoke anything", async () => {
      const t = await bareTenant(h);
      const a = await tenantKey(h, t.id);
      const b = await tenantKey(h, t.id);
      await keys().revokeKey({ keyId: a.key.id }, h.as(a.apiKey));
      await expectError(keys().revokeKey({ keyId: b.key.id }, h.as(a.apiKey)), Code.Unauthenticated, "KEY_REVOKED");
      await probeTenantKey(h, protocol, b.apiKey);
    });
  });
});
