// KeyService.RotateKey, with the injected clock: the new secret works at once; the old one works
// until exactly the end of the grace period (1 ms before: accepted; at the boundary: KEY_ROTATED);
// a zero grace ends it at once, even for a secret that was just cached; the default grace is 24 h.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorReason } from "../../gen/tenantd/v1/error_reason_pb.js";
import { Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { parseKey } from "../../src/domain/key-format.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, expectFieldError, msOf, probeTenantKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

describe.each(PROTOCOLS)("RotateKey over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const owner = () => h.as(h.ownerKey);

  async function rotated(graceSeconds?: bigint) {
    const t = await bareTenant(h);
    const { apiKey: oldKey, key } = await tenantKey(h, t.id);
    await probeTenantKey(h, protocol, oldKey); // cache the old secret
    const at = h.clock.now();
    const res = await keys().rotateKey(
      {
        tenantId: t.id,
        keyId: key.id,
        gracePeriod: graceSeconds === undefined ? undefined : { seconds: graceSeconds },
      },
      owner(),
    );
    return { tenant: t, keyId: key.id, oldKey, newKey: res.apiKey, record: res.key, at };
  }

  describe("OK: the new secret works and keeps the key's identity", () => {
    it("returns a new secret for the same key id; the new secret is accepted at once", async () => {
      const r = await rotated(3600n);
      expect(r.newKey).not.toBe(r.oldKey);
      expect(parseKey(r.newKey)?.kid).toBe(parseKey(r.oldKey)?.kid);
      expect(r.record?.id).toBe(r.keyId);
      expect(r.record?.lastFour).toBe(r.newKey.slice(-4));
      expect(r.record?.state).toBe(Key_State.ACTIVE);
      expect(msOf(r.record?.rotateTime)).toBe(r.at);
      await probeTenantKey(h, protocol, r.newKey);
      await probeTenantKey(h, protocol, r.oldKey);
    });

    it("GetKey shows rotate_time and previous_secret_expire_time", async () => {
      const r = await rotated(3600n);
      const got = await keys().getKey({ tenantId: r.tenant.id, keyId: r.keyId }, owner());
      expect(msOf(got.key?.rotateTime)).toBe(r.at);
      expect(msOf(got.key?.previousSecretExpireTime)).toBe(r.at + HOUR_MS);
      expect(got.key?.lastFour).toBe(r.newKey.slice(-4));
    });

    it("a tenant key may rotate itself and continue with the new secret", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const res = await keys().rotateKey({ keyId: key.id, gracePeriod: { seconds: 0n } }, h.as(apiKey));
      await probeTenantKey(h, protocol, res.apiKey);
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_ROTATED");
    });
  });

  describe("OK / UNAUTHENTICATED: the grace boundary is exact", () => {
    it("old secret accepted at grace end - 1 ms, KEY_ROTATED at grace end; the new one stays accepted", async () => {
      const r = await rotated(3600n);
      const graceEnd = msOf(r.record?.previousSecretExpireTime) ?? 0;
      expect(graceEnd).toBe(r.at + HOUR_MS);
      h.clock.set(graceEnd - 1);
      await probeTenantKey(h, protocol, r.oldKey);
      h.clock.set(graceEnd);
      const err = await expectError(probeTenantKey(h, protocol, r.oldKey), Code.Unauthenticated, "KEY_ROTATED");
      expect(err.rawMessage).not.toContain(r.oldKey);
      await probeTenantKey(h, protocol, r.newKey);
    });

    it("grace_period 0 refuses the old secret at once, though it was cached a moment before", async () => {
      const r = await rotated(0n);
      expect(msOf(r.record?.previousSecretExpireTime)).toBe(r.at);
      await expectError(probeTenantKey(h, protocol, r.oldKey), Code.Unauthenticated, "KEY_ROTATED");
      await probeTenantKey(h, protocol, r.newKey);
    });

    it("without grace_period the grace is 24 h, to the millisecond", async () => {
      const r = await rotated();
      expect(msOf(r.record?.previousSecretExpireTime)).toBe(r.at + DAY_MS);
      h.clock.set(r.at + DAY_MS - 1);
      await probeTenantKey(h, protocol, r.oldKey);
      h.clock.set(r.at + DAY_MS);
      await expectError(probeTenantKey(h, protocol, r.oldKey), Code.Unauthenticated, "KEY_ROTATED");
    });

    it("a second rotation ends the first secret at once", async () => {
      const r = await rotated(3600n);
      await keys().rotateKey({ tenantId: r.tenant.id, keyId: r.keyId, gracePeriod: { seconds: 3600n } }, owner());
      // Only one previous secret is kept: the first one is now unknown, not merely "rotated".
      await expectError(probeTenantKey(h, protocol, r.oldKey), Code.Unauthenticated, "KEY_INVALID");
      await probeTenantKey(h, protocol, r.newKey); // the second secret is now the one in grace
    });

    it("revoking a rotated key also refuses its old secret inside the grace period", async () => {
      const r = await rotated(3600n);
      await keys().revokeKey({ tenantId: r.tenant.id, keyId: r.keyId }, owner());
      await expectError(probeTenantKey(h, protocol, r.oldKey), Code.Unauthenticated, "KEY_REVOKED");
      await expectError(probeTenantKey(h, protocol, r.newKey), Code.Unauthenticated, "KEY_REVOKED");
    });
  });

  describe("OK: VerifyKey tells a secret in grace apart", () => {
    it("the old secret inside grace is valid with rotated=true and grace_end_time; the new one rotated=false", async () => {
      const r = await rotated(3600n);
      const old = await keys().verifyKey({ apiKey: r.oldKey }, owner());
      expect(old).toMatchObject({ valid: true, rotated: true, keyId: r.keyId, tenantId: r.tenant.id });
      expect(msOf(old.graceEndTime)).toBe(r.at + HOUR_MS);
      const fresh = await keys().verifyKey({ apiKey: r.newKey }, owner());
      expect(fresh).toMatchObject({ valid: true, rotated: false, keyId: r.keyId });
      expect(fresh.graceEndTime).toBeUndefined();
      h.clock.set(r.at + HOUR_MS);
      const after = await keys().verifyKey({ apiKey: r.oldKey }, owner());
      expect(after).toMatchObject({ valid: false, reason: ErrorReason.KEY_ROTATED, keyId: r.keyId });
    });
  });

  describe("FAILED_PRECONDITION", () => {
    it("rotating a revoked key is STATE_CONFLICT", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await keys().revokeKey({ tenantId: t.id, keyId: key.id }, owner());
      await expectError(
        keys().rotateKey({ tenantId: t.id, keyId: key.id }, owner()),
        Code.FailedPrecondition,
        "STATE_CONFLICT",
      );
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
    });

    it("rotating an expired key is STATE_CONFLICT", async () => {
      const t = await bareTenant(h);
      const { key } = await tenantKey(h, t.id, { expireTime: timestampFromMs(h.clock.now() + 1000) });
      h.clock.advance(1000);
      await expectError(
        keys().rotateKey({ tenantId: t.id, keyId: key.id }, owner()),
        Code.FailedPrecondition,
        "STATE_CONFLICT",
      );
    });
  });

  describe("INVALID_ARGUMENT", () => {
    it("a grace period over 30 days or below zero is FIELD_INVALID", async () => {
      const t = await bareTenant(h);
      const { key } = await tenantKey(h, t.id);
      for (const gracePeriod of [{ seconds: 30n * 86400n + 1n }, { seconds: -1n }]) {
        await expectFieldError(
          keys().rotateKey({ tenantId: t.id, keyId: key.id, gracePeriod }, owner()),
          Code.InvalidArgument,
          ["grace_period"],
        );
      }
      const ok = await keys().rotateKey(
        { tenantId: t.id, keyId: key.id, gracePeriod: { seconds: 30n * 86400n } },
        owner(),
      );
      expect(msOf(ok.key?.previousSecretExpireTime)).toBe(h.clock.now() + 30 * DAY_MS);
    });
  });

  describe("PERMISSION_DENIED", () => {
    it("a key without keys:write cannot rotate, and the secret stays the same", async () => {
      const t = await bareTenant(h);
      const target = await tenantKey(h, t.id);
      const reader = await tenantKey(h, t.id, { permissions: ["keys:read"] });
      await expectError(
        keys().rotateKey({ keyId: target.key.id, gracePeriod: { seconds: 0n } }, h.as(reader.apiKey)),
        Code.PermissionDenied,
        "PERMISSION_MISSING",
      );
      await probeTenantKey(h, protocol, target.apiKey);
    });
  });

  describe("NOT_FOUND across tenants", () => {
    it("rotating another tenant's key is KEY_NOT_FOUND and its secret keeps working", async () => {
      const a = await bareTenant(h);
      const b = await bareTenant(h);
      const aKey = await tenantKey(h, a.id);
      const bKey = await tenantKey(h, b.id);
      await expectError(
        keys().rotateKey({ keyId: bKey.key.id, gracePeriod: { seconds: 0n } }, h.as(aKey.apiKey)),
        Code.NotFound,
        "KEY_NOT_FOUND",
      );
      await probeTenantKey(h, protocol, bKey.apiKey);
    });
  });
});
