// The key verifier (src/services/key-verifier.ts) over the harness's real key store, wrapped so
// that every store lookup is counted: malformed keys never reach the store, a valid key is looked
// up once and then served from the cache, and every kind of invalidation sends the next
// verification back to the store.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyService } from "../../gen/tenantd/v1/key_service_pb.js";
import { ManualClock } from "../../src/domain/clock.js";
import { generateKey, parseKey } from "../../src/domain/key-format.js";
import type { Credential } from "../../src/domain/types.js";
import { createLocalInvalidationBus, type InvalidationBus } from "../../src/services/invalidation.js";
import { KeyVerifier } from "../../src/services/key-verifier.js";
import type { KeyStore } from "../../src/store/ports.js";
import { expectError, type Harness, startHarness } from "../helpers/app.js";
import { bareTenant, KEY_PROTOCOLS, probeTenantKey, tenantKey } from "../helpers/keys.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const TTL_MS = 30_000;

/** The harness's real key store, counting the hot-path lookups. */
function countingStore(real: KeyStore) {
  const calls = { credential: 0, touch: 0 };
  const keys: Pick<KeyStore, "credential" | "touch"> = {
    credential(kid) {
      calls.credential++;
      return real.credential(kid);
    },
    touch(updates) {
      calls.touch++;
      return real.touch(updates);
    },
  };
  return { keys, calls };
}

function verifierOver(opts: { bus?: InvalidationBus; clock?: ManualClock; ttlMs?: number } = {}) {
  const store = countingStore(h.app.stores.keys);
  const clock = opts.clock ?? new ManualClock(h.clock.now());
  const bus = opts.bus ?? createLocalInvalidationBus();
  const verifier = new KeyVerifier({ keys: store.keys, bus, clock, ttlMs: opts.ttlMs ?? TTL_MS, flushMs: 0 });
  return { verifier, calls: store.calls, clock, bus };
}

const MUTATION_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-";

/** Every key at edit distance 1: each character replaced by each other one, deleted, or preceded by an insertion. */
function* mutations(key: string): Generator<string> {
  for (let i = 0; i < key.length; i++) {
    const head = key.slice(0, i);
    const tail = key.slice(i + 1);
    for (const c of MUTATION_CHARS) {
      if (c !== key[i]) yield head + c + tail;
      yield head + c + key.slice(i);
    }
    yield head + tail;
  }
  for (const c of MUTATION_CHARS) yield key + c;
}

describe("malformed keys are refused without any store lookup", () => {
  it("every 1-character mutation of 100 real keys: all KEY_INVALID, 0 credential lookups", async () => {
    const t = await bareTenant(h);
    const real: string[] = [];
    for (let i = 0; i < 100; i += 10) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => tenantKey(h, t.id, { label: "mutate me" })));
      real.push(...batch.map((b) => b.apiKey));
    }
    const { verifier, calls } = verifierOver();
    let refused = 0;
    let total = 0;
    const reasons = new Map<string, number>();
    for (const key of real) {
      for (const m of mutations(key)) {
        if (m === key) continue;
        total++;
        const v = await verifier.verify(m);
        reasons.set(v.ok ? "OK" : v.reason, (reasons.get(v.ok ? "OK" : v.reason) ?? 0) + 1);
        if (!v.ok && v.reason === "KEY_INVALID" && v.key === undefined) refused++;
      }
    }
    console.log(`key mutations: ${total} verified, ${refused} refused KEY_INVALID, ${calls.credential} store lookups`);
    expect([...reasons]).toEqual([["KEY_INVALID", total]]);
    expect(refused).toBe(total);
    expect(total).toBeGreaterThan(100 * 8000);
    expect(calls.credential).toBe(0);
    // The counter is wired to the store: the real keys themselves are looked up, once each.
    for (const key of real) expect((await verifier.verify(key)).ok).toBe(true);
    expect(calls.credential).toBe(100);
    // Once the key ids are cached the checksum is not checked for them (the hash decides): the
    // same mutations are still every one refused, still without a lookup.
    let again = 0;
    for (const key of real) {
      for (const m of mutations(key)) {
        if (m === key) continue;
        const v = await verifier.verify(m);
        if (!v.ok && v.reason === "KEY_INVALID" && v.key === undefined) again++;
      }
    }
    expect(again).toBe(total);
    expect(calls.credential).toBe(100);
  });

  it("garbage of every shape is refused without a lookup", async () => {
    const { verifier, calls } = verifierOver();
    const t = await bareTenant(h);
    const { apiKey } = await tenantKey(h, t.id);
    const samples = [
      "",
      " ",
      "Bearer",
      "tdk_",
      apiKey.toUpperCase(),
      `${apiKey} `,
      ` ${apiKey}`,
      `${apiKey}\n`,
      apiKey.replace("_test_", "_live_"),
      apiKey.replace("tdk_tenant_", "tdk_owner_"),
      apiKey.repeat(2),
      "x".repeat(10_000),
      apiKey.replace(/.$/, "é"),
    ];
    for (const s of samples) expect(await verifier.verify(s)).toEqual({ ok: false, reason: "KEY_INVALID" });
    expect(calls.credential).toBe(0);
  });
});

describe("a valid key is served from the cache", () => {
  it("verified twice: one store lookup", async () => {
    const t = await bareTenant(h);
    const { apiKey } = await tenantKey(h, t.id);
    const { verifier, calls } = verifierOver();
    expect((await verifier.verify(apiKey)).ok).toBe(true);
    expect((await verifier.verify(apiKey)).ok).toBe(true);
    expect(calls.credential).toBe(1);
    expect(verifier.cachedKeys).toBe(1);
  });

  it("a wrong secret for a cached key id is refused from the cache, without a lookup", async () => {
    const t = await bareTenant(h);
    const { apiKey } = await tenantKey(h, t.id);
    const { verifier, calls } = verifierOver();
    await verifier.verify(apiKey);
    const forged = generateKey("tenant", "test", parseKey(apiKey)?.kid).apiKey;
    expect(await verifier.verify(forged)).toEqual({ ok: false, reason: "KEY_INVALID" });
    expect(calls.credential).toBe(1);
  });

  it("the entry lives for the TTL: at TTL - 1 ms still cached, at TTL looked up again", async () => {
    const t = await bareTenant(h);
    const { apiKey } = await tenantKey(h, t.id);
    const { verifier, calls, clock } = verifierOver();
    await verifier.verify(apiKey);
    clock.advance(TTL_MS - 1);
    await verifier.verify(apiKey);
    expect(calls.credential).toBe(1);
    clock.advance(1);
    await verifier.verify(apiKey);
    expect(calls.credential).toBe(2);
  });

  it("unknown keys are not cached: each attempt is looked up", async () => {
    const { verifier, calls } = verifierOver();
    const unknown = generateKey("tenant", "test").apiKey;
    await verifier.verify(unknown);
    await verifier.verify(unknown);
    expect(calls.credential).toBe(2);
    expect(verifier.cachedKeys).toBe(0);
  });
});

describe("an invalidation sends the next verification back to the store", () => {
  it("a key event drops that key only", async () => {
    const t = await bareTenant(h);
    const a = await tenantKey(h, t.id);
    const b = await tenantKey(h, t.id);
    const { verifier, calls, bus } = verifierOver();
    await verifier.verify(a.apiKey);
    await verifier.verify(b.apiKey);
    expect(calls.credential).toBe(2);
    await bus.publish({ kind: "key", kid: parseKey(a.apiKey)?.kid ?? "" });
    await verifier.verify(a.apiKey);
    await verifier.verify(b.apiKey);
    expect(calls.credential).toBe(3);
  });

  it("a tenant event drops every key of that tenant, and only those", async () => {
    const t = await bareTenant(h);
    const other = await bareTenant(h);
    const a = await tenantKey(h, t.id);
    const b = await tenantKey(h, t.id);
    const c = await tenantKey(h, other.id);
    const { verifier, calls, bus } = verifierOver();
    for (const k of [a, b, c]) await verifier.verify(k.apiKey);
    await bus.publish({ kind: "tenant", tenantId: t.id });
    for (const k of [a, b, c]) await verifier.verify(k.apiKey);
    expect(calls.credential).toBe(5);
  });

  it("an 'all' event (a resubscription) drops everything", async () => {
    const t = await bareTenant(h);
    const a = await tenantKey(h, t.id);
    const { verifier, calls, bus } = verifierOver();
    await verifier.verify(a.apiKey);
    await verifier.verify(h.ownerKey);
    await bus.publish({ kind: "all" });
    expect(verifier.cachedKeys).toBe(0);
    await verifier.verify(a.apiKey);
    await verifier.verify(h.ownerKey);
    expect(calls.credential).toBe(4);
  });

  it("a lookup that raced an invalidation is not cached", async () => {
    const t = await bareTenant(h);
    const { apiKey } = await tenantKey(h, t.id);
    const real = h.app.stores.keys;
    let lookups = 0;
    let release: (() => void) | undefined;
    const bus = createLocalInvalidationBus();
    const verifier = new KeyVerifier({
      keys: {
        async credential(kid): Promise<Credential | null> {
          lookups++;
          const c = await real.credential(kid);
          if (lookups === 1) await new Promise<void>((r) => (release = r));
          return c;
        },
        touch: (u) => real.touch(u),
      },
      bus,
      clock: new ManualClock(h.clock.now()),
      ttlMs: TTL_MS,
      flushMs: 0,
    });
    const first = verifier.verify(apiKey);
    while (!release) await new Promise((r) => setImmediate(r));
    await bus.publish({ kind: "key", kid: parseKey(apiKey)?.kid ?? "" });
    release();
    expect((await first).ok).toBe(true);
    await verifier.verify(apiKey);
    expect(lookups).toBe(2);
  });

  describe.each(KEY_PROTOCOLS)("through the app's bus, over %s", (protocol) => {
    it("RevokeKey invalidates: the next verification looks the key up and answers KEY_REVOKED", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const { verifier, calls } = verifierOver({ bus: h.app.bus });
      await verifier.verify(apiKey);
      await verifier.verify(apiKey);
      expect(calls.credential).toBe(1);
      await h.client(KeyService, protocol).revokeKey({ tenantId: t.id, keyId: key.id }, h.as(h.ownerKey));
      const v = await verifier.verify(apiKey);
      expect(v).toMatchObject({ ok: false, reason: "KEY_REVOKED" });
      expect(calls.credential).toBe(2);
      await expectError(probeTenantKey(h, protocol, apiKey), Code.Unauthenticated, "KEY_REVOKED");
    });

    it("RotateKey invalidates: the new secret is accepted at once", async () => {
      const t = await bareTenant(h);
      const { apiKey, key } = await tenantKey(h, t.id);
      const { verifier, calls } = verifierOver({ bus: h.app.bus });
      await verifier.verify(apiKey);
      const res = await h
        .client(KeyService, protocol)
        .rotateKey({ tenantId: t.id, keyId: key.id, gracePeriod: { seconds: 0n } }, h.as(h.ownerKey));
      expect((await verifier.verify(res.apiKey)).ok).toBe(true);
      expect(await verifier.verify(apiKey)).toMatchObject({ ok: false, reason: "KEY_ROTATED" });
      expect(calls.credential).toBe(2);
    });
  });
});
