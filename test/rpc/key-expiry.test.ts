// Key expiry, with the injected clock: a key that expires at T is accepted at T - 1 ms (also when
// served from the verification cache) and refused with KEY_EXPIRED from T on; its record then shows
// state EXPIRED.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorReason } from "../../gen/tenantd/v1/error_reason_pb.js";
import { Key_State } from "../../gen/tenantd/v1/key_pb.js";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { expectError, type Harness, PROTOCOLS, startHarness } from "../helpers/app.js";
import { bareTenant, msOf, ownerKey, probeTenantKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const HOUR_MS = 60 * 60 * 1000;

describe.each(PROTOCOLS)("key expiry over %s", (protocol) => {
  const keys = () => h.client(KeyService, protocol);
  const owner = () => h.as(h.ownerKey);

  async function expiringKey() {
    const t = await bareTenant(h);
    const expiresAt = h.clock.now() + HOUR_MS;
    const { apiKey, key } = await tenantKey(h, t.id, { expireTime: timestampFromMs(expiresAt) });
    return { tenant: t, apiKey, key, expiresAt };
  }

  describe("OK / UNAUTHENTICATED: the boundary is exact", () => {
    it("accepted at expire_time - 1 ms, KEY_EXPIRED at expire_time", async () => {
      const k = await expiringKey();
      expect(msOf(k.key.expireTime)).toBe(k.expiresAt);
      await probeTenantKey(h, protocol, k.apiKey);
      h.clock.set(k.expiresAt - 1);
      await probeTenantKey(h, protocol, k.apiKey); // also caches the credential
      h.clock.set(k.expiresAt);
      await expectError(probeTenantKey(h, protocol, k.apiKey), Code.Unauthenticated, "KEY_EXPIRED");
      h.clock.advance(24 * HOUR_MS);
      await expectError(probeTenantKey(h, protocol, k.apiKey), Code.Unauthenticated, "KEY_EXPIRED");
    });

    it("a key without expire_time keeps working however far the clock moves", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      expect(key.expireTime).toBeUndefined();
      h.clock.advance(365 * 24 * HOUR_MS);
      await probeTenantKey(h, protocol, apiKey);
    });

    it("an owner key expires the same way", async () => {
      const expiresAt = h.clock.now() + HOUR_MS;
      const { apiKey } = await ownerKey(h, ["owner-keys:write"], { expireTime: timestampFromMs(expiresAt) });
      h.clock.set(expiresAt - 1);
      await keys().listOwnerKeys({ pageSize: 1 }, h.as(apiKey));
      h.clock.set(expiresAt);
      await expectError(keys().listOwnerKeys({ pageSize: 1 }, h.as(apiKey)), Code.Unauthenticated, "KEY_EXPIRED");
    });
  });

  describe("OK: the record shows the state", () => {
    it("GetKey and ListKeys show ACTIVE before and EXPIRED from expire_time on", async () => {
      const k = await expiringKey();
      const ref = { tenantId: k.tenant.id, keyId: k.key.id };
      h.clock.set(k.expiresAt - 1);
      expect((await keys().getKey(ref, owner())).key?.state).toBe(Key_State.ACTIVE);
      h.clock.set(k.expiresAt);
      const got = await keys().getKey(ref, owner());
      expect(got.key?.state).toBe(Key_State.EXPIRED);
      expect(msOf(got.key?.expireTime)).toBe(k.expiresAt);
      const listed = await keys().listKeys({ tenantId: k.tenant.id }, owner());
      expect(listed.keys.map((x) => [x.id, x.state])).toEqual([[k.key.id, Key_State.EXPIRED]]);
    });

    it("VerifyKey answers KEY_EXPIRED with the key's expire_time", async () => {
      const k = await expiringKey();
      h.clock.set(k.expiresAt - 1);
      expect((await keys().verifyKey({ apiKey: k.apiKey }, owner())).valid).toBe(true);
      h.clock.set(k.expiresAt);
      const res = await keys().verifyKey({ apiKey: k.apiKey }, owner());
      expect(res).toMatchObject({
        valid: false,
        reason: ErrorReason.KEY_EXPIRED,
        keyId: k.key.id,
        tenantId: k.tenant.id,
      });
      expect(msOf(res.expireTime)).toBe(k.expiresAt);
    });
  });
});
