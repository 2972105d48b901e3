// Last-used times: collected in memory on every accepted call and written in batches by
// KeyVerifier.flush(). The time written is the clock time of the call; a later time is never
// overwritten by an earlier one flushed afterwards (another replica, a retried batch); uses of a
// rotated key's previous secret are recorded apart.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { createLocalInvalidationBus } from "../../src/services/invalidation.js";
import { KeyVerifier } from "../../src/services/key-verifier.js";
import type { KeyStore, LastUsedUpdate } from "../../src/store/ports.js";
import type { Harness } from "../helpers/app.js";
import { startHarness } from "../helpers/app.js";
import { bareTenant, KEY_PROTOCOLS, msOf, probeTenantKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

/** A second verifier over the same store, as another replica would have, with its own clock. */
function replica(startMs: number, keys: Pick<KeyStore, "credential" | "touch"> = h.app.stores.keys) {
  const clock = new ManualClock(startMs);
  const verifier = new KeyVerifier({ keys, bus: createLocalInvalidationBus(), clock, ttlMs: 30_000, flushMs: 0 });
  return { verifier, clock };
}

async function record(tenantId: string, keyId: string) {
  const res = await h.client(KeyService).getKey({ tenantId, keyId }, h.as(h.ownerKey));
  return res.key;
}

describe.each(KEY_PROTOCOLS)("last used over %s", (protocol) => {
  describe("OK: the call's time is written by the next flush", () => {
    it("GetKey shows last_used_time = the clock time of the call, once flushed", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      expect(key.lastUsedTime).toBeUndefined();
      h.clock.advance(5_000);
      const usedAt = h.clock.now();
      await probeTenantKey(h, protocol, apiKey);
      expect((await record(t.id, key.id))?.lastUsedTime).toBeUndefined(); // batched, not yet written
      h.clock.advance(7_000);
      await h.app.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(usedAt);
    });

    it("several uses in one batch write the latest time", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      await probeTenantKey(h, protocol, apiKey);
      h.clock.advance(1_000);
      await probeTenantKey(h, protocol, apiKey);
      const last = h.clock.now();
      h.clock.advance(1_000);
      await h.app.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(last);
    });
  });

  describe("OK: a later time is never overwritten", () => {
    it("an earlier use flushed later (another replica) leaves the later time in place", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const base = h.clock.now();
      const early = replica(base + 1_000);
      const late = replica(base + 2_000);
      expect((await early.verifier.verify(apiKey)).ok).toBe(true);
      expect((await late.verifier.verify(apiKey)).ok).toBe(true);
      await late.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(base + 2_000);
      await early.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(base + 2_000);
      // A later use does move it forward.
      early.clock.set(base + 3_000);
      await early.verifier.verify(apiKey);
      await early.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(base + 3_000);
    });

    it("the app's own flush does not overwrite a later time written by another replica", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const usedAt = h.clock.now();
      await probeTenantKey(h, protocol, apiKey);
      const other = replica(usedAt + 60_000);
      await other.verifier.verify(apiKey);
      await other.verifier.flush();
      await h.app.verifier.flush();
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(usedAt + 60_000);
    });

    it("a failed flush keeps its times for the next one", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const real = h.app.stores.keys;
      let fail = true;
      const batches: LastUsedUpdate[][] = [];
      const r = replica(h.clock.now() + 4_000, {
        credential: (kid) => real.credential(kid),
        async touch(updates) {
          batches.push(updates);
          if (fail) throw new Error("store down");
          await real.touch(updates);
        },
      });
      await r.verifier.verify(apiKey);
      await expect(r.verifier.flush()).rejects.toThrow("store down");
      fail = false;
      await r.verifier.flush();
      expect(batches).toHaveLength(2);
      expect(msOf((await record(t.id, key.id))?.lastUsedTime)).toBe(h.clock.now() + 4_000);
    });
  });

  describe("OK: the previous secret's uses are recorded apart", () => {
    it("using the old secret in grace sets previous_secret_last_used_time, not last_used_time", async () => {
      const t = await bareTenant(h);
      const { apiKey: oldKey, key } = await tenantKey(h, t.id);
      const rotated = await h
        .client(KeyService, protocol)
        .rotateKey({ tenantId: t.id, keyId: key.id, gracePeriod: { seconds: 3600n } }, h.as(h.ownerKey));
      h.clock.advance(10_000);
      const oldUsedAt = h.clock.now();
      await probeTenantKey(h, protocol, oldKey);
      await h.app.verifier.flush();
      let k = await record(t.id, key.id);
      expect(msOf(k?.previousSecretLastUsedTime)).toBe(oldUsedAt);
      expect(k?.lastUsedTime).toBeUndefined();
      h.clock.advance(10_000);
      const newUsedAt = h.clock.now();
      await probeTenantKey(h, protocol, rotated.apiKey);
      await h.app.verifier.flush();
      k = await record(t.id, key.id);
      expect(msOf(k?.lastUsedTime)).toBe(newUsedAt);
      expect(msOf(k?.previousSecretLastUsedTime)).toBe(oldUsedAt);
    });
  });
});
