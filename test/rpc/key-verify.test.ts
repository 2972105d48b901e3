// KeyService.VerifyKey, called the way internal services call it: with a narrow owner "service key"
// holding only keys:verify. An invalid key is an ordinary answer (valid=false with the precise
// reason), not an error; the service key can do nothing else; tenant keys cannot verify.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorReason } from "../../gen/tenantd/v1/error_reason_pb.js";
import { Key_Environment, Key_Kind } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { Tenant_Status } from "../../gen/tenantd/v1/tenant_pb.js";
import { TenantService } from "../../gen/tenantd/v1/tenant_service_pb.js";
import { generateKey, parseKey } from "../../src/domain/key-format.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, expectFieldError, expectNoSecret, ownerKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
let serviceKey: string;
beforeAll(async () => {
  h = await startHarness();
  serviceKey = (await ownerKey(h, ["keys:verify"], { label: "gateway" })).apiKey;
});
afterAll(async () => {
  await h?.close();
});

describe.each(PROTOCOLS)("VerifyKey over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const verify = (apiKey: string, permission = "") => keys().verifyKey({ apiKey, permission }, h.as(serviceKey));

  describe("OK: a valid key", () => {
    it("a tenant key is valid with its tenant, key id, kind, environment, permissions and ACTIVE tenant", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id, { permissions: ["keys:read", "usage:write"] });
      const res = await verify(apiKey);
      expect(res).toMatchObject({
        valid: true,
        reason: ErrorReason.ERROR_REASON_UNSPECIFIED,
        tenantId: t.id,
        keyId: key.id,
        kind: Key_Kind.TENANT,
        environment: Key_Environment.TEST,
        permissions: ["keys:read", "usage:write"],
        tenantStatus: Tenant_Status.ACTIVE,
        rotated: false,
      });
      expect(res.expireTime).toBeUndefined();
      expectNoSecret(res);
    });

    it("a key holding the asked permission is valid", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id, { permissions: ["limits:check"] });
      expect((await verify(apiKey, "limits:check")).valid).toBe(true);
    });

    it("an owner key is valid, of kind OWNER, with no tenant", async () => {
      const svc = await ownerKey(h, ["tenants:read"]);
      const res = await verify(svc.apiKey);
      expect(res).toMatchObject({
        valid: true,
        tenantId: "",
        keyId: svc.key.id,
        kind: Key_Kind.OWNER,
        environment: Key_Environment.LIVE,
        permissions: ["tenants:read"],
        tenantStatus: Tenant_Status.STATUS_UNSPECIFIED,
      });
    });

    it("a key with an expire_time reports it", async () => {
      const t = await bareTenant(h);
      const at = h.clock.now() + 60_000;
      const { apiKey } = await tenantKey(h, t.id, { expireTime: timestampFromMs(at) });
      const res = await verify(apiKey);
      expect(res.valid).toBe(true);
      expect(res.expireTime).toEqual(timestampFromMs(at));
    });
  });

  describe("OK: an invalid key is an answer with the precise reason", () => {
    it("malformed keys are KEY_INVALID with no key id", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id);
      const typo = apiKey.slice(0, 20) + (apiKey[20] === "a" ? "b" : "a") + apiKey.slice(21);
      for (const bad of ["garbage", typo, apiKey.slice(0, -1), `${apiKey}x`, apiKey.replace("tdk_", "tdx_")]) {
        const res = await verify(bad);
        expect(res).toMatchObject({ valid: false, reason: ErrorReason.KEY_INVALID, keyId: "", tenantId: "" });
      }
    });

    it("a well-formed key that was never issued, or a forged secret for a real key id, is KEY_INVALID", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id);
      const kid = parseKey(apiKey)?.kid ?? "";
      const forged = generateKey("tenant", "test", kid).apiKey;
      expect(parseKey(forged)?.kid).toBe(kid); // well-formed, right id, wrong secret
      for (const bad of [generateKey("tenant", "test").apiKey, forged, generateKey("tenant", "live", kid).apiKey]) {
        const res = await verify(bad);
        expect({ valid: res.valid, reason: res.reason }).toEqual({ valid: false, reason: ErrorReason.KEY_INVALID });
        expect(res.tenantId).toBe(""); // a wrong secret learns nothing about the key's tenant
      }
    });

    it("a revoked key is KEY_REVOKED", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      expect((await verify(apiKey)).valid).toBe(true); // cached now
      await keys().revokeKey({ tenantId: t.id, keyId: key.id }, h.as(h.ownerKey));
      const res = await verify(apiKey);
      expect(res).toMatchObject({ valid: false, reason: ErrorReason.KEY_REVOKED, keyId: key.id, tenantId: t.id });
    });

    it("an expired key is KEY_EXPIRED", async () => {
      const t = await bareTenant(h);
      const at = h.clock.now() + 1000;
      const { apiKey } = await tenantKey(h, t.id, { expireTime: timestampFromMs(at) });
      expect((await verify(apiKey)).valid).toBe(true);
      h.clock.set(at);
      expect(await verify(apiKey)).toMatchObject({ valid: false, reason: ErrorReason.KEY_EXPIRED });
    });

    it("a key of a suspended tenant is TENANT_SUSPENDED, and valid again after reactivation", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id);
      expect((await verify(apiKey)).valid).toBe(true); // cached now
      const tenants = h.client(TenantService, protocol);
      await tenants.updateTenant({ tenantId: t.id, status: Tenant_Status.SUSPENDED }, h.as(h.ownerKey));
      expect(await verify(apiKey)).toMatchObject({
        valid: false,
        reason: ErrorReason.TENANT_SUSPENDED,
        tenantId: t.id,
        tenantStatus: Tenant_Status.SUSPENDED,
      });
      await tenants.updateTenant({ tenantId: t.id, status: Tenant_Status.ACTIVE }, h.as(h.ownerKey));
      expect(await verify(apiKey)).toMatchObject({ valid: true, tenantStatus: Tenant_Status.ACTIVE });
    });

    it("a key lacking the asked permission is PERMISSION_MISSING, with the permissions it does hold", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      expect(await verify(apiKey, "limits:check")).toMatchObject({
        valid: false,
        reason: ErrorReason.PERMISSION_MISSING,
        permissions: ["keys:read"],
      });
    });
  });

  describe("repeated answers (one message per key and outcome, encoded once on gRPC)", () => {
    it("repeated calls for a cached key answer the same, and every change of the key or its tenant shows at once", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      const tenants = h.client(TenantService, protocol);
      const valid = { valid: true, tenantId: t.id, keyId: key.id, permissions: ["keys:read"] };
      const missing = { valid: false, reason: ErrorReason.PERMISSION_MISSING, keyId: key.id };
      const suspended = { valid: false, reason: ErrorReason.TENANT_SUSPENDED, tenantStatus: Tenant_Status.SUSPENDED };
      const answers = async (permission: string) => [
        await verify(apiKey, permission),
        await verify(apiKey, permission),
      ];
      const expectTwice = async (permission: string, expected: object) => {
        const [a, b] = await answers(permission);
        expect(a).toMatchObject(expected);
        expect(b).toEqual(a);
      };
      for (let round = 0; round < 2; round++) {
        await expectTwice("", valid);
        await expectTwice("keys:read", valid);
        await expectTwice("limits:check", missing);
      }
      await tenants.updateTenant({ tenantId: t.id, status: Tenant_Status.SUSPENDED }, h.as(h.ownerKey));
      await expectTwice("", suspended);
      await expectTwice("keys:read", suspended);
      await tenants.updateTenant({ tenantId: t.id, status: Tenant_Status.ACTIVE }, h.as(h.ownerKey));
      await expectTwice("keys:read", { ...valid, tenantStatus: Tenant_Status.ACTIVE });
      await keys().revokeKey({ tenantId: t.id, keyId: key.id }, h.as(h.ownerKey));
      await expectTwice("", { valid: false, reason: ErrorReason.KEY_REVOKED, keyId: key.id });
      await expectTwice("keys:read", { valid: false, reason: ErrorReason.KEY_REVOKED, keyId: key.id });
    });

    it("two keys of one tenant never share an answer", async () => {
      const t = await bareTenant(h);
      const a = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      const b = await tenantKey(h, t.id, { permissions: ["usage:write"] });
      for (let round = 0; round < 3; round++) {
        expect(await verify(a.apiKey)).toMatchObject({ valid: true, keyId: a.key.id, permissions: ["keys:read"] });
        expect(await verify(b.apiKey)).toMatchObject({ valid: true, keyId: b.key.id, permissions: ["usage:write"] });
      }
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("an empty api_key is FIELD_INVALID", async () => {
      await expectFieldError(keys().verifyKey({ apiKey: "" }, h.as(serviceKey)), Code.InvalidArgument, ["api_key"]);
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("the service key can only verify: ListTenants, CreateOwnerKey and acting as a tenant are PERMISSION_MISSING", async () => {
      const t = await bareTenant(h);
      await expectError(
        h.client(TenantService, protocol).listTenants({}, h.as(serviceKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      await expectError(
        keys().createOwnerKey({ label: "escalate" }, h.as(serviceKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      await expectError(keys().listKeys({}, h.as(serviceKey, t.id)), Code.PermissionDenied, "PERMISSION_MISSING");
    });

    it("a tenant key cannot call VerifyKey, even holding every tenant permission", async () => {
      const t = await bareTenant(h);
      const { apiKey } = await tenantKey(h, t.id);
      await expectError(keys().verifyKey({ apiKey }, h.as(apiKey)), Code.PermissionDenied, "OWNER_KEY_REQUIRED");
    });

    it("an owner key without keys:verify is PERMISSION_MISSING", async () => {
      const other = await ownerKey(h, ["tenants:read"]);
      await expectError(
        keys().verifyKey({ apiKey: other.apiKey }, h.as(other.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
    });
  });

  describe("UNAUTHENTICATED", () => {
    it("a revoked service key is KEY_REVOKED", async () => {
      const svc = await ownerKey(h, ["keys:verify"]);
      await keys().verifyKey({ apiKey: svc.apiKey }, h.as(svc.apiKey));
      await keys().revokeOwnerKey({ keyId: svc.key.id }, h.as(h.ownerKey));
      await expectError(
        keys().verifyKey({ apiKey: svc.apiKey }, h.as(svc.apiKey)),
        Code.Unauthenticated,
        "KEY_REVOKED",
      );
    });
  });
});
