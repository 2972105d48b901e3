import { describe, expect, it } from "vitest";
import { ManualClock } from "../../src/domain/clock.js";
import { generateKey } from "../../src/domain/key-format.js";
import type { Credential, KeyRecord } from "../../src/domain/types.js";
import { createLocalInvalidationBus } from "../../src/services/invalidation.js";
import { KeyVerifier } from "../../src/services/key-verifier.js";

// When Redis comes back, the invalidation bus re-subscribes and flushes every cache ("all"): the
// app-level fault test (app-redis-faults.test.ts) saw calls take 100–200 ms right after recovery,
// every concurrent call of the same key querying the key store on its own. The verifier now
// shares one lookup between concurrent misses of a key — only within one invalidation
// generation, so that a call arriving after a revoke never gets an answer read before it.

function setup() {
  const key = generateKey("tenant", "live");
  const record: KeyRecord = {
    kid: key.kid,
    tenantId: "ten_herd",
    kind: "tenant",
    env: "live",
    label: "k",
    permissions: [],
    hash: key.hash,
    lastFour: key.lastFour,
    createdAt: 0,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    rotatedAt: null,
    prevHash: null,
    prevValidUntil: null,
    prevLastUsedAt: null,
  };
  let stored: Credential = { key: record, tenantStatus: "active" };
  const lookups: Array<() => void> = [];
  const bus = createLocalInvalidationBus();
  const verifier = new KeyVerifier({
    keys: {
      // Each lookup answers what was stored when it started, once the test releases it.
      credential: () => {
        const snapshot = stored;
        return new Promise<Credential | null>((resolve) => {
          lookups.push(() => resolve(snapshot));
        });
      },
      touch: async () => {},
    },
    bus,
    clock: new ManualClock(1000),
    ttlMs: 30_000,
    flushMs: 0,
  });
  return {
    apiKey: key.apiKey,
    kid: key.kid,
    verifier,
    bus,
    lookups,
    release: () => {
      for (const l of lookups.splice(0)) l();
    },
    revoke: () => {
      stored = { key: { ...record, revokedAt: 2000 }, tenantStatus: "active" };
    },
  };
}

describe("key verification after every cache was flushed", () => {
  it("50 concurrent calls of one key make one store lookup", async () => {
    const s = setup();
    const calls = Array.from({ length: 50 }, () => s.verifier.verify(s.apiKey));
    await Promise.resolve();
    expect(s.lookups).toHaveLength(1);
    s.release();
    const out = await Promise.all(calls);
    expect(out.every((v) => v.ok)).toBe(true);
    // Cached now: no lookup at all.
    expect((await s.verifier.verify(s.apiKey)).ok).toBe(true);
    expect(s.lookups).toHaveLength(0);
  });

  it("a call after an invalidation does not join a lookup started before it", async () => {
    const s = setup();
    const before = s.verifier.verify(s.apiKey);
    await Promise.resolve();
    // The key is revoked: the store changes, then the bus invalidates.
    s.revoke();
    await s.bus.publish({ kind: "key", kid: s.kid });
    const after = s.verifier.verify(s.apiKey);
    await Promise.resolve();
    expect(s.lookups).toHaveLength(2);
    s.release();
    // The earlier call started before the revoke and sees the key as it was; the later one must
    // see the revoke.
    expect((await before).ok).toBe(true);
    expect(await after).toMatchObject({ ok: false, reason: "KEY_REVOKED" });
    // And nothing read before the revoke was cached.
    const again = s.verifier.verify(s.apiKey);
    await Promise.resolve();
    s.release();
    expect(await again).toMatchObject({ ok: false, reason: "KEY_REVOKED" });
  });
});
